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
