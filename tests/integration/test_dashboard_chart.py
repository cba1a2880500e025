"""The Helm chart's dashboard: off by default; when on, it signs viewers in with their own
tokens and has no Kubernetes rights of its own (no token mounted, bound to nothing)."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
import yaml

from kagent.local.binaries import helm
from tests.helpers import REPO

pytestmark = pytest.mark.integration

CHART = REPO / "charts" / "kagent"


def template(*values: str) -> subprocess.CompletedProcess[str]:
    args: list[str] = []
    for value in values:
        args += ["--set", value]
    return subprocess.run([str(helm()), "template", "kagent", str(CHART), "-n", "kagent-system",
                           *args], capture_output=True, text=True, check=False, timeout=120)


def objects(*values: str) -> list[dict[str, Any]]:
    result = template(*values)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def test_the_dashboard_is_off_unless_asked_for() -> None:
    names = [(d["kind"], d["metadata"]["name"]) for d in objects()]
    assert not [n for n in names if "dashboard" in n[1]]


def test_the_dashboard_acts_only_with_each_viewers_token() -> None:
    rendered = objects("dashboard.enabled=true", "dashboard.allowedHosts[0]=kagent.example.com")
    mine = {(d["kind"], d["metadata"]["name"]): d for d in rendered
            if "dashboard" in d["metadata"]["name"]}
    assert set(mine) == {("ServiceAccount", "kagent-dashboard"),
                         ("Deployment", "kagent-dashboard"), ("Service", "kagent-dashboard")}
    assert mine[("ServiceAccount", "kagent-dashboard")]["automountServiceAccountToken"] is False
    pod = mine[("Deployment", "kagent-dashboard")]["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == "kagent-dashboard"
    (container,) = pod["containers"]
    assert container["args"][:2] == ["dashboard", "--auth-mode=token"]
    assert "--secure-cookies" in container["args"]
    assert "--allowed-host=kagent.example.com" in container["args"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    ca = {"name": "KAGENT_KUBE_CA_FILE", "value": "/etc/kagent/kube-ca/ca.crt"}
    assert ca in container["env"]
    assert {v["name"] for v in pod["volumes"]} == {"tmp", "kube-ca"}
    # Bound to nothing: no Role or ClusterRole binding names the dashboard's ServiceAccount.
    for doc in rendered:
        if doc["kind"] in ("RoleBinding", "ClusterRoleBinding"):
            assert all(s.get("name") != "kagent-dashboard" for s in doc.get("subjects") or []), doc


def test_the_dashboard_ingress_and_values_are_checked() -> None:
    rendered = objects("dashboard.enabled=true", "dashboard.ingress.enabled=true",
                       "dashboard.ingress.host=kagent.example.com",
                       "dashboard.ingress.className=nginx")
    (ingress,) = [d for d in rendered if d["kind"] == "Ingress"]
    assert ingress["spec"]["rules"][0]["host"] == "kagent.example.com"
    assert ingress["spec"]["ingressClassName"] == "nginx"
    missing = template("dashboard.enabled=true", "dashboard.ingress.enabled=true")
    assert missing.returncode != 0 and "dashboard.ingress.host is required" in missing.stderr
    bad = template("dashboard.enabled=true", "dashboard.replicas=0")
    assert bad.returncode != 0 and "replicas" in bad.stderr
    lint = subprocess.run([str(helm()), "lint", "--strict", str(CHART), "--set",
                           "dashboard.enabled=true", "--set", "dashboard.ingress.enabled=true",
                           "--set", "dashboard.ingress.host=kagent.example.com"],
                          capture_output=True, text=True, check=False, timeout=120)
    assert lint.returncode == 0, lint.stdout + lint.stderr
