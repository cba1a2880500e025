"""The test control plane is real: each test fails if a component is missing or misconfigured."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import lightkube
import pytest
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.models.rbac_v1 import PolicyRule, RoleRef, Subject
from lightkube.resources.core_v1 import ConfigMap, Namespace, Node, ServiceAccount
from lightkube.resources.rbac_authorization_v1 import Role, RoleBinding

from kagent.local.binaries import KUBERNETES_VERSION
from kagent.local.controlplane import NODE_NAME, POD_CIDR, ControlPlane, ControlPlaneError

pytestmark = pytest.mark.integration

COMPONENTS = {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"}

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
        - name: web
          image: kagent-test/web:1
"""


def wait_until(predicate: Callable[[], Any], *, timeout: float = 60.0, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)


def get_items(plane: ControlPlane, kind: str, namespace: str, *selector: str) -> list[dict]:
    out = plane.kubectl("get", kind, "-n", namespace, *selector, "-o", "json").stdout
    return json.loads(out)["items"]


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that mention ``text`` (e.g. a control plane's workdir)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline and alive(int(entry.name)):
            found.append(cmdline)
    return found


def admin_tls(plane: ControlPlane) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(plane.ca_file))
    context.load_cert_chain(str(plane.client_cert_file), str(plane.client_key_file))
    return context


# --- the shared control plane ----------------------------------------------------------------


def test_version_is_the_kubernetes_we_built(control_plane: ControlPlane) -> None:
    response = httpx.get(
        f"{control_plane.server}/version", verify=admin_tls(control_plane), trust_env=False
    )
    assert response.status_code == 200
    assert response.json()["gitVersion"] == f"v{KUBERNETES_VERSION}"
    kubectl_view = json.loads(control_plane.kubectl("version", "-o", "json").stdout)
    assert kubectl_view["serverVersion"]["gitVersion"] == f"v{KUBERNETES_VERSION}"


def test_anonymous_and_unknown_clients_are_rejected(control_plane: ControlPlane) -> None:
    ca_only = ssl.create_default_context(cafile=str(control_plane.ca_file))
    response = httpx.get(
        f"{control_plane.server}/api/v1/namespaces", verify=ca_only, trust_env=False
    )
    assert response.status_code in (401, 403)


def test_the_fake_node_is_ready_and_schedulable(
    control_plane: ControlPlane, kube_sync_client: lightkube.Client
) -> None:
    node = kube_sync_client.get(Node, NODE_NAME)
    assert node.metadata.labels["type"] == "kwok"
    assert node.metadata.annotations["kwok.x-k8s.io/node"] == "fake"
    assert node.status.allocatable["cpu"] == "32"
    assert node.status.allocatable["memory"] == "256Gi"
    assert node.status.allocatable["pods"] == "110"
    assert not node.spec.taints
    ready = {c.type: c.status for c in node.status.conditions}["Ready"]
    assert ready == "True"


def test_namespace_fixture_gives_a_fresh_namespace_with_controller_made_objects(
    namespace: str, kube_sync_client: lightkube.Client
) -> None:
    assert kube_sync_client.get(Namespace, namespace).status.phase == "Active"
    # Both come from kube-controller-manager: the serviceaccount controller and the
    # root-ca-cert-publisher (which needs --root-ca-file).
    wait_until(
        lambda: _exists(kube_sync_client, ServiceAccount, "default", namespace),
        what="the default ServiceAccount",
    )
    wait_until(
        lambda: _exists(kube_sync_client, ConfigMap, "kube-root-ca.crt", namespace),
        what="the kube-root-ca.crt ConfigMap",
    )


def _exists(client: lightkube.Client, resource: Any, name: str, namespace: str) -> bool:
    try:
        client.get(resource, name, namespace=namespace)
    except lightkube.ApiError as error:
        if error.status.code == 404:
            return False
        raise
    return True


def test_deployment_rolls_out_to_ready_pods_on_the_kwok_node(
    control_plane: ControlPlane, namespace: str
) -> None:
    control_plane.apply_yaml(DEPLOYMENT, namespace=namespace)
    control_plane.kubectl(
        "rollout", "status", "deployment/web", "-n", namespace, "--timeout=60s"
    )
    pods = get_items(control_plane, "pods", namespace, "-l", "app=web")
    assert len(pods) == 2
    pod_network = POD_CIDR.rsplit(".", 2)[0] + "."
    for pod in pods:
        assert pod["spec"]["nodeName"] == NODE_NAME
        assert pod["status"]["phase"] == "Running"
        conditions = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
        assert conditions["Ready"] == "True"
        assert pod["status"]["podIP"].startswith(pod_network)
    deployment = json.loads(
        control_plane.kubectl("get", "deployment", "web", "-n", namespace, "-o", "json").stdout
    )
    assert deployment["status"]["readyReplicas"] == 2


