"""Typed status: every status the controller writes for Agents, Tools and Memories is built from
the kagent.api models, so a misspelt field fails here instead of being dropped by the API
server. The written body is also checked against the generated CRD's status schema."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import ValidationError

from kagent.api import AgentStatus
from kagent.api.crd import all_crds
from kagent.api.memory import MemoryStatus
from kagent.api.tool import DiscoveredTool, ToolStatus
from kagent.controller.cache import ControllerCache
from kagent.controller.status import (
    READY_PROGRESS_REASONS,
    Rollout,
    agent_status,
    deployment_rollout,
    memory_status,
    read_status,
    status_changed,
    tool_status,
)
from kagent.kube.conditions import transitions
from kagent.kube.reconcile import Transition, Verdict

NOW, LATER = "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z"
ROLLED_OUT = Rollout(True, "RolledOut", "2 of 2 pods are available", 2, 2)


def status_schema(plural: str) -> dict[str, Any]:
    crd = all_crds()[f"kagent.dev_{plural}.yaml"]
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]


def check_against_schema(value: Any, schema: dict[str, Any], path: str = "status") -> None:
    """Every field of ``value`` is declared in ``schema`` with a matching JSON type."""
    kind = schema.get("type")
    if kind == "object" and "properties" in schema:
        assert isinstance(value, dict), path
        for key, item in value.items():
            assert key in schema["properties"], f"{path}.{key} is not in the CRD schema"
            check_against_schema(item, schema["properties"][key], f"{path}.{key}")
    elif kind == "array":
        assert isinstance(value, list), path
        for i, item in enumerate(value):
            check_against_schema(item, schema["items"], f"{path}[{i}]")
    elif kind == "integer":
        assert isinstance(value, int), path
    elif kind == "string":
        assert isinstance(value, str), path


def full_agent_status() -> AgentStatus:
    return agent_status(
        AgentStatus(), 3, Verdict(True, "Resolved", "ok"), ROLLED_OUT,
        Verdict(False, "KEDANotInstalled", "no KEDA"), "http://a.ns.svc.cluster.local", "abc123",
        "kagent.dev/agent=a", NOW,
    )


def test_an_agent_status_fits_the_crd() -> None:
    wire = full_agent_status().to_wire()
    assert set(wire) == {"observedGeneration", "conditions", "replicas", "readyReplicas", "selector",
                         "endpoint", "configHash"}
    assert [c["type"] for c in wire["conditions"]] == ["Accepted", "Ready", "Autoscaling"]
    check_against_schema(wire, status_schema("agents"))


def test_tool_and_memory_statuses_fit_the_crd() -> None:
    tool = tool_status(ToolStatus(), 2, Verdict(True, "Discovered", "2 tools"), NOW,
                       [DiscoveredTool(name="search", description="Search")])
    wire = tool.to_wire()
    assert set(wire) == {"observedGeneration", "conditions", "discoveredTools", "lastDiscoveryTime"}
    check_against_schema(wire, status_schema("tools"))
    memory = memory_status(MemoryStatus(), 1, Verdict(False, "ReferenceNotFound", 'not found: Secret "x"'), NOW)
    check_against_schema(memory.to_wire(), status_schema("memories"))


@pytest.mark.parametrize("model, misspelt", [
    (AgentStatus, {"readyReplica": 1}),
    (AgentStatus, {"configHsh": "x"}),
    (ToolStatus, {"discoveredTool": []}),
    (MemoryStatus, {"observedGenration": 1}),
])
def test_a_misspelt_status_field_is_an_error(model: type, misspelt: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        model(**misspelt)


def test_status_is_written_only_from_the_typed_models() -> None:
    cache = ControllerCache.__new__(ControllerCache)
    with pytest.raises(KeyError):
        asyncio.run(cache.write_status(None, {"metadata": {}}, {"readyReplicas": 1}))  # type: ignore[arg-type]


def test_reading_a_status_ignores_fields_of_other_versions() -> None:
    status = read_status(AgentStatus, {"readyReplicas": 2, "fromTheFuture": True,
                                       "conditions": [{"type": "Ready", "status": "True", "extra": 1}]})
    assert status.ready_replicas == 2 and status.conditions[0].type == "Ready"
    assert read_status(AgentStatus, {"replicas": "many"}) == AgentStatus()
    assert read_status(AgentStatus, None) == AgentStatus()


def test_transitions_name_what_changed_and_times_move_only_on_change() -> None:
    first = full_agent_status()
    # A new object: only the problem is told (its first Accepted=True and Ready=True are not).
    assert transitions(None, first.conditions, READY_PROGRESS_REASONS) == (
        Transition("Autoscaling", "False", "KEDANotInstalled", "no KEDA"),
    )
    rolling = Rollout(False, "RolloutPending", "the new configuration is not applied yet", 2, 2)
    second = agent_status(first, 4, Verdict(True, "Resolved", "ok"), rolling, None, None, "def456",
                          "kagent.dev/agent=a", LATER)
    # The spec changed (generation 3 to 4): on its way, told as Normal, not as a warning.
    assert transitions(first.conditions, second.conditions, READY_PROGRESS_REASONS) == (
        Transition("Ready", "False", "RolloutPending", "the new configuration is not applied yet",
                   progress=True),)
    accepted = next(c for c in second.conditions or [] if c.type == "Accepted")
    ready = next(c for c in second.conditions or [] if c.type == "Ready")
    assert accepted.last_transition_time == NOW and ready.last_transition_time == LATER
    assert [c.type for c in second.conditions or []] == ["Accepted", "Ready"], "Autoscaling removed"
    assert second.endpoint == first.endpoint, "kept from the previous status"
    assert status_changed(first, second)
    again = agent_status(second, 4, Verdict(True, "Resolved", "ok"), rolling, None, None, "def456",
                         "kagent.dev/agent=a", "2026-01-01T00:09:00Z")
    assert not status_changed(second, again), "only timestamps differ"


def test_a_new_agent_tells_only_that_it_became_ready() -> None:
    def status(previous: AgentStatus, rollout: Rollout) -> AgentStatus:
        return agent_status(previous, 1, Verdict(True, "Resolved", "ok"), rollout, None, None, "h",
                            "kagent.dev/agent=a", NOW)

    steps = [Rollout(False, "DeploymentMissing", "no Deployment yet", 0, 0),
             Rollout(False, "RolloutInProgress", "waiting for the Deployment to be observed", 0, 0),
             Rollout(False, "PodsNotReady", "0 of 1 pods are available", 1, 0),
             Rollout(True, "RolledOut", "1 of 1 pods are available", 1, 1)]
    told: list[Transition] = []
    previous = AgentStatus()
    for rollout in steps:
        current = status(previous, rollout)
        told.extend(transitions(previous.conditions, current.conditions, READY_PROGRESS_REASONS))
        previous = current
    assert told == [Transition("Ready", "True", "RolledOut", "1 of 1 pods are available")]
    assert told[0].event_type == "Normal"
    # Pods failing later is a warning; an unresolved reference at once is too.
    broken = status(previous, Rollout(False, "PodsNotReady", "0 of 1 pods are available", 1, 0))
    [degraded] = transitions(previous.conditions, broken.conditions, READY_PROGRESS_REASONS)
    assert (degraded.reason, degraded.event_type) == ("PodsNotReady", "Warning")
    # Scaling up (a new generation) waits for the new pods: Normal, not a warning.
    scaling = agent_status(previous, 2, Verdict(True, "Resolved", "ok"),
                           Rollout(False, "RolloutInProgress", "1 of 3 pods run the current "
                                   "configuration", 1, 1), None, None, "h", "kagent.dev/agent=a", NOW)
    [scaled] = transitions(previous.conditions, scaling.conditions, READY_PROGRESS_REASONS)
    assert (scaled.reason, scaled.event_type) == ("RolloutInProgress", "Normal")
    missing = agent_status(AgentStatus(), 1, Verdict(False, "ToolNotFound", 'Tool "x"'),
                           steps[0], None, None, None, "kagent.dev/agent=a", NOW)
    assert [(t.type, t.reason, t.event_type) for t in
            transitions(None, missing.conditions, READY_PROGRESS_REASONS)] == [
        ("Accepted", "ToolNotFound", "Warning"), ("Ready", "NotAccepted", "Warning")]


def test_a_tool_keeps_its_discovered_tools_until_the_next_discovery() -> None:
    found = tool_status(ToolStatus(), 1, Verdict(True, "Discovered", "1"), NOW, [DiscoveredTool(name="t")])
    later = tool_status(found, 1, Verdict(True, "Discovered", "1"), LATER)
    assert later.discovered_tools == [DiscoveredTool(name="t")] and later.last_discovery_time == NOW


def test_rollout_reads_the_cached_deployment_view() -> None:
    view = {"metadata": {"generation": 2}, "spec": {"replicas": 0, "template": {"metadata": {"annotations": {
        "kagent.dev/config-hash": "h"}}}}, "status": {"observedGeneration": 2}}
    assert deployment_rollout(view, "h").reason == "ScaledToZero"
    assert deployment_rollout(view, "other").reason == "RolloutPending"
    assert deployment_rollout(None, "h").reason == "DeploymentMissing"
