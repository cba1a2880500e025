"""The engine's pure decisions: readiness, loops, retries and backoff, admission, bounds."""

from __future__ import annotations

from kagent.api.workflow import RetryPolicy, WorkflowSpec
from kagent.workflow.engine import workflow_agents
from kagent.workflow.plan import plan
from kagent.workflow.state import (
    DEPENDENCY_FAILED,
    admit,
    backoff_delay,
    bound_output,
    default_input,
    loop_group,
    merge_steps,
    parse_choice,
    readiness,
    reset_for_iteration,
    retry_policy,
)


def spec(steps: list[dict], **extra) -> WorkflowSpec:
    return WorkflowSpec.model_validate({"steps": steps, **extra})


REPORT = spec([
    {"name": "research", "agent": "r"},
    {"name": "m", "agent": "a", "parallel": True},
    {"name": "t", "agent": "a", "parallel": True},
    {"name": "write", "agent": "w"},
])


def phases(**by_name: str) -> list[dict]:
    return [{"name": n, "phase": p} for n, p in by_name.items()]


def test_ready_steps_follow_the_graph() -> None:
    deps = plan(REPORT)
    assert readiness(deps, phases(research="Pending", m="Pending", t="Pending", write="Pending")
                     ).ready == ["research"]
    assert readiness(deps, phases(research="Succeeded", m="Pending", t="Pending", write="Pending")
                     ).ready == ["m", "t"]
    assert readiness(deps, phases(research="Succeeded", m="Succeeded", t="Running", write="Pending")
                     ).ready == []
    assert readiness(deps, phases(research="Succeeded", m="Skipped", t="Succeeded", write="Pending")
                     ).ready == ["write"]


def test_a_failed_dependency_blocks_its_dependents_transitively() -> None:
    deps = plan(REPORT)
    result = readiness(deps, phases(research="Succeeded", m="Failed", t="Succeeded", write="Pending"))
    assert result.blocked == ["write"] and result.ready == []
    steps = phases(research="Failed", m="Pending", t="Pending", write="Pending")
    assert readiness(deps, steps).blocked == ["m", "t"]
    steps[1] = {"name": "m", "phase": "Skipped", "error": DEPENDENCY_FAILED}
    steps[2] = {"name": "t", "phase": "Skipped", "error": DEPENDENCY_FAILED}
    assert readiness(deps, steps).blocked == ["write"]


def test_resumed_status_keeps_recorded_steps() -> None:
    recorded = [{"name": "research", "phase": "Succeeded", "attempts": 1, "output": "x"}]
    merged = merge_steps(REPORT, recorded)
    assert merged[0]["phase"] == "Succeeded" and [s["phase"] for s in merged[1:]] == ["Pending"] * 3


def test_loop_group_and_reset_keep_outputs() -> None:
    workflow = spec([{"name": "draft", "agent": "w"},
                     {"name": "review", "agent": "r",
                      "loop": {"until": "true", "repeatFrom": "draft"}}])
    assert loop_group(workflow, workflow.steps[1]) == ["draft", "review"]
    steps = [{"name": "draft", "phase": "Succeeded", "output": "d"},
             {"name": "review", "phase": "Succeeded", "output": "REVISE", "iterations": 1}]
    reset = reset_for_iteration(steps, ["draft", "review"])
    assert [s["phase"] for s in reset] == ["Pending", "Pending"]
    assert reset[1]["output"] == "REVISE" and reset[1]["iterations"] == 1


def test_retry_policy_and_backoff() -> None:
    workflow = spec([{"name": "a", "agent": "x"},
                     {"name": "b", "agent": "x", "retry": {"limit": 1}}],
                    errorHandling={"strategy": "retry", "retry": {"limit": 4}})
    assert retry_policy(workflow, workflow.steps[0]).limit == 4
    assert retry_policy(workflow, workflow.steps[1]).limit == 1
    assert retry_policy(spec([{"name": "a", "agent": "x"}]), workflow.steps[0]).limit == 0
    policy = RetryPolicy.model_validate(
        {"limit": 5, "backoff": {"duration": "1s", "factor": 2, "maxDuration": "5s"}})
    assert [backoff_delay(policy, n) for n in (1, 2, 3, 4)] == [1, 2, 4, 5]


def test_queue_admits_in_creation_order() -> None:
    running = [("2026-01-01T00:00:00Z", "r0")]
    pending = [("2026-01-01T00:00:02Z", "late"), ("2026-01-01T00:00:01Z", "early")]
    assert admit("late", 2, "queue", running, pending).action == "wait"
    assert admit("early", 2, "queue", running, pending).action == "start"
    assert admit("early", 1, "queue", running, pending).action == "wait"


def test_reject_and_replace_when_full() -> None:
    running = [("2026-01-01T00:00:05Z", "new"), ("2026-01-01T00:00:00Z", "old")]
    assert admit("x", 2, "reject", running, []).action == "reject"
    assert admit("x", 3, "reject", running, []).action == "start"
    decision = admit("x", 2, "replace", running, [])
    assert decision.action == "replace" and decision.replace == "old"


def test_outputs_are_bounded() -> None:
    assert bound_output("short") == ("short", False)
    text, cut = bound_output("x" * 5000, limit=4096)
    assert cut and len(text) == 4096


def test_router_choice_must_be_from_the_list() -> None:
    assert parse_choice(" Billing. ", ["billing", "support"]) == "billing"
    assert parse_choice("I pick support for this", ["billing", "support"]) == "support"
    assert parse_choice("billing or support", ["billing", "support"]) is None
    assert parse_choice("sales", ["billing", "support"]) is None


def test_default_input_and_agents() -> None:
    workflow = spec([{"name": "a", "agent": "x"}, {"name": "b", "agent": "y"},
                     {"name": "c", "route": {"router": "r", "choices": ["x", "z"]}}])
    deps = plan(workflow)
    assert default_input(workflow, deps, "a", {"topic": "t"}, {}) == "t"
    assert default_input(workflow, deps, "b", {"topic": "t"}, {"a": "out"}) == "out"
    assert workflow_agents(workflow) == ["x", "y", "r", "z"]
