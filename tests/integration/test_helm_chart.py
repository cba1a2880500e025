"""The Helm chart: lint, install into a real control plane, least-privilege RBAC proven with
`kubectl auth can-i`, and the controller running with exactly the chart's ServiceAccount."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kagent.local.binaries import helm, keda_crd_files
from kagent.local.controller import ControllerProcess, free_port
from kagent.local.controlplane import ControlPlane
from tests.helpers import REPO, seed_documents
from tests.integration.test_controller_agents import create_secrets, ready, wait_for

pytestmark = pytest.mark.integration

CHART = REPO / "charts" / "kagent"
RELEASE_NS = "kagent-system"
SA = f"system:serviceaccount:{RELEASE_NS}:kagent"


def can_i(plane: ControlPlane, verb_resource: str, *scope: str) -> str:
    verb, resource = verb_resource.split()
    resource, _, sub = resource.partition("/")
    extra = [f"--subresource={sub}"] if sub else []
    result = plane.kubectl("auth", "can-i", verb, resource, *extra, *scope, f"--as={SA}", check=False)
    return result.stdout.strip()


def run_helm(plane: ControlPlane, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm()), "--kubeconfig", str(plane.kubeconfig), *args],
                          capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def installed() -> Iterator[tuple[ControlPlane, int]]:
    """A control plane of its own (the chart owns the cluster-wide webhook configurations)."""
    with ControlPlane() as plane:
        for crd in keda_crd_files():  # a cluster with KEDA, so can-i knows its resources
            plane.kubectl("apply", "--server-side", "-f", str(crd))
        port = free_port()
        result = run_helm(plane, "install", "kagent", str(CHART), "-n", RELEASE_NS, "--create-namespace",
                          "--set", f"webhook.url=https://127.0.0.1:{port}", "--wait", "--timeout", "120s")
        assert result.returncode == 0, result.stderr
        yield plane, port


def test_helm_lint() -> None:
    for extra in ([], ["--set", "webhook.certManager.enabled=true", "--set", "metrics.serviceMonitor.enabled=true",
                       "--set", "metrics.prometheusRule.enabled=true"]):
        result = subprocess.run([str(helm()), "lint", "--strict", str(CHART), *extra],
                                capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stdout + result.stderr


def test_values_schema_refuses_bad_values() -> None:
    result = subprocess.run([str(helm()), "template", "x", str(CHART), "--set", "controller.replicas=0"],
                            capture_output=True, text=True, check=False)
    assert result.returncode != 0 and "replicas" in result.stderr


def test_install_creates_the_controller(installed: tuple[ControlPlane, int]) -> None:
    plane, _ = installed
    for crd in ("agents", "tools", "memories", "workflows", "workflowruns"):
        plane.kubectl("get", "crd", f"{crd}.kagent.dev")
    deployment = yaml.safe_load(plane.kubectl("get", "deployment", "kagent", "-n", RELEASE_NS, "-o", "yaml").stdout)
    assert deployment["spec"]["replicas"] == 2
    assert deployment["status"]["readyReplicas"] == 2
    plane.kubectl("get", "pdb", "kagent", "-n", RELEASE_NS)
    hooks = yaml.safe_load(plane.kubectl("get", "validatingwebhookconfiguration", "kagent.dev", "-o", "yaml").stdout)
    assert len(hooks["webhooks"]) == 5


ALLOWED = [
    "create subjectaccessreviews.authorization.k8s.io",
    "list agents.kagent.dev", "watch workflowruns.kagent.dev", "patch agents.kagent.dev/status",
    "create deployments.apps", "patch deployments.apps", "delete horizontalpodautoscalers.autoscaling",
    "create scaledobjects.keda.sh", "get secrets", "watch secrets", "create events",
    "patch validatingwebhookconfigurations.admissionregistration.k8s.io",
    "delete workflowruns.kagent.dev", "watch horizontalpodautoscalers.autoscaling",
    "watch poddisruptionbudgets.policy", "watch scaledobjects.keda.sh", "watch services",
]
DENIED = [
    "create secrets", "delete secrets", "update secrets", "create pods", "delete namespaces",
    "update agents.kagent.dev", "create clusterrolebindings.rbac.authorization.k8s.io",
    "impersonate users", "create deployments.apps/scale", "create pods/exec", "get nodes",
    "get deployments.apps", "get services", "watch pods", "list replicasets.apps",
]


@pytest.mark.parametrize("verb_resource", ALLOWED)
def test_rbac_grants_what_the_controller_needs(installed: tuple[ControlPlane, int], verb_resource: str) -> None:
    plane, _ = installed
    assert can_i(plane, verb_resource, "-A") == "yes", verb_resource


@pytest.mark.parametrize("verb_resource", DENIED)
def test_rbac_grants_nothing_more(installed: tuple[ControlPlane, int], verb_resource: str) -> None:
    plane, _ = installed
    assert can_i(plane, verb_resource, "-n", "default") == "no", verb_resource


def test_rbac_namespaced_rights_stay_in_the_release_namespace(installed: tuple[ControlPlane, int]) -> None:
    plane, _ = installed
    for ns, expected in ((RELEASE_NS, "yes"), ("default", "no")):
        assert can_i(plane, "update leases.coordination.k8s.io", "-n", ns) == expected


def _sa_kubeconfig(plane: ControlPlane, directory: Path) -> Path:
    token = plane.kubectl("create", "token", "kagent", "-n", RELEASE_NS, "--duration=1h").stdout.strip()
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "c", "cluster": {"server": plane.server, "certificate-authority": str(plane.ca_file)}}],
        "users": [{"name": "kagent", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "c", "user": "kagent", "namespace": RELEASE_NS}}],
    }
    path = directory / "kagent-sa.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


def test_controller_works_with_only_the_charts_rbac(installed: tuple[ControlPlane, int], tmp_path: Path) -> None:
    """The controller runs as the chart's ServiceAccount: the chart's RBAC is sufficient."""
    plane, port = installed
    kubeconfig = _sa_kubeconfig(plane, tmp_path)
    controller = ControllerProcess(plane, identity="chart-sa")
    controller.webhook_port = port
    command = controller.command()
    command[command.index("--kubeconfig") + 1] = str(kubeconfig)
    controller.command = lambda: command  # type: ignore[method-assign]
    with controller:
        namespace = plane.create_namespace("rbac-proof")
        create_secrets(plane, namespace)
        docs = seed_documents()[:4]
        for doc in docs:
            doc["metadata"]["namespace"] = namespace
        result = plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
        assert "created" in result.stdout
        wait_for(lambda: ready(plane, "customer-support-agent", namespace), what="Ready under the chart's RBAC")
        cyclic: dict[str, Any] = {"apiVersion": "kagent.dev/v1alpha1", "kind": "Workflow",
                                  "metadata": {"name": "c", "namespace": namespace},
                                  "spec": {"steps": [{"name": "a", "agent": "x", "dependsOn": ["a"]}]}}
        refused = plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(cyclic), check=False)
        assert refused.returncode != 0 and "spec.steps[0].dependsOn[0]" in refused.stderr
        assert "forbidden" not in controller.log_tail(400).lower()
