"""A Workflow's status: whether its spec is valid (the Accepted condition) and how many of its
runs are running and pending. Computed by a pure function, written only when it changed."""

from __future__ import annotations

import time

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


class WorkflowStatusReconciler:
    """Writes a Workflow's status when it changed. Its own write comes back as a watch event on
    the Workflow; answering that needs no new count of the runs unless a run changed since
    (the engine says so through :meth:`runs_changed`), so it is answered from what was just
    written. After ``ECHO_SECONDS`` the runs are always counted again."""

    ECHO_SECONDS = 10.0

    def __init__(self, store: RunStore, plans: PlanCache) -> None:
        self.store = store
        self.plans = plans
        self._counted: dict[tuple[str, str], tuple[str | None, float, list[str]]] = {}
        self._changed: set[tuple[str, str]] = set()

    def runs_changed(self, namespace: str, name: str) -> None:
        self._changed.add((namespace, name))

    async def reconcile(self, namespace: str, name: str) -> list[str]:
        """Count the Workflow's running and pending runs into its status; returns the names of
        its pending runs (to look at again: a slot may have freed up, or it now exists)."""
        key = (namespace, name)
        workflow = await self.store.get_workflow(namespace, name)
        if workflow is None:
            self._counted.pop(key, None)
            self._changed.discard(key)
            return []
        version = workflow["metadata"].get("resourceVersion")
        counted = self._counted.get(key)
        if (counted is not None and key not in self._changed and version is not None
                and counted[0] == version and time.monotonic() - counted[1] < self.ECHO_SECONDS):
            return list(counted[2])
        self._changed.discard(key)
        runs = await self.store.runs_of(namespace, name)
        error = None
        try:
            self.plans.for_workflow(workflow)
        except ValueError as invalid:
            error = str(invalid)
        previous = WorkflowStatus.model_validate(workflow["status"]) if workflow.get("status") else None
        wanted = workflow_status(previous, workflow["metadata"].get("generation"), error, runs,
                                 now_rfc3339())
        pending = pending_runs(runs)
        metrics.QUEUE_DEPTH.labels(namespace, name).set(len(pending))
        if previous is None or previous.to_wire() != wanted.to_wire():
            version = await self.store.write_workflow_status(namespace, name, wanted)
        self._counted[key] = (version, time.monotonic(), pending)
        return pending
