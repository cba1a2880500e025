"""Status writes: the Workflow's status from its runs, and the typed models every Workflow and
WorkflowRun status write goes through (a wrong field fails here, not on the API server)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from kagent.api.base import Condition
from kagent.api.workflow import StepStatus, WorkflowRunStatus, WorkflowStatus
from kagent.workflow.plan import PlanCache
from kagent.workflow.store import KubeRunStore, RunSummary, merge_patch
from kagent.workflow.workflowstatus import (
    WorkflowStatusReconciler,
    accepted_condition,
    workflow_status,
)
from tests.unit.test_workflow_engine import MemoryStore, run_of, workflow_of

RUNS = [RunSummary("a", "t0", "Running", False), RunSummary("b", "t1", None, False),
        RunSummary("c", "t2", "Pending", False), RunSummary("d", "t3", "Succeeded", False)]


def test_workflow_status_counts_runs_and_keeps_other_conditions() -> None:
    previous = WorkflowStatus(conditions=[
        Condition(type="Ready", status="True", reason="Other"),
        Condition(type="Accepted", status="True", reason="Valid", message="old",
                  last_transition_time="2026-01-01T00:00:00Z", observed_generation=1)])
    status = workflow_status(previous, 2, None, RUNS, "2026-02-02T00:00:00Z")
    assert (status.running, status.pending, status.observed_generation) == (1, 2, 2)
    ready, accepted = status.conditions or []
    assert ready.type == "Ready"
    assert accepted.message == "the workflow is valid" and accepted.observed_generation == 2
    assert accepted.last_transition_time == "2026-01-01T00:00:00Z"  # its status did not change


def test_accepted_moves_its_transition_time_only_when_its_status_changes() -> None:
    valid = accepted_condition(None, None, 1, "t1")
    assert (valid.status, valid.reason, valid.last_transition_time) == ("True", "Valid", "t1")
    invalid = accepted_condition([valid], "spec.steps[0].dependsOn[0]: no step named 'x'", 2, "t2")
    assert (invalid.status, invalid.reason, invalid.last_transition_time) == ("False", "Invalid", "t2")
    assert invalid.message == "spec.steps[0].dependsOn[0]: no step named 'x'"


async def test_the_workflow_status_is_written_only_when_it_changes_and_its_echo_costs_no_count() -> None:
    class Counting(MemoryStore):
        workflow_writes = 0
        counts = 0

        async def write_workflow_status(self, namespace: str, name: str, status: WorkflowStatus) -> str:
            self.workflow_writes += 1
            return await super().write_workflow_status(namespace, name, status)

        async def runs_of(self, namespace: str, workflow: str) -> list[RunSummary]:
            self.counts += 1
            return await super().runs_of(namespace, workflow)

    store = Counting([run_of(None, name="p")], [workflow_of({"steps": [{"name": "s", "agent": "x"}]})])
    workflows = WorkflowStatusReconciler(store, PlanCache())
    assert await workflows.reconcile("ns", "wf") == ["p"]
    written = store.workflows[("ns", "wf")]["status"]
    assert written["pending"] == 1 and written["running"] == 0 and written["observedGeneration"] == 1
    assert (store.workflow_writes, store.counts) == (1, 1)
    assert await workflows.reconcile("ns", "wf") == ["p"]  # the echo of its own write
    assert (store.workflow_writes, store.counts) == (1, 1)
    store.runs[("ns", "p")]["status"] = {"phase": "Running"}
    workflows.runs_changed("ns", "wf")
    assert await workflows.reconcile("ns", "wf") == []
    assert store.workflows[("ns", "wf")]["status"]["running"] == 1
    assert (store.workflow_writes, store.counts) == (2, 2)
    store.workflows[("ns", "wf")]["metadata"]["resourceVersion"] = "99"  # someone else changed it
    await workflows.reconcile("ns", "wf")
    assert (store.workflow_writes, store.counts) == (2, 3)
    assert await workflows.reconcile("ns", "missing") == []


def test_a_merge_patch_clears_only_what_was_explicitly_cleared() -> None:
    status = WorkflowRunStatus(phase="Running", reason="Running")
    assert merge_patch(status) == {"phase": "Running", "reason": "Running"}
    status.finished_at = None  # e.g. a run taken up again: its finish time goes
    status.steps = [StepStatus(name="a", output=None, task_id="uid-a-1")]
    assert merge_patch(status) == {"phase": "Running", "reason": "Running", "finishedAt": None,
                                   "steps": [{"name": "a", "phase": "Pending", "attempts": 0,
                                              "taskId": "uid-a-1"}]}


async def test_the_kubernetes_store_takes_typed_status_only() -> None:
    store = KubeRunStore(client=None)  # type: ignore[arg-type]  # refused before any request
    with pytest.raises(TypeError, match="must be a WorkflowRunStatus"):
        await store.write_run_status("ns", "r", {"phase": "Running"})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be a WorkflowStatus"):
        await store.write_workflow_status("ns", "w", {"running": 1})  # type: ignore[arg-type]


@pytest.mark.parametrize("wire", [
    {"running": 1, "pendng": 2},                                   # misspelt count
    {"conditions": [{"type": "Accepted", "status": "Yes"}]},       # not True/False/Unknown
    {"conditions": [{"type": "Accepted", "status": "True", "lastTransition": "t"}]},
])
def test_a_wrong_workflow_status_field_is_refused(wire: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        WorkflowStatus.model_validate(wire)
    status = WorkflowStatus()
    with pytest.raises((ValidationError, ValueError)):
        status.runing = 1  # type: ignore[attr-defined]
