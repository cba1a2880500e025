"""The webhook's CA renews itself before it expires, with no write of a Kagent object refused:
the API server trusts old and new CA while the serving certificate switches over."""

from __future__ import annotations

import base64
import datetime
import json
import threading
import time
from pathlib import Path

import pytest
import yaml
from cryptography import x509

from kagent.api.labels import WEBHOOK_CA_SECRET as CA_SECRET
from kagent.kube.certs import make_ca
from kagent.local.controller import CONTROLLER_NAMESPACE, ControllerProcess
from kagent.local.controlplane import ControlPlane
from kagent.webhook.certificates import PREVIOUS_CERT_KEY

pytestmark = pytest.mark.integration


def _secret_data(plane: ControlPlane) -> dict[str, bytes]:
    raw = json.loads(plane.kubectl("get", "secret", CA_SECRET, "-n", CONTROLLER_NAMESPACE,
                                   "-o", "json").stdout)
    return {k: base64.b64decode(v) for k, v in raw["data"].items()}


def _ca_bundle(plane: ControlPlane) -> list[x509.Certificate]:
    raw = plane.kubectl("get", "validatingwebhookconfiguration", "kagent.dev", "-o",
                        "jsonpath={.webhooks[0].clientConfig.caBundle}").stdout
    return x509.load_pem_x509_certificates(base64.b64decode(raw))


def test_a_ca_about_to_expire_is_renewed_without_a_refused_write(plane: ControlPlane,
                                                                   tmp_path: Path) -> None:
    plane.create_namespace(CONTROLLER_NAMESPACE)
    plane.create_namespace("renewal")
    expiring = make_ca(tmp_path, name="old", valid_for=datetime.timedelta(seconds=60))
    plane.kubectl("create", "secret", "tls", CA_SECRET, "-n", CONTROLLER_NAMESPACE,
                  f"--cert={expiring.cert_file}", f"--key={expiring.key_file}")
    agent = yaml.safe_dump({
        "apiVersion": "kagent.dev/v1alpha1", "kind": "Agent",
        "metadata": {"name": "probe", "namespace": "renewal"},
        "spec": {"model": {"provider": "openai", "name": "gpt-4o-mini"}, "systemPrompt": "Hi."}})
    refused: list[str] = []
    written_at: list[float] = []
    stop = threading.Event()

    def write_continuously() -> None:
        # A server-side dry run goes through admission (both webhooks) and stores nothing.
        while not stop.is_set():
            result = plane.kubectl("apply", "--dry-run=server", "-f", "-", input=agent, check=False)
            written_at.append(time.monotonic())
            if result.returncode != 0:
                refused.append(result.stderr.strip())
            time.sleep(0.2)

    with ControllerProcess(plane, identity="renewer") as controller:
        writer = threading.Thread(target=write_continuously, daemon=True)
        writer.start()
        try:
            deadline = expiring.certificate.not_valid_after_utc + datetime.timedelta(seconds=10)
            while datetime.datetime.now(datetime.UTC) < deadline:
                time.sleep(1)
        finally:
            stop.set()
            writer.join(30)
        log = controller.log_file.read_text(errors="replace")
        bundle = _ca_bundle(plane)
    # Writes went on throughout: through the new CA's arrival, the switch and the old one's expiry.
    gaps = [b - a for a, b in zip(written_at, written_at[1:], strict=False)]
    # (No fixed count: on a busy machine one kubectl call can take seconds; the gaps say it all.)
    assert len(written_at) > 5 and max(gaps) < 10, (len(written_at), max(gaps))
    assert refused == [], f"{len(refused)} of {len(written_at)} writes refused: {refused[:3]}\n{log}"
    data = _secret_data(plane)
    renewed = x509.load_pem_x509_certificate(data["tls.crt"])
    assert renewed != expiring.certificate
    assert renewed.not_valid_after_utc - datetime.datetime.now(datetime.UTC) > datetime.timedelta(days=300)
    assert x509.load_pem_x509_certificate(data[PREVIOUS_CERT_KEY]) == expiring.certificate
    # The expired CA has left the bundle; the new one is what the API server trusts.
    assert bundle == [renewed]
    assert "renewed the webhook CA" in log
