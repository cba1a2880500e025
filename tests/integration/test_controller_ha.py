"""High availability and crash safety: only the leader reconciles, a killed leader is replaced,
every replica serves the webhook, and a controller killed mid-reconcile converges on restart."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import yaml

from kagent.controller.render import CONFIG_HASH_ANNOTATION
from kagent.local.controller import ControllerProcess, remove_webhook_configurations
from kagent.local.controlplane import ControlPlane
from tests.integration.test_controller_agents import wait_for

pytestmark = pytest.mark.integration


def agent_docs(namespace: str, names: list[str], prompt: str = "Be helpful.") -> str:
    docs = [
        {"apiVersion": "kagent.dev/v1alpha1", "kind": "Agent",
         "metadata": {"name": n, "namespace": namespace},
         "spec": {"model": {"provider": "openai", "name": "gpt-4o-mini"}, "systemPrompt": prompt}}
        for n in names
    ]
    return yaml.safe_dump_all(docs)


def agents(plane: ControlPlane, namespace: str) -> list[dict[str, Any]]:
    return json.loads(plane.kubectl("get", "agents", "-n", namespace, "-o", "json").stdout)["items"]


def all_ready(plane: ControlPlane, namespace: str, count: int) -> bool:
    items = agents(plane, namespace)
    def is_ready(a: dict[str, Any]) -> bool:
        conds = {c["type"]: c["status"] for c in (a.get("status") or {}).get("conditions") or []}
        return conds.get("Ready") == "True" and a["status"]["observedGeneration"] == a["metadata"]["generation"]
    return len(items) == count and all(is_ready(a) for a in items)


def assert_converged(plane: ControlPlane, namespace: str, names: list[str]) -> None:
    """Exactly the wanted children, each running the configuration its status reports."""
    deployments = json.loads(plane.kubectl("get", "deployments", "-n", namespace, "-o", "json").stdout)["items"]
    by_name = {d["metadata"]["name"]: d for d in deployments}
    assert sorted(by_name) == sorted(names)
    for agent in agents(plane, namespace):
        deployment = by_name[agent["metadata"]["name"]]
        assert deployment["spec"]["template"]["metadata"]["annotations"][CONFIG_HASH_ANNOTATION] == (
            agent["status"]["configHash"]
        )
        assert deployment["metadata"]["ownerReferences"][0]["uid"] == agent["metadata"]["uid"]
    for kind in ("services", "configmaps", "serviceaccounts"):
        found = plane.kubectl("get", kind, "-n", namespace, "-l", "app.kubernetes.io/managed-by=kagent",
                              "-o", "name").stdout.split()
        assert len(found) == len(names), kind


def test_killed_leader_is_replaced_and_nothing_is_lost(plane: ControlPlane) -> None:
    namespace = plane.create_namespace("ha")
    first = ControllerProcess(plane, identity="replica-a", webhook=False, lease_seconds=3).start()
    second = ControllerProcess(plane, identity="replica-b", webhook=False, lease_seconds=3).start()
    try:
        leader, follower = wait_for(
            lambda: (first, second) if first.is_leader() else (second, first) if second.is_leader() else None,
            what="a leader",
        )
        batch1 = [f"agent-{i}" for i in range(8)]
        plane.kubectl("apply", "-f", "-", input=agent_docs(namespace, batch1))
        wait_for(lambda: all_ready(plane, namespace, 8), what="the first batch")
        assert 'kagent_controller_reconcile_total{kind="Agent"' not in follower.metrics(), (
            "a follower must not reconcile"
        )
        batch2 = [f"agent-{i}" for i in range(8, 16)]
        plane.kubectl("apply", "-f", "-", input=agent_docs(namespace, batch2))
        leader.kill()  # in the middle of reconciling the second batch
        wait_for(follower.is_leader, timeout=30, what="the follower to take over")
        wait_for(lambda: all_ready(plane, namespace, 16), timeout=90, what="every agent after failover")
        assert_converged(plane, namespace, batch1 + batch2)
        assert 'kagent_controller_leader 1.0' in follower.metrics()
    finally:
        first.stop()
        second.stop()


def test_every_replica_serves_the_webhook(plane: ControlPlane) -> None:
    namespace = plane.create_namespace("webhook-ha")
    leader = ControllerProcess(plane, identity="leader", webhook=False, lease_seconds=3).start()
    wait_for(leader.is_leader, what="the leader")
    follower = ControllerProcess(plane, identity="follower", lease_seconds=3).start()
    try:
        assert not follower.is_leader()
        bad = {"apiVersion": "kagent.dev/v1alpha1", "kind": "Workflow",
               "metadata": {"name": "bad", "namespace": namespace},
               "spec": {"steps": [{"name": "a", "agent": "x", "when": "1 +"}]}}
        refused = plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(bad), check=False)
        assert refused.returncode != 0 and "spec.steps[0].when" in refused.stderr
        assert 'kagent_webhook_refusals_total{kind="Workflow"} 1.0' in follower.metrics()
    finally:
        follower.stop()
        leader.stop()
        remove_webhook_configurations(plane)


def test_killed_mid_reconcile_converges_on_restart(plane: ControlPlane) -> None:
    namespace = plane.create_namespace("crash")
    names = [f"crash-{i}" for i in range(20)]
    controller = ControllerProcess(plane, identity="crashy", webhook=False, lease_seconds=2).start()
    wait_for(controller.is_leader, what="leadership")
    plane.kubectl("apply", "-f", "-", input=agent_docs(namespace, names))
    time.sleep(1.0)
    controller.kill()
    # Change every agent while no controller runs, then restart.
    plane.kubectl("apply", "-f", "-", input=agent_docs(namespace, names, prompt="Be brief."))
    restarted = ControllerProcess(plane, identity="crashy-2", webhook=False, lease_seconds=2).start()
    try:
        wait_for(lambda: all_ready(plane, namespace, 20), timeout=120, what="convergence after the crash")
        assert_converged(plane, namespace, names)
        config = plane.kubectl("get", "configmap", "crash-0", "-n", namespace, "-o",
                               "jsonpath={.data.agent\\.yaml}").stdout
        assert "Be brief." in config
    finally:
        restarted.stop()
