"""The chart owns the webhook configurations; the controller writes only their caBundle
(`--no-manage-webhook-config`), each time its renewing CA bundle changes. A later `helm upgrade`
(a server-side apply by the chart's manager) then never conflicts with the controller, and the
chart's own settings (failurePolicy, timeout) stay as the chart says."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import lightkube
import pytest

from kagent.kube.certs import make_ca
from kagent.local.controlplane import ControlPlane
from kagent.webhook.server import inject_ca_bundle

pytestmark = pytest.mark.integration

NAME = "ca-injection-test.kagent.dev"
CHART_MANAGER = "chart-stand-in"


def chart_configurations() -> list[dict[str, Any]]:
    """Two configurations as the chart renders them: a Service reference, no caBundle. Their
    rules match a group nothing serves, so no admission call ever reaches them."""
    documents = []
    for kind, prefix in (("ValidatingWebhookConfiguration", "validate"),
                         ("MutatingWebhookConfiguration", "mutate")):
        documents.append({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": kind,
            "metadata": {"name": NAME},
            "webhooks": [{
                "name": f"{prefix}-{plural}.{NAME}",
                "admissionReviewVersions": ["v1"], "sideEffects": "None",
                "failurePolicy": "Fail", "timeoutSeconds": 7,
                "clientConfig": {"service": {"namespace": "kagent-system", "name": "kagent-webhook",
                                             "path": f"/{prefix}-{plural}", "port": 443}},
                "rules": [{"apiGroups": ["ca-injection.invalid"], "apiVersions": ["v1"],
                           "resources": [plural], "operations": ["CREATE"]}],
            } for plural in ("agents", "tools")],
        })
    return documents


def apply_as_chart(plane: ControlPlane) -> None:
    """Server-side apply without --force-conflicts: fails if someone else owns a field we set."""
    plane.kubectl("apply", "--server-side", f"--field-manager={CHART_MANAGER}", "-f", "-",
                  input="\n---\n".join(json.dumps(d) for d in chart_configurations()))


def webhooks(plane: ControlPlane) -> list[dict[str, Any]]:
    return [hook for kind in ("validatingwebhookconfiguration", "mutatingwebhookconfiguration")
            for hook in json.loads(plane.kubectl("get", kind, NAME, "-o", "json").stdout)["webhooks"]]


async def test_only_the_ca_bundle_is_written_and_the_chart_can_apply_again(
        control_plane: ControlPlane, kube_client: lightkube.AsyncClient, tmp_path: Path) -> None:
    first = make_ca(tmp_path, name="first").cert_file.read_bytes()
    second = make_ca(tmp_path, name="second").cert_file.read_bytes()
    apply_as_chart(control_plane)
    try:
        await inject_ca_bundle(kube_client, first, name=NAME)
        hooks = webhooks(control_plane)
        assert len(hooks) == 4
        assert {base64.b64decode(h["clientConfig"]["caBundle"]) for h in hooks} == {first}
        assert {(h["failurePolicy"], h["timeoutSeconds"]) for h in hooks} == {("Fail", 7)}

        apply_as_chart(control_plane)  # helm upgrade: no conflict, the CA stays
        assert {base64.b64decode(h["clientConfig"]["caBundle"]) for h in webhooks(control_plane)} == {first}

        await inject_ca_bundle(kube_client, first + second, name=NAME)  # a renewal: both trusted
        assert {base64.b64decode(h["clientConfig"]["caBundle"])
                for h in webhooks(control_plane)} == {first + second}
    finally:
        for kind in ("validatingwebhookconfiguration", "mutatingwebhookconfiguration"):
            control_plane.kubectl("delete", kind, NAME, "--ignore-not-found")
