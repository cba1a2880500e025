"""The controller reconciles from its watch-fed cache: a deleted child comes back at once (its
watch queues the owning Agent), and no reconcile reads from the API server what the cache holds —
counted in the API server's own audit log."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kagent.kube import watch_http_client
from kagent.kube.informer import Informer, WatchSpec
from kagent.local.controller import ControllerProcess
from kagent.local.controlplane import ControlPlane, install_crds
from tests.helpers import create_seed_secrets, seed_documents, wait_for
from tests.integration.test_controller_agents import apply, get, ready

pytestmark = pytest.mark.integration

CONTROLLER_SA = "kagent-audited"
SA_NAMESPACE = "kagent-system"
SA_USER = f"system:serviceaccount:{SA_NAMESPACE}:{CONTROLLER_SA}"

# Kinds the cache holds: (API group, resource).
CACHED = [("kagent.dev", "agents"), ("kagent.dev", "tools"), ("kagent.dev", "memories"),
          ("", "secrets"), ("", "serviceaccounts"), ("", "configmaps"), ("", "services"),
          ("apps", "deployments"), ("autoscaling", "horizontalpodautoscalers"),
          ("policy", "poddisruptionbudgets")]
CHILDREN = ["serviceaccounts", "configmaps", "services", "deployments", "horizontalpodautoscalers",
            "poddisruptionbudgets"]


def hpa_agent() -> list[dict[str, Any]]:
    """The seed Agent and its Tools, scaled by an HPA (no KEDA) with 2 to 4 replicas (so a PDB)."""
    docs = copy.deepcopy(seed_documents()[:3])
    docs[0]["spec"]["scaling"] = {"minReplicas": 2, "maxReplicas": 4,
                                  "metrics": [{"type": "cpu", "target": {"averageUtilization": 70}}]}
    return docs


def uid(cp: Any, kind: str, name: str, namespace: str) -> str | None:
    obj = get(cp, kind, name, namespace)
    return obj["metadata"]["uid"] if obj else None


@pytest.mark.parametrize("kind", ["service", "configmap", "hpa", "serviceaccount", "poddisruptionbudget"])
def test_a_deleted_child_comes_back_within_5_seconds(kagent_controller: Any, namespace: str, kind: str) -> None:
    cp = kagent_controller.plane
    create_seed_secrets(cp, namespace)
    docs = hpa_agent()
    apply(cp, docs, namespace)
    name = docs[0]["metadata"]["name"]
    wait_for(lambda: ready(cp, name, namespace), what="the agent to be Ready")
    before = uid(cp, kind, name, namespace)
    assert before is not None
    cp.kubectl("delete", kind, name, "-n", namespace, "--wait=true")
    # The periodic resync is 300 s: only the child's own watch brings it back this fast.
    wait_for(lambda: uid(cp, kind, name, namespace) not in (None, before), timeout=5.0,
             what=f"the {kind} to be recreated")
    agent = get(cp, "agent", name, namespace)
    assert get(cp, kind, name, namespace)["metadata"]["ownerReferences"][0]["uid"] == agent["metadata"]["uid"]


# --- no GET for what the cache holds, from the API server's audit log ---------------------------

AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {"level": "Metadata", "users": [SA_USER], "verbs": ["get", "list", "watch", "patch", "create", "update"],
         "resources": [{"group": g, "resources": [r, f"{r}/status"]} for g, r in CACHED]},
        {"level": "None"},
    ],
}


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ControlPlane, ControllerProcess, Path]]:
    """A control plane of its own that writes an audit log of the controller's requests, and
    a controller running as a ServiceAccount so its requests are told apart."""
    workdir = tmp_path_factory.mktemp("audit")
    policy, log = workdir / "policy.yaml", workdir / "audit.log"
    policy.write_text(yaml.safe_dump(AUDIT_POLICY))
    with ControlPlane(extra_apiserver_args=[f"--audit-policy-file={policy}", f"--audit-log-path={log}",
                                            "--audit-log-maxbackup=1"]) as plane:
        install_crds(plane)
        plane.create_namespace(SA_NAMESPACE)
        plane.kubectl("create", "serviceaccount", CONTROLLER_SA, "-n", SA_NAMESPACE)
        plane.kubectl("create", "clusterrolebinding", CONTROLLER_SA, "--clusterrole=cluster-admin",
                      f"--serviceaccount={SA_NAMESPACE}:{CONTROLLER_SA}")
        kubeconfig = _sa_kubeconfig(plane, workdir)
        controller = ControllerProcess(plane, identity="audited", webhook=False)
        command = controller.command()
        command[command.index("--kubeconfig") + 1] = str(kubeconfig)
        controller.command = lambda: command  # type: ignore[method-assign]
        with controller:
            yield plane, controller, log


def _sa_kubeconfig(plane: ControlPlane, directory: Path) -> Path:
    token = plane.kubectl("create", "token", CONTROLLER_SA, "-n", SA_NAMESPACE, "--duration=2h").stdout.strip()
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "c", "cluster": {"server": plane.server, "certificate-authority": str(plane.ca_file)}}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "c", "user": "sa", "namespace": SA_NAMESPACE}}],
    }
    path = directory / "controller.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


def controller_requests(log: Path) -> list[dict[str, Any]]:
    """The controller's requests, once each (a watch is logged when its response starts)."""
    entries = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    wanted = {"watch": "ResponseStarted"}
    return [e for e in entries if e.get("user", {}).get("username") == SA_USER
            and e.get("stage") == wanted.get(e.get("verb"), "ResponseComplete")]