def test_deleting_a_deployment_garbage_collects_its_replicaset_and_pods(
    control_plane: ControlPlane, namespace: str
) -> None:
    control_plane.apply_yaml(DEPLOYMENT, namespace=namespace)
    control_plane.kubectl(
        "rollout", "status", "deployment/web", "-n", namespace, "--timeout=60s"
    )
    assert len(get_items(control_plane, "replicasets", namespace, "-l", "app=web")) == 1
    assert len(get_items(control_plane, "pods", namespace, "-l", "app=web")) == 2

    # Background cascading deletion: only the garbage collector removes the dependents.
    control_plane.kubectl(
        "delete", "deployment", "web", "-n", namespace, "--cascade=background", "--wait=false"
    )
    wait_until(
        lambda: not get_items(control_plane, "replicasets", namespace, "-l", "app=web"),
        what="the ReplicaSet to be garbage-collected",
    )
    wait_until(
        lambda: not get_items(control_plane, "pods", namespace, "-l", "app=web"),
        what="the pods to be garbage-collected",
    )


async def test_rbac_is_enforced_for_service_accounts(
    control_plane: ControlPlane, namespace: str, kube_client: lightkube.AsyncClient
) -> None:
    await kube_client.create(
        ServiceAccount(metadata=ObjectMeta(name="reader", namespace=namespace))
    )
    user = f"system:serviceaccount:{namespace}:reader"

    def can_list_pods() -> str:
        result = control_plane.kubectl(
            "auth", "can-i", "list", "pods", "-n", namespace, f"--as={user}", check=False
        )
        return result.stdout.strip()

    assert can_list_pods() == "no"

    # A real token, signed with the service-account key and checked by the API server.
    token = control_plane.kubectl("create", "token", "reader", "-n", namespace).stdout.strip()
    ca_only = ssl.create_default_context(cafile=str(control_plane.ca_file))
    pods_url = f"{control_plane.server}/api/v1/namespaces/{namespace}/pods"
    with httpx.Client(
        verify=ca_only, trust_env=False, headers={"Authorization": f"Bearer {token}"}
    ) as http:
        denied = http.get(pods_url)
        assert denied.status_code == 403
        assert user in denied.json()["message"]

        await kube_client.create(
            Role(
                metadata=ObjectMeta(name="pod-reader", namespace=namespace),
                rules=[PolicyRule(apiGroups=[""], resources=["pods"], verbs=["get", "list"])],
            )
        )
        await kube_client.create(
            RoleBinding(
                metadata=ObjectMeta(name="reader-reads-pods", namespace=namespace),
                roleRef=RoleRef(
                    apiGroup="rbac.authorization.k8s.io", kind="Role", name="pod-reader"
                ),
                subjects=[Subject(kind="ServiceAccount", name="reader", namespace=namespace)],
            )
        )
        wait_until(lambda: can_list_pods() == "yes", timeout=30, what="the RoleBinding to apply")
        allowed = http.get(pods_url)
        assert allowed.status_code == 200
        assert allowed.json()["kind"] == "PodList"


# --- lifecycles of control planes of their own -----------------------------------------------


def test_stop_leaves_no_process_behind_and_removes_the_temporary_workdir() -> None:
    with ControlPlane() as plane:
        pids = plane.pids
        workdir = plane.workdir
        assert set(pids) == COMPONENTS
        assert all(alive(pid) for pid in pids.values())
        # Each component leads its own process group, so a terminal's Ctrl-C does not reach it
        # directly and stop() can signal the whole group.
        assert all(os.getpgid(pid) == pid for pid in pids.values())
        assert plane.startup_seconds is not None
    assert not [name for name, pid in pids.items() if alive(pid)]
    assert not processes_mentioning(str(workdir))
    assert not workdir.exists()


def test_a_failed_start_reports_the_log_and_cleans_up_what_it_started() -> None:
    plane = ControlPlane(extra_apiserver_args=["--no-such-flag=1"])
    with pytest.raises(ControlPlaneError) as failure:
        plane.start()
    message = str(failure.value)
    assert "kube-apiserver" in message
    assert "no-such-flag" in message  # the tail of kube-apiserver's own log
    assert plane.pids == {}
    assert not processes_mentioning(str(plane.workdir))  # etcd was started, and stopped again
    assert not plane.workdir.exists()


def test_detached_control_plane_outlives_its_parent_and_stops_from_its_state_file(
    tmp_path: Path,
) -> None:
    workdir = tmp_path / "dev"
    start_detached = (
        "import sys; from kagent.local.controlplane import ControlPlane; "
        "ControlPlane(workdir=sys.argv[1], detached=True).start()"
    )
    try:
        subprocess.run(
            [sys.executable, "-c", start_detached, str(workdir)], check=True, timeout=180
        )
        plane = ControlPlane.attach(workdir)
        pids = plane.pids
        assert set(pids) == COMPONENTS
        assert plane.is_running(), "the components died with the process that started them"
        plane.kubectl("create", "configmap", "kept", "-n", "default", "--from-literal=a=b")

        assert ControlPlane.stop_detached(workdir)
        assert not [name for name, pid in pids.items() if alive(pid)]
        assert not processes_mentioning(str(workdir))
        assert not (workdir / "state.json").exists()
        assert not ControlPlane.stop_detached(workdir)

        # The workdir is persistent: a second start reuses its certificates and etcd data.
        with ControlPlane(workdir=workdir) as again:
            kept = again.kubectl("get", "configmap", "kept", "-n", "default", "-o", "json")
            assert json.loads(kept.stdout)["data"] == {"a": "b"}
        assert not processes_mentioning(str(workdir))
    finally:
        ControlPlane.stop_detached(workdir)
