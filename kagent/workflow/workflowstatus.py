"""A Workflow's status: whether its spec is valid and its agents exist (the Accepted condition)
and how many of its runs are running and pending. Computed by a pure function, written only when
it changed."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from kagent.api.base import Condition, ConditionStatus
from kagent.api.workflow import WorkflowStatus
from kagent.kube.conditions import now_rfc3339, transitions
from kagent.kube.reconcile import Transition
from kagent.workflow import metrics
from kagent.workflow.plan import PlanCache
from kagent.workflow.store import RunStore, RunSummary

VALID: tuple[ConditionStatus, str, str] = ("True", "Valid", "the workflow is valid")


def missing_agents_message(missing: list[str]) -> str:
    names = ", ".join(f'"{n}"' for n in missing)
    verb = "does" if len(missing) == 1 else "do"
    return (f"Agent{'s' if len(missing) > 1 else ''} {names} {verb} not exist; runs wait for "
            f"{'it' if len(missing) == 1 else 'them'}")


def accepted_condition(previous: list[Condition] | None, error: str | None,
                       generation: int | None, now: str,
                       missing: list[str] | None = None) -> Condition:
    """The Accepted condition: False when the spec is invalid (reason Invalid) or an agent it
    calls does not exist (reason AgentNotFound, naming it). Its transition time moves only when
    its status changes."""
    invalid: tuple[ConditionStatus, str, str] | None = None
    if error is not None:
        invalid = ("False", "Invalid", error)
    elif missing:
        invalid = ("False", "AgentNotFound", missing_agents_message(missing))
    status, reason, message = invalid or VALID
    old = next((c for c in previous or [] if c.type == "Accepted"), None)
    since = old.last_transition_time if old is not None and old.status == status else None
    return Condition(type="Accepted", status=status, reason=reason, message=message,
                     observed_generation=generation, last_transition_time=since or now)


def workflow_status(previous: WorkflowStatus | None, generation: int | None, error: str | None,
                    runs: list[RunSummary], now: str,
                    missing: list[str] | None = None) -> WorkflowStatus:
    """The status a Workflow should have; other controllers' conditions are kept."""
    conditions = [c for c in (previous.conditions if previous else None) or [] if c.type != "Accepted"]
    accepted = accepted_condition(previous.conditions if previous else None, error, generation, now,
                                  missing)
    return WorkflowStatus(
        observed_generation=generation,
        running=sum(r.phase == "Running" for r in runs),
        pending=len(pending_runs(runs)),
        conditions=[*conditions, accepted],
    )


def pending_runs(runs: list[RunSummary]) -> list[str]:
    return [r.name for r in runs if r.phase in (None, "Pending")]


@dataclass(frozen=True)
class WorkflowOutcome:
    """What reconciling a Workflow learned: its pending runs (to look at again: a slot may have
    freed up), the agents it calls (a change to one looks at it again) and the changes of its
    conditions worth an Event."""

    pending: list[str] = field(default_factory=list)
    agents: frozenset[str] = frozenset()
    transitions: tuple[Transition, ...] = ()


class WorkflowStatusReconciler:
    """Writes a Workflow's status when it changed. Its own write comes back as a watch event on
    the Workflow; answering that needs no new count of the runs unless a run changed since
    (the engine says so through :meth:`runs_changed`), so it is answered from what was just
    written. After ``ECHO_SECONDS`` the runs are always counted again."""

    ECHO_SECONDS = 10.0

    def __init__(self, store: RunStore, plans: PlanCache,
                 record_agents: Callable[[str, str, set[str]], None] | None = None) -> None:
        self.store = store
        self.plans = plans
        self.record_agents = record_agents or (lambda namespace, name, agents: None)
        """Told the agents a Workflow calls, so an Agent's change looks at the Workflow again."""
        self._counted: dict[tuple[str, str], tuple[str | None, float, list[str], list[str]]] = {}
        self._changed: set[tuple[str, str]] = set()

    def runs_changed(self, namespace: str, name: str) -> None:
        self._changed.add((namespace, name))

    async def reconcile(self, namespace: str, name: str) -> WorkflowOutcome:
        """Count the Workflow's running and pending runs into its status and check that its
        agents exist."""
        key = (namespace, name)
        workflow = await self.store.get_workflow(namespace, name)
        if workflow is None:
            self._counted.pop(key, None)
            self._changed.discard(key)
            self.record_agents(namespace, name, set())
            return WorkflowOutcome()
        error = None
        agents: list[str] = []
        try:
            agents = self.plans.for_workflow(workflow).agents
        except ValueError as invalid:
            error = str(invalid)
        self.record_agents(namespace, name, set(agents))
        existing = await self.store.agent_names(namespace) if agents else set()
        missing = [] if existing is None else [a for a in agents if a not in existing]
        version = workflow["metadata"].get("resourceVersion")
        counted = self._counted.get(key)
        if (counted is not None and key not in self._changed and version is not None
                and counted[0] == version and counted[3] == missing
                and time.monotonic() - counted[1] < self.ECHO_SECONDS):
            return WorkflowOutcome(list(counted[2]), frozenset(agents))
        self._changed.discard(key)
        runs = await self.store.runs_of(namespace, name)
        previous = WorkflowStatus.model_validate(workflow["status"]) if workflow.get("status") else None
        wanted = workflow_status(previous, workflow["metadata"].get("generation"), error, runs,
                                 now_rfc3339(), missing)
        pending = pending_runs(runs)
        metrics.QUEUE_DEPTH.labels(namespace, name).set(len(pending))
        changes: tuple[Transition, ...] = ()
        # The schedules' part of the status is the scheduler's (kagent.workflow.scheduler).
        if previous is None or previous.model_copy(update={"schedules": None}).to_wire() != wanted.to_wire():
            version = await self.store.write_workflow_status(namespace, name, wanted)
            changes = transitions(previous.conditions if previous else None, wanted.conditions)
        self._counted[key] = (version, time.monotonic(), pending, missing)
        return WorkflowOutcome(pending, frozenset(agents), changes)
