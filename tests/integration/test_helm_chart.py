"""The Helm chart: lint, install into a real control plane, least-privilege RBAC proven with
`kubectl auth can-i`, and the controller running with exactly the chart's ServiceAccount."""

from __future__ import annotations

import subprocess
import urllib.request
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
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics", "scheme": "HTTP"}, (
        "liveness must reflect the event loop, not /metrics (served from another thread)")
    plane.kubectl("get", "pdb", "kagent", "-n", RELEASE_NS)
    hooks = yaml.safe_load(plane.kubectl("get", "validatingwebhookconfiguration", "kagent.dev", "-o", "yaml").stdout)
    assert len(hooks["webhooks"]) == 5


ALLOWED = [
    "create subjectaccessreviews.authorization.k8s.io",
    "list agents.kagent.dev", "watch workflowruns.kagent.dev", "patch agents.kagent.dev/status",
    "create deployments.apps", "patch deployments.apps", "delete horizontalpodautoscalers.autoscaling",
    "create scaledobjects.keda.sh", "get secrets", "watch secrets", "create events",
    "delete workflowruns.kagent.dev", "create workflowruns.kagent.dev",  # ttl; schedules
    "watch horizontalpodautoscalers.autoscaling",
    "watch poddisruptionbudgets.policy", "watch scaledobjects.keda.sh", "watch services",
    "create networkpolicies.networking.k8s.io",
    # agent authentication: the workflow engine's calls, agent-as-tool Roles, agent-auth bindings
    "invoke agents.kagent.dev", "create roles.rbac.authorization.k8s.io",
    "watch rolebindings.rbac.authorization.k8s.io",
    "create clusterrolebindings.rbac.authorization.k8s.io",
]
DENIED = [
    "create secrets", "delete secrets", "update secrets", "create pods", "delete namespaces",
    # bind only the agent-auth ClusterRole by name (proven by the controller test below)
    "update agents.kagent.dev", "bind clusterroles.rbac.authorization.k8s.io",
    "escalate clusterroles.rbac.authorization.k8s.io", "create clusterroles.rbac.authorization.k8s.io",
    "impersonate users", "create deployments.apps/scale", "create pods/exec", "get nodes",
    "watch pods", "list replicasets.apps",
    "create validatingwebhookconfigurations.admissionregistration.k8s.io",
    "list mutatingwebhookconfigurations.admissionregistration.k8s.io",
    "delete validatingwebhookconfigurations.admissionregistration.k8s.io",
]


@pytest.mark.parametrize("verb_resource", ALLOWED)
def test_rbac_grants_what_the_controller_needs(installed: tuple[ControlPlane, int], verb_resource: str) -> None:
    plane, _ = installed
    assert can_i(plane, verb_resource, "-A") == "yes", verb_resource


@pytest.mark.parametrize("verb_resource", DENIED)
def test_rbac_grants_nothing_more(installed: tuple[ControlPlane, int], verb_resource: str) -> None:
    plane, _ = installed
    assert can_i(plane, verb_resource, "-n", "default") == "no", verb_resource


def test_webhook_configuration_rights_are_limited_to_kagents_own(installed: tuple[ControlPlane, int]) -> None:
    plane, _ = installed
    for kind in ("validatingwebhookconfigurations", "mutatingwebhookconfigurations"):
        for verb in ("get", "patch"):
            resource = f"{kind}.admissionregistration.k8s.io/kagent.dev"
            assert _can_i_name(plane, verb, resource) == "yes", resource
            assert _can_i_name(plane, verb, f"{kind}.admissionregistration.k8s.io/someone-elses") == "no"


def _can_i_name(plane: ControlPlane, verb: str, resource_with_name: str) -> str:
    result = plane.kubectl("auth", "can-i", verb, resource_with_name, f"--as={SA}", check=False)
    return result.stdout.strip()


Right = tuple[str, str, str]
"""(resource, resource name or "", verb)."""


def documented_rights() -> dict[str, set[Right]]:
    """The table in docs/security.md "The controller's rights", by scope (cluster, own namespace)."""
    text = (REPO / "docs" / "security.md").read_text()
    table = text.split("## The controller's rights (RBAC)", 1)[1].split("\n## ", 1)[0]
    rights: dict[str, set[Right]] = {"cluster": set(), "own namespace": set()}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 5 or not cells[0].startswith("`"):
            continue
        resources = [r.strip().strip("`") for r in cells[0].split(",")]
        names = [n.strip() for n in cells[1].split(",")] if cells[1] else [""]
        verbs = [v.strip() for v in cells[2].split(",")]
        rights[cells[3]].update((r, n, v) for r in resources for n in names for v in verbs)
    return rights


def listed_rights(plane: ControlPlane, user: str, namespace: str) -> set[Right]:
    """What ``kubectl auth can-i --list`` says ``user`` may do in ``namespace`` (resources only)."""
    out = plane.kubectl("auth", "can-i", "--list", f"--as={user}", "-n", namespace).stdout
    rights: set[Right] = set()
    for line in out.splitlines()[1:]:
        if not line[:1].strip():
            continue  # a non-resource URL row
        resource, rest = line.split(None, 1)
        lists = [part.strip().strip("[]").split() for part in rest.split("]")[:3]]
        _, names, verbs = (lists + [[], [], []])[:3]
        rights.update((resource, name, verb) for name in names or [""] for verb in verbs)
    return rights


def test_the_controller_has_no_rights_beyond_what_the_docs_list(installed: tuple[ControlPlane, int]) -> None:
    plane, _ = installed
    documented = documented_rights()
    everyone = listed_rights(plane, f"system:serviceaccount:{RELEASE_NS}:no-such-account", "default")
    for namespace, expected in (("default", documented["cluster"]),
                                (RELEASE_NS, documented["cluster"] | documented["own namespace"])):
        granted = listed_rights(plane, SA, namespace) - everyone
        assert granted - expected == set(), f"rights in {namespace} that docs/security.md does not list"
        assert expected - granted == set(), f"docs/security.md lists rights the chart does not grant in {namespace}"


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
        # the agent may check its callers: bound to the chart's agent-auth ClusterRole
        binding = plane.kubectl("get", "clusterrolebinding",
                                f"kagent-agent-auth:{namespace}:customer-support-agent", "-o",
                                "jsonpath={.roleRef.name}").stdout
        assert binding == "kagent-agent-auth"
        cyclic: dict[str, Any] = {"apiVersion": "kagent.dev/v1alpha1", "kind": "Workflow",
                                  "metadata": {"name": "c", "namespace": namespace},
                                  "spec": {"steps": [{"name": "a", "agent": "x", "dependsOn": ["a"]}]}}
        refused = plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(cyclic), check=False)
        assert refused.returncode != 0 and "spec.steps[0].dependsOn[0]" in refused.stderr
        assert "forbidden" not in controller.log_tail(400).lower()
        with urllib.request.urlopen(f"http://127.0.0.1:{controller.metrics_port}/healthz", timeout=5) as health:
            assert health.status == 200 and health.read().startswith(b"ok: the event loop ran")
