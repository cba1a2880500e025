"""The engine's pure decisions: readiness, loops, retries and backoff, admission, bounds."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from kagent.api.workflow import RetryPolicy, StepStatus, Usage, WorkflowRunStatus, WorkflowSpec
from kagent.workflow.plan import plan, workflow_agents
from kagent.workflow.state import (
    DEPENDENCY_FAILED,
    add_usage,
    admit,
    backoff_delay,
    begin_attempt,
    bound_output,
    default_input,
    loop_group,
    merge_steps,
    parse_choice,
    parse_time,
    readiness,
    reset_for_iteration,
    retry_policy,
    run_deadline,
    run_status,
    stopped_step,
)


def spec(steps: list[dict], **extra) -> WorkflowSpec:
    return WorkflowSpec.model_validate({"steps": steps, **extra})


REPORT = spec([
    {"name": "research", "agent": "r"},
    {"name": "m", "agent": "a", "parallel": True},
    {"name": "t", "agent": "a", "parallel": True},
    {"name": "write", "agent": "w"},
])


def phases(**by_name: str) -> list[StepStatus]:
    return [StepStatus(name=n, phase=p) for n, p in by_name.items()]


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
    steps[1] = StepStatus(name="m", phase="Skipped", error=DEPENDENCY_FAILED)
    steps[2] = StepStatus(name="t", phase="Skipped", error=DEPENDENCY_FAILED)
    assert readiness(deps, steps).blocked == ["write"]


def test_resumed_status_keeps_recorded_steps() -> None:
    recorded = [StepStatus(name="research", phase="Succeeded", attempts=1, output="x")]
    merged = merge_steps(REPORT, recorded)
    assert merged[0].phase == "Succeeded" and [s.phase for s in merged[1:]] == ["Pending"] * 3
    merged[0].output = "changed"  # a copy: the recorded status is not touched
    assert recorded[0].output == "x"


def test_loop_group_and_reset_keep_outputs() -> None:
    workflow = spec([{"name": "draft", "agent": "w"},
                     {"name": "review", "agent": "r",
                      "loop": {"until": "true", "repeatFrom": "draft"}}])
    assert loop_group(workflow, workflow.steps[1]) == ["draft", "review"]
    steps = [StepStatus(name="draft", phase="Succeeded", output="d", finished_at="2026-01-01T00:00:00Z"),
             StepStatus(name="review", phase="Succeeded", output="REVISE", iterations=1)]
    reset = reset_for_iteration(steps, ["draft", "review"])
    assert [s.phase for s in reset] == ["Pending", "Pending"] and reset[0].finished_at is None
    assert reset[1].output == "REVISE" and reset[1].iterations == 1
    assert steps[0].phase == "Succeeded"


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


def test_an_attempt_is_recorded_with_its_idempotency_key() -> None:
    step = StepStatus(name="write", attempts=1, started_at="2026-01-01T00:00:00Z",
                      finished_at="2026-01-01T00:00:05Z", phase="Failed")
    begin_attempt(step, "uid", "2026-01-01T00:00:09Z", "writer")
    assert (step.phase, step.attempts, step.task_id, step.agent) == ("Running", 2, "uid-write-2", "writer")
    assert step.started_at == "2026-01-01T00:00:00Z" and step.finished_at is None


def test_run_status_sums_usage_and_measures_the_duration() -> None:
    status = WorkflowRunStatus(phase="Running", started_at="2026-01-01T00:00:00Z")
    steps = [StepStatus(name="a", usage=add_usage(None, {"inputTokens": 3, "outputTokens": 2, "requests": 1})),
             StepStatus(name="b", usage=add_usage(Usage(input_tokens=1), {"inputTokens": 1})),
             StepStatus(name="c")]
    written = run_status(status, steps, parse_time("2026-01-01T01:02:03Z") or 0)
    assert written.usage == Usage(input_tokens=5, output_tokens=2, requests=1)
    assert written.duration == "1h2m3s" and written.phase == "Running"
    assert status.steps is None  # the executor's own record is not changed by building a write


def test_stopping_a_run_fails_only_its_running_steps() -> None:
    running = StepStatus(name="a", phase="Running")
    done = StepStatus(name="b", phase="Succeeded")
    assert stopped_step(running, "cancelled", "t").model_dump(exclude_none=True) == {
        "name": "a", "phase": "Failed", "attempts": 0, "error": "stopped: cancelled", "finished_at": "t"}
    assert stopped_step(done, "cancelled", "t") is done


def test_a_deadline_counts_from_the_runs_creation() -> None:
    created = "2026-01-01T00:00:00Z"
    assert run_deadline(created, "1m30s", 0) == (parse_time(created) or 0) + 90
    assert run_deadline(None, "10s", 100.0) == 110.0
    assert run_deadline(created, None, 0) is None


@pytest.mark.parametrize("change", [
    lambda s: setattr(s, "taskID", "x"),          # a misspelt field name
    lambda s: setattr(s, "phase", "Succeded"),    # a misspelt phase
    lambda s: setattr(s, "attempts", "many"),     # a wrong type
])
def test_a_wrong_step_field_fails_where_it_is_written(change) -> None:
    with pytest.raises((ValidationError, ValueError, AttributeError)):
        change(StepStatus(name="a"))


def test_a_wrong_run_status_field_fails_where_it_is_written() -> None:
    with pytest.raises(ValidationError):
        WorkflowRunStatus.model_validate({"phase": "Running", "startTime": "2026-01-01T00:00:00Z"})
    status = WorkflowRunStatus()
    with pytest.raises(ValidationError):
        status.phase = "Done"
    with pytest.raises(ValueError):
        status.finishedAt = "2026-01-01T00:00:00Z"  # the wire name is not the attribute
