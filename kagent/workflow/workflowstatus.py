"""A Workflow's status: whether its spec is valid (the Accepted condition) and how many of its
runs are running and pending. Computed by a pure function, written only when it changed."""

from __future__ import annotations

from kagent.api.base import Condition, ConditionStatus
from kagent.api.workflow import WorkflowStatus
from kagent.kube.conditions import now_rfc3339
from kagent.workflow import metrics
from kagent.workflow.plan import PlanCache
from kagent.workflow.store import RunStore, RunSummary

VALID: tuple[ConditionStatus, str, str] = ("True", "Valid", "the workflow is valid")


def accepted_condition(previous: list[Condition] | None, error: str | None,
                       generation: int | None, now: str) -> Condition:
    """The Accepted condition; its transition time moves only when its status changes."""
    invalid: tuple[ConditionStatus, str, str] | None = (
        ("False", "Invalid", error) if error is not None else None)
    status, reason, message = invalid or VALID
    old = next((c for c in previous or [] if c.type == "Accepted"), None)
    since = old.last_transition_time if old is not None and old.status == status else None
    return Condition(type="Accepted", status=status, reason=reason, message=message,
                     observed_generation=generation, last_transition_time=since or now)


def workflow_status(previous: WorkflowStatus | None, generation: int | None, error: str | None,
                    runs: list[RunSummary], now: str) -> WorkflowStatus:
    """The status a Workflow should have; other controllers' conditions are kept."""
    conditions = [c for c in (previous.conditions if previous else None) or [] if c.type != "Accepted"]
    accepted = accepted_condition(previous.conditions if previous else None, error, generation, now)
    return WorkflowStatus(
        observed_generation=generation,
        running=sum(r.phase == "Running" for r in runs),
        pending=len(pending_runs(runs)),
        conditions=[*conditions, accepted],
    )


def pending_runs(runs: list[RunSummary]) -> list[str]:
    return [r.name for r in runs if r.phase in (None, "Pending")]


async def reconcile_workflow(store: RunStore, plans: PlanCache, namespace: str,
                             name: str) -> list[str]:
    """Count the Workflow's running and pending runs into its status; returns the names of
    its pending runs (to look at again: a slot may have freed up, or it now exists)."""
    workflow = await store.get_workflow(namespace, name)
    if workflow is None:
        return []
    runs = await store.runs_of(namespace, name)
    error = None
    try:
        plans.for_workflow(workflow)
    except ValueError as invalid:
        error = str(invalid)
    previous = WorkflowStatus.model_validate(workflow["status"]) if workflow.get("status") else None
    wanted = workflow_status(previous, workflow["metadata"].get("generation"), error, runs,
                             now_rfc3339())
    pending = pending_runs(runs)
    metrics.QUEUE_DEPTH.labels(namespace, name).set(len(pending))
    if previous is None or previous.to_wire() != wanted.to_wire():
        await store.write_workflow_status(namespace, name, wanted)
    return pending