def reconciles(controller: ControllerProcess, kind: str = "Agent") -> float:
    for line in controller.metrics().splitlines():
        if line.startswith(f'kagent_controller_reconcile_total{{kind="{kind}",result="success"}}'):
            return float(line.split()[-1])
    return 0.0


def test_no_reconcile_gets_what_the_cache_holds(audited: tuple[ControlPlane, ControllerProcess, Path]) -> None:
    cp, controller, log = audited
    namespace = cp.create_namespace("audited")
    create_seed_secrets(cp, namespace)
    docs = hpa_agent()
    memory = {"apiVersion": "kagent.dev/v1alpha1", "kind": "Memory",
              "metadata": {"name": "sessions", "namespace": namespace},
              "spec": {"type": "redis", "config": {"host": "redis.example", "secretRef":
                                                   {"name": "knowledge-db", "key": "password"}}}}
    docs[0]["spec"].pop("memory")
    docs[0]["spec"]["memoryRef"] = {"name": "sessions"}
    apply(cp, [*docs, memory], namespace)
    name = docs[0]["metadata"]["name"]
    wait_for(lambda: ready(cp, name, namespace), what="the agent to be Ready")
    # Changes of every kind the Agent depends on, and a deleted child: many more reconciles.
    docs[2]["spec"]["description"] = "Open a ticket in the helpdesk"
    apply(cp, [docs[2]], namespace)
    create_seed_secrets(cp, namespace, value="rotated")
    cp.kubectl("delete", "service", name, "-n", namespace)
    wait_for(lambda: get(cp, "service", name, namespace), what="the Service back")
    wait_for(lambda: ready(cp, name, namespace), what="the agent Ready again")
    assert reconciles(controller) >= 5, "the Agent was reconciled several times"

    requests = controller_requests(log)
    watched = {(e["objectRef"].get("apiGroup", ""), e["objectRef"]["resource"]) for e in requests
               if e["verb"] == "watch"}
    assert set(CACHED) <= watched, f"the audit log sees the controller's watches: {sorted(watched)}"
    gets = [f'{e["objectRef"]["resource"]} {e["objectRef"].get("namespace")}/{e["objectRef"].get("name")}'
            for e in requests if e["verb"] == "get"]
    assert gets == [], f"GETs for objects the cache holds: {gets}"

    # A reconcile that finds everything as wanted writes nothing (annotating a Tool queues the
    # Agents that use it, but changes nothing they render).
    writes_before = len([e for e in controller_requests(log) if e["verb"] in ("patch", "create", "update")])
    for i in range(3):
        before = reconciles(controller)
        cp.kubectl("annotate", "tool", "create-ticket", "-n", namespace, f"touched={i}", "--overwrite")
        wait_for(lambda before=before: reconciles(controller) > before, what="the Agent to be reconciled")
    writes = [e for e in controller_requests(log) if e["verb"] in ("patch", "create", "update")]
    assert len(writes) == writes_before, [
        f'{e["verb"]} {e["objectRef"]["resource"]}/{e["objectRef"].get("name")}' for e in writes[writes_before:]
    ]


# --- the informer itself ------------------------------------------------------------------------


async def test_the_informer_lists_watches_and_notices_what_vanished_while_it_was_away(
    control_plane: ControlPlane, namespace: str
) -> None:
    label = "informer-test"
    spec = WatchSpec("ConfigMap", "v1", "configmaps", label_selector=f"{label}={namespace}",
                     transform=lambda o: {"metadata": {k: o["metadata"][k] for k in
                                                       ("name", "namespace", "resourceVersion")},
                                          "data": o.get("data") or {}})
    seen: list[tuple[str, str]] = []
    http = watch_http_client(control_plane.kubeconfig)
    informer = Informer(http, spec, lambda t, old, new: seen.append((t, (new or old or {})["metadata"]["name"])))

    def configmap(name: str, value: str) -> None:
        manifest = control_plane.kubectl("create", "configmap", name, "-n", namespace, f"--from-literal=k={value}",
                                         "--dry-run=client", "-o", "yaml").stdout
        control_plane.kubectl("apply", "-f", "-", input=manifest)
        control_plane.kubectl("label", "configmap", name, "-n", namespace, f"{label}={namespace}", "--overwrite")

    async def until(check: Any, what: str) -> None:
        for _ in range(200):
            if check():
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}; events: {seen}")

    configmap("a", "1")
    configmap("b", "1")
    control_plane.kubectl("create", "configmap", "unlabelled", "-n", namespace)
    task = asyncio.create_task(informer.run())
    try:
        await asyncio.wait_for(informer.synced.wait(), 30)
        assert sorted(o["metadata"]["name"] for o in informer.store.list(namespace)) == ["a", "b"]
        assert sorted(seen) == [("ADDED", "a"), ("ADDED", "b")]
        configmap("a", "2")
        await until(lambda: (informer.store.get(namespace, "a") or {}).get("data") == {"k": "2"}, "a modified")
        control_plane.kubectl("delete", "configmap", "b", "-n", namespace)
        await until(lambda: informer.store.get(namespace, "b") is None, "b deleted")
        assert ("DELETED", "b") in seen and ("MODIFIED", "a") in seen
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    # While nobody watches: a is deleted, c created. The next list reports both.
    control_plane.kubectl("delete", "configmap", "a", "-n", namespace)
    configmap("c", "1")
    seen.clear()
    task = asyncio.create_task(informer.run())
    try:
        await until(lambda: informer.store.get(namespace, "c") is not None, "c listed")
        assert informer.store.get(namespace, "a") is None
        assert sorted(seen) == [("ADDED", "c"), ("DELETED", "a")]
        assert informer.store.deletions == 2 and informer.lists == 2
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await http.aclose()
