"""Retrying a failed run (spec.retry): which steps run again (the pure planner), the status that
takes a retry up, what admission refuses, and the engine taking a retry up exactly once with
fresh message ids for the steps it runs again and the recorded outputs of the others."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kagent.api.workflow import RunRetryRequest, StepStatus, WorkflowRunStatus
from kagent.webhook.validate import retry_step_errors, validate
from kagent.workflow.plan import plan_workflow
from kagent.workflow.retry import (
    RetryProblem,
    retry_request_problems,
    retry_status,
    steps_to_rerun,
    wants_retry,
)
from kagent.workflow.state import DEPENDENCY_FAILED
from tests.unit.test_workflow_engine import Agents, MemoryStore, engine_of, run_of, workflow_of

SIX = {"steps": [{"name": f"s{i}", "agent": f"a{i}"} for i in range(1, 7)]}
DAG = {"steps": [
    {"name": "fetch", "agent": "w", "input": "go"},
    {"name": "left", "agent": "w", "dependsOn": ["fetch"]},
    {"name": "right", "agent": "w", "dependsOn": ["fetch"]},
    {"name": "join", "agent": "w", "dependsOn": ["left", "right"]},
    {"name": "side", "agent": "w", "dependsOn": ["fetch"]},
]}


def answers(label: str) -> Any:
    """An agent answering ``label(message)``."""
    return lambda message: f"{label}({message})"


def statuses(**phases: str | tuple[str, str]) -> list[StepStatus]:
    out = []
    for name, phase in phases.items():
        phase, error = phase if isinstance(phase, tuple) else (phase, None)
        out.append(StepStatus(name=name, phase=phase, error=error, attempts=1 if phase != "Pending" else 0,
                              output="out" if phase == "Succeeded" else None))
    return out


def failed_at_fourth() -> list[StepStatus]:
    return statuses(s1="Succeeded", s2="Succeeded", s3="Succeeded", s4=("Failed", "boom"),
                    s5=("Skipped", "not run: the run ended (StepFailed)"),
                    s6=("Skipped", "not run: the run ended (StepFailed)"))


def test_a_pipeline_failed_at_its_fourth_step_runs_the_fourth_and_what_follows() -> None:
    assert steps_to_rerun(plan_workflow(SIX), failed_at_fourth(), None) == ["s4", "s5", "s6"]


def test_from_a_succeeded_step_runs_it_and_everything_after_it() -> None:
    assert steps_to_rerun(plan_workflow(SIX), failed_at_fourth(), "s2") == ["s2", "s3", "s4", "s5", "s6"]


def test_in_a_dag_only_the_failed_branch_and_its_dependents_run_again() -> None:
    steps = statuses(fetch="Succeeded", left="Succeeded", right=("Failed", "boom"),
                     join=("Skipped", DEPENDENCY_FAILED), side="Succeeded")
    plan = plan_workflow(DAG)
    assert steps_to_rerun(plan, steps, None) == ["right", "join"]
    # --from left: left and its dependents, and the failed branch still
    assert steps_to_rerun(plan, steps, "left") == ["left", "right", "join"]
    assert steps_to_rerun(plan, steps, "fetch") == ["fetch", "left", "right", "join", "side"]


def test_a_step_skipped_by_its_condition_is_kept_unless_it_follows_one_that_runs_again() -> None:
    steps = statuses(s1="Succeeded", s2="Skipped", s3="Succeeded", s4=("Failed", "x"),
                     s5=("Skipped", "not run"), s6="Skipped")
    assert steps_to_rerun(plan_workflow(SIX), steps, None) == ["s4", "s5", "s6"]
    assert "s2" not in steps_to_rerun(plan_workflow(SIX), steps, "s3")


def test_a_run_that_never_started_runs_every_step() -> None:
    assert steps_to_rerun(plan_workflow(SIX), [], None) == [f"s{i}" for i in range(1, 7)]


def test_an_unknown_from_step_is_refused_naming_the_field_and_the_steps() -> None:
    with pytest.raises(RetryProblem) as caught:
        steps_to_rerun(plan_workflow(SIX), failed_at_fourth(), "nope")
    assert caught.value.field == "spec.retry.fromStep"
    assert "'nope'" in str(caught.value) and "s1, s2" in str(caught.value)


def test_the_retry_status_resets_the_steps_keeps_attempts_and_records_the_attempt() -> None:
    status = WorkflowRunStatus(phase="Failed", reason="StepFailed", finished_at="2026-01-01T00:01:00Z",
                               started_at="2026-01-01T00:00:00Z", output={"x": "y"},
                               steps=failed_at_fourth())
    new = retry_status(status, plan_workflow(SIX), RunRetryRequest(attempt=2), "2026-01-01T00:05:00Z")
    assert (new.phase, new.reason, new.attempt) == ("Pending", "Retrying", 2)
    assert new.finished_at is None and new.output is None and new.started_at == status.started_at
    by_name = {s.name: s for s in new.steps or []}
    assert [by_name[f"s{i}"].phase for i in range(1, 7)] == ["Succeeded"] * 3 + ["Pending"] * 3
    assert by_name["s1"].output == "out" and by_name["s4"].error is None
    assert by_name["s4"].attempts == 1  # its next attempt is number 2: a new message id
    [record] = new.attempts or []
    assert (record.attempt, record.steps, record.previous_reason) == (2, ["s4", "s5", "s6"], "StepFailed")
    # the fields the retry clears are explicitly unset, so the merge patch removes them
    assert {"finished_at", "output"} <= new.model_fields_set


def test_the_attempt_history_is_bounded() -> None:
    status = WorkflowRunStatus(phase="Failed", steps=failed_at_fourth())
    for attempt in range(2, 40):
        status = retry_status(status, plan_workflow(SIX), RunRetryRequest(attempt=attempt), "t")
        status.phase = "Failed"
    assert len(status.attempts or []) == 20 and (status.attempts or [])[-1].attempt == 39


def test_only_a_failed_run_is_retried() -> None:
    with pytest.raises(RetryProblem, match="Succeeded"):
        retry_status(WorkflowRunStatus(phase="Succeeded"), plan_workflow(SIX),
                     RunRetryRequest(attempt=2), "t")


def test_a_retry_is_wanted_only_for_an_attempt_not_reached() -> None:
    assert wants_retry(RunRetryRequest(attempt=2), WorkflowRunStatus(phase="Failed"))
    assert not wants_retry(RunRetryRequest(attempt=2), WorkflowRunStatus(phase="Failed", attempt=2))
    assert not wants_retry(None, WorkflowRunStatus(phase="Failed"))


# --- admission ------------------------------------------------------------------------------------


def run_doc(status: dict[str, Any] | None, retry: dict[str, Any] | None = None,
            cancel: bool = False) -> dict[str, Any]:
    doc = {"apiVersion": "kagent.dev/v1alpha1", "kind": "WorkflowRun",
           "metadata": {"name": "r", "namespace": "ns"},
           "spec": {"workflowRef": {"name": "wf"}, "input": {"topic": "t"}, "cancel": cancel}}
    if retry is not None:
        doc["spec"]["retry"] = retry
    if status is not None:
        doc["status"] = status
    return doc


def messages(errors: list[Any]) -> str:
    return "; ".join(str(e) for e in errors)


def test_admission_accepts_the_next_attempt_of_a_failed_run() -> None:
    old = run_doc({"phase": "Failed", "reason": "StepFailed"})
    assert validate(run_doc(None, {"attempt": 2, "fromStep": "s2"}), old) == []


@pytest.mark.parametrize(("status", "retry", "cancel", "expected"), [
    ({"phase": "Running"}, {"attempt": 2}, False, "spec.retry: the run is Running"),
    ({"phase": "Succeeded"}, {"attempt": 2}, False, "only a Failed (or cancelled) run"),
    ({"phase": "Failed", "attempt": 3}, {"attempt": 3}, False, "spec.retry.attempt: must be above 3"),
    (None, {"attempt": 2}, False, "nothing to retry"),
    ({"phase": "Failed", "reason": "Cancelled"}, {"attempt": 2}, True, "spec.cancel: set cancel to false"),
])
def test_admission_refuses_a_retry_that_cannot_be_taken_up(status: dict[str, Any] | None,
                                                           retry: dict[str, Any], cancel: bool,
                                                           expected: str) -> None:
    old = run_doc(status, cancel=cancel)
    assert expected in messages(validate(run_doc(None, retry, cancel=cancel), old))


def test_a_cancelled_run_is_uncancelled_only_by_a_retry() -> None:
    old = run_doc({"phase": "Failed", "reason": "Cancelled"}, cancel=True)
    assert "cannot be resumed" in messages(validate(run_doc(None), old))
    assert validate(run_doc(None, {"attempt": 2}), old) == []


def test_a_new_run_cannot_carry_a_retry() -> None:
    assert "spec.retry: a new run has nothing to retry" in messages(validate(run_doc(None, {"attempt": 2})))


def test_admission_refuses_an_unknown_from_step_naming_it() -> None:
    workflow = workflow_of(SIX)
    errors = retry_step_errors(run_doc(None, {"attempt": 2, "fromStep": "s9"}),
                               run_doc({"phase": "Failed"}), workflow)
    assert "spec.retry.fromStep: Workflow has no step 's9'" in messages(errors)
    assert retry_step_errors(run_doc(None, {"attempt": 2, "fromStep": "s3"}),
                             run_doc({"phase": "Failed"}), workflow) == []


def test_the_pure_request_check_ignores_an_unchanged_retry() -> None:
    same = RunRetryRequest(attempt=2)
    assert retry_request_problems(same, same, WorkflowRunStatus(phase="Running"), False) == []


# --- the engine -----------------------------------------------------------------------------------


async def settle(engine: Any, name: str = "r") -> None:
    """Reconcile the run until no executor runs it and it asks for no early look."""
    for _ in range(20):
        after = await engine.reconcile_run("ns", name)
        runner = engine.runs.executors.get(("ns", name))
        if runner is not None and runner.task is not None:
            await asyncio.wait_for(runner.task, 5)
            continue
        if after is None:
            return
    raise AssertionError("the run did not settle")


async def test_the_engine_retries_from_the_failed_step_with_fresh_ids_and_kept_outputs() -> None:
    fail_once = {"a4": True}

    def fourth(message: str) -> str:
        if fail_once.pop("a4", False):
            raise RuntimeError("model overloaded")
        return f"4({message})"

    replies: dict[str, Any] = {f"a{i}": answers(str(i)) for i in (1, 2, 3, 5, 6)}
    replies["a4"] = fourth
    # the third step's answer is too long for the status: it is kept in the outputs ConfigMap
    replies["a3"] = lambda m: "3(" + m + ")" + "x" * 5000
    store = MemoryStore([run_of(None, topic="t")], [workflow_of(SIX)])
    agents = Agents(replies)
    engine = engine_of(store, agents)
    await settle(engine)
    status = store.runs[("ns", "r")]["status"]
    assert status["phase"] == "Failed" and status["reason"] == "StepFailed"
    assert [c["agent"] for c in agents.calls] == ["a1", "a2", "a3", "a4"]
    cut = next(s for s in status["steps"] if s["name"] == "s3")
    assert cut.get("outputRef"), "the test needs the third output kept outside the status"

    agents.calls.clear()
    store.runs[("ns", "r")]["spec"]["retry"] = {"attempt": 2}
    await settle(engine)
    status = store.runs[("ns", "r")]["status"]
    assert status["phase"] == "Succeeded" and status["attempt"] == 2
    assert [c["agent"] for c in agents.calls] == ["a4", "a5", "a6"]
    assert [c["id"] for c in agents.calls] == ["uid-s4-2", "uid-s5-1", "uid-s6-1"]
    assert agents.calls[0]["message"].startswith("3(2(1(t)))xxx") and len(agents.calls[0]["message"]) > 5000
    assert status["attempts"][0]["steps"] == ["s4", "s5", "s6"]
    assert ("Normal", "Retrying") in store.events

    agents.calls.clear()  # taken up once: looking again changes nothing
    await settle(engine)
    assert agents.calls == [] and store.runs[("ns", "r")]["status"]["phase"] == "Succeeded"


async def test_a_retry_from_a_succeeded_step_calls_its_agent_again_with_a_new_id() -> None:
    store = MemoryStore([run_of(None, topic="t")], [workflow_of(SIX)])
    agents = Agents({**{f"a{i}": answers(str(i)) for i in range(1, 7)}, "a6": RuntimeError("down")})
    engine = engine_of(store, agents)
    await settle(engine)
    agents.replies["a6"] = answers("6")
    agents.calls.clear()
    store.runs[("ns", "r")]["spec"]["retry"] = {"attempt": 2, "fromStep": "s5"}
    await settle(engine)
    assert [c["id"] for c in agents.calls] == ["uid-s5-2", "uid-s6-2"]
    assert store.runs[("ns", "r")]["status"]["phase"] == "Succeeded"


async def test_a_retry_naming_an_unknown_step_is_refused_once_and_the_run_stays_failed() -> None:
    store = MemoryStore([run_of(None, topic="t")], [workflow_of(SIX)])
    agents = Agents({**{f"a{i}": answers("ok") for i in range(1, 7)}, "a2": RuntimeError("x")})
    engine = engine_of(store, agents)
    await settle(engine)
    store.runs[("ns", "r")]["spec"]["retry"] = {"attempt": 2, "fromStep": "zz"}
    calls = len(agents.calls)
    await settle(engine)
    status = store.runs[("ns", "r")]["status"]
    assert status["phase"] == "Failed" and status["reason"] == "RetryRefused" and status["attempt"] == 2
    assert "spec.retry.fromStep" in status["message"] and len(agents.calls) == calls


async def test_a_retry_taken_up_by_a_leader_that_dies_is_not_taken_up_again_by_the_next() -> None:
    store = MemoryStore([run_of(None, topic="t")], [workflow_of(SIX)])
    agents = Agents({**{f"a{i}": answers(str(i)) for i in range(1, 7)}, "a4": RuntimeError("down")})
    first = engine_of(store, agents)
    await settle(first)
    agents.replies["a4"] = answers("4")
    agents.calls.clear()
    store.runs[("ns", "r")]["spec"]["retry"] = {"attempt": 2}
    assert await first.reconcile_run("ns", "r") == 0.0  # taken up: Pending, steps reset
    await first.shutdown()  # the leader dies before it admits the run
    assert store.runs[("ns", "r")]["status"]["phase"] == "Pending" and agents.calls == []

    second = engine_of(store, agents)
    await settle(second)
    status = store.runs[("ns", "r")]["status"]
    assert status["phase"] == "Succeeded" and status["attempt"] == 2 and len(status["attempts"]) == 1
    assert [c["id"] for c in agents.calls] == ["uid-s4-2", "uid-s5-1", "uid-s6-1"]
    assert [e for e in store.events if e[1] == "Retrying"] == [("Normal", "Retrying")]


# --- the command line -----------------------------------------------------------------------------


def test_the_cli_asks_for_the_next_attempt_and_uncancels_guarded_by_the_resource_version() -> None:
    from kagent.cli.workflow import retry_request

    run = {"metadata": {"name": "r", "resourceVersion": "42"},
           "spec": {"cancel": True, "retry": {"attempt": 2}},
           "status": {"phase": "Failed", "attempt": 2}}
    assert retry_request(run, "s3", ["s1", "s3"]) == {
        "metadata": {"resourceVersion": "42"},
        "spec": {"retry": {"attempt": 3, "fromStep": "s3"}, "cancel": False}}


@pytest.mark.parametrize(("status", "spec_retry", "step", "expected"), [
    ({"phase": "Running"}, None, None, "run r is Running; only a Failed"),
    ({}, None, None, "run r is Pending"),
    ({"phase": "Failed"}, {"attempt": 2}, None, "already has a retry waiting (attempt 2)"),
    ({"phase": "Failed"}, None, "s9", "--from s9: the run's Workflow has no such step (its steps: s1, s3)"),
])
def test_the_cli_refuses_what_cannot_be_retried(status: dict[str, Any], spec_retry: dict[str, Any] | None,
                                               step: str | None, expected: str) -> None:
    from kagent.cli.workflow import retry_request

    run = {"metadata": {"name": "r"}, "spec": {"retry": spec_retry}, "status": status}
    with pytest.raises(ValueError) as caught:
        retry_request(run, step, ["s1", "s3"])
    assert expected in str(caught.value)
