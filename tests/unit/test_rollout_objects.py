"""The objects of a rollout (pure): stable pair from its revision, candidate pair beside it,
blue-green Services selecting one revision; and the status merge patch that removes cleared
fields."""

from __future__ import annotations

from typing import Any

from kagent.api import Agent
from kagent.api.labels import AGENT_LABEL, REVISION_HASH_LABEL, ROLLOUT_TRACK_LABEL
from kagent.controller.cache import merge_patch
from kagent.controller.render import AgentInputs, render_agent
from kagent.controller.rollout.objects import revision_manifest, rollout_objects, stored_revision
from kagent.controller.rollout.plan import Plan
from kagent.api.rollout import RolloutStatus


def agent(prompt: str, strategy: str = "Canary") -> Agent:
    return Agent.model_validate({
        "apiVersion": "kagent.dev/v1alpha1", "kind": "Agent",
        "metadata": {"name": "helper", "namespace": "n", "uid": "u-1"},
        "spec": {"model": {"provider": "openai", "name": "gpt-4o-mini"}, "systemPrompt": prompt,
                 "replicas": 3, "rollout": {"strategy": strategy}}})


def by(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)


def test_the_stable_pair_comes_from_its_revision_and_the_candidate_runs_beside_it() -> None:
    old = render_agent(AgentInputs(agent=agent("v1")))
    new = render_agent(AgentInputs(agent=agent("v2")))
    revision = stored_revision(revision_manifest(agent("v1"), old, 1))
    assert revision is not None and revision.spec["systemPrompt"] == "v1"
    plan = Plan(RolloutStatus(), old.config_hash, 2, new.config_hash, 1)
    objects = rollout_objects(new, plan, revision, "Canary", autoscaled=False)
    stable = by(objects, "Deployment", "helper")
    assert stable["spec"]["replicas"] == 2
    assert stable["spec"]["template"]["metadata"]["labels"][REVISION_HASH_LABEL] == old.config_hash
    assert "v1" in by(objects, "ConfigMap", "helper")["data"]["agent.yaml"]
    canary = by(objects, "Deployment", "helper-canary")
    assert canary["spec"]["replicas"] == 1
    assert canary["spec"]["selector"]["matchLabels"] == {AGENT_LABEL: "helper",
                                                         ROLLOUT_TRACK_LABEL: "canary"}
    volumes = {v["name"]: v for v in canary["spec"]["template"]["spec"]["volumes"]}
    assert volumes["config"]["configMap"]["name"] == "helper-canary"
    assert "v2" in by(objects, "ConfigMap", "helper-canary")["data"]["agent.yaml"]
    assert canary["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    # both revisions behind the one Service: traffic follows the pod share
    assert by(objects, "Service", "helper")["spec"]["selector"] == {AGENT_LABEL: "helper"}


def test_blue_green_services_select_one_revision_each() -> None:
    old = render_agent(AgentInputs(agent=agent("v1", "BlueGreen")))
    new = render_agent(AgentInputs(agent=agent("v2", "BlueGreen")))
    revision = stored_revision(revision_manifest(agent("v1", "BlueGreen"), old, 1))
    plan = Plan(RolloutStatus(), old.config_hash, 3, new.config_hash, 3,
                service_hash=old.config_hash, preview=True)
    objects = rollout_objects(new, plan, revision, "BlueGreen", autoscaled=False)
    assert by(objects, "Service", "helper")["spec"]["selector"][REVISION_HASH_LABEL] == old.config_hash
    assert by(objects, "Service", "helper-preview")["spec"]["selector"][REVISION_HASH_LABEL] == new.config_hash
    assert by(objects, "Deployment", "helper-preview")["spec"]["replicas"] == 3


def test_a_status_patch_removes_what_the_new_status_no_longer_sets() -> None:
    old = {"rollout": {"canaryHash": "a", "phase": "Promoting", "analysis": {"stable": {"p99": "1"}}},
           "endpoint": "x"}
    new = {"rollout": {"phase": "Healthy", "analysis": {"stable": {}}}, "endpoint": "x"}
    assert merge_patch(old, new) == {
        "rollout": {"phase": "Healthy", "canaryHash": None, "analysis": {"stable": {"p99": None}}},
        "endpoint": "x"}


def test_with_the_gateway_api_weights_go_on_an_httproute_with_a_service_per_revision() -> None:
    from kagent.api.rollout import GatewayParent

    old = render_agent(AgentInputs(agent=agent("v1")))
    new = render_agent(AgentInputs(agent=agent("v2")))
    revision = stored_revision(revision_manifest(agent("v1"), old, 1))
    status = RolloutStatus(phase="Paused", stable_weight=70, canary_weight=30)
    plan = Plan(status, old.config_hash, 3, new.config_hash, 1, routed=True)
    gateway = GatewayParent(name="public", namespace="edge", section_name="https")
    objects = rollout_objects(new, plan, revision, "Canary", autoscaled=False, gateway=gateway)
    route = by(objects, "HTTPRoute", "helper")
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert route["spec"]["parentRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway",
                                            "name": "public", "namespace": "edge",
                                            "sectionName": "https"}]
    port = by(objects, "Service", "helper")["spec"]["ports"][0]["port"]
    assert route["spec"]["rules"] == [{"backendRefs": [
        {"name": "helper-stable", "port": port, "weight": 70},
        {"name": "helper-canary", "port": port, "weight": 30}]}]
    assert by(objects, "Service", "helper-stable")["spec"]["selector"] == {
        AGENT_LABEL: "helper", REVISION_HASH_LABEL: old.config_hash}
    assert by(objects, "Service", "helper-canary")["spec"]["selector"] == {
        AGENT_LABEL: "helper", REVISION_HASH_LABEL: new.config_hash}
    # the Agent's own Service still selects every pod of the Agent
    assert by(objects, "Service", "helper")["spec"]["selector"] == {AGENT_LABEL: "helper"}
    # nothing in flight: the stable Service takes everything, the canary Service goes
    steady = Plan(RolloutStatus(phase="Healthy"), new.config_hash, 3, None, routed=True)
    objects = rollout_objects(new, steady, None, "Canary", autoscaled=False)
    assert by(objects, "HTTPRoute", "helper")["spec"] == {"rules": [{"backendRefs": [
        {"name": "helper-stable", "port": port, "weight": 100}]}]}
    assert not [o for o in objects if o["metadata"]["name"] == "helper-canary"]
    # without the Gateway API: no route, no per-revision Services
    plain = rollout_objects(new, Plan(status, old.config_hash, 2, new.config_hash, 1), revision,
                            "Canary", autoscaled=False)
    assert not [o for o in plain if o["kind"] == "HTTPRoute" or o["metadata"]["name"] == "helper-stable"]
