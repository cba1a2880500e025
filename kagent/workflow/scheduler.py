"""Starting a Workflow's scheduled runs: the I/O shell around :mod:`kagent.workflow.schedule`.

Level-based, like the rest of the engine: each look at a Workflow plans every schedule from its
status (the last slot handled) and the clock, creates the run of the slot due — named from
(workflow, schedule, slot), so the API server refuses a second one whoever asks — records the
slot in the Workflow's status, deletes finished runs past the history limits, and says when the
next slot is, for the controller to look again then. A started run is an ordinary WorkflowRun:
the Workflow's concurrency policy admits, queues, rejects or replaces it like any other.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError

from kagent.api.base import API_VERSION
from kagent.api.labels import (
    MANAGED_BY_LABEL,
    MANAGER,
    SCHEDULE_LABEL,
    SCHEDULED_AT_ANNOTATION,
    WORKFLOW_LABEL,
)
from kagent.api.workflow import ScheduleStatus, WorkflowSchedule, WorkflowSpec, WorkflowStatus
from kagent.kube import KAGENT_RESOURCES
from kagent.kube.events import post_event
from kagent.workflow.schedule import (
    MAX_COUNTED_MISSES,
    FinishedRun,
    ScheduleError,
    SlotPlan,
    parse_cron,
    parse_time,
    plan_slots,
    rfc3339,
    runs_to_prune,
    scheduled_run_name,
)
from kagent.workflow.store import RunStore

log = logging.getLogger("kagent.workflow")

WAKE_MARGIN = 0.2
"""Seconds after a slot the controller looks again, so the clock has surely passed it."""


@dataclass(frozen=True)
class Clock:
    """The schedules' clock: the wall clock, or — for tests only — one running ``speed`` times
    faster from ``origin`` (every controller given the same origin and speed agrees on it), so
    an every-minute schedule can be watched over many slots in seconds."""

    origin: datetime | None = None
    speed: float = 1.0

    def now(self) -> datetime:
        real = datetime.now(UTC)
        if self.origin is None or self.speed == 1.0:
            return real
        return self.origin + (real - self.origin) * self.speed

    def real_seconds(self, schedule_seconds: float) -> float:
        """How long to wait for this much schedule time to pass."""
        return schedule_seconds / self.speed

    @classmethod
    def parse(cls, text: str | None) -> Clock:
        """``ORIGIN*SPEED`` (e.g. ``2026-11-30T10:00:00Z*20``); empty: the wall clock."""
        if not text:
            return cls()
        origin, _, speed = text.partition("*")
        moment = parse_time(origin.strip())
        factor = float(speed or 1)
        if moment is None or not 1.0 <= factor <= 3600.0:
            raise ValueError(f"a schedule clock is ORIGIN*SPEED with a speed from 1 to 3600, not {text!r}")
        return cls(moment, factor)


def scheduled_run(workflow: dict[str, Any], schedule: WorkflowSchedule, slot: datetime) -> dict[str, Any]:
    """The WorkflowRun a schedule starts for a slot (pure): owned by its Workflow (deleted with
    it), labelled with the workflow and schedule, annotated with the slot."""
    meta = workflow["metadata"]
    name = scheduled_run_name(meta["name"], schedule.name, slot)
    spec: dict[str, Any] = {"workflowRef": {"name": meta["name"]}}
    if schedule.input:
        spec["input"] = dict(schedule.input)
    return {
        "apiVersion": API_VERSION, "kind": "WorkflowRun",
        "metadata": {
            "name": name, "namespace": meta["namespace"],
            "labels": {WORKFLOW_LABEL: meta["name"], SCHEDULE_LABEL: schedule.name,
                       MANAGED_BY_LABEL: MANAGER},
            "annotations": {SCHEDULED_AT_ANNOTATION: rfc3339(slot)},
            "ownerReferences": [{"apiVersion": API_VERSION, "kind": "Workflow", "name": meta["name"],
                                 "uid": meta["uid"], "controller": True}],
        },
        "spec": spec,
    }


def missed_message(missed: datetime, schedule: WorkflowSchedule) -> str:
    return (f"schedule {schedule.name}: the slot {rfc3339(missed)} was not started within "
            f"startingDeadlineSeconds ({schedule.starting_deadline_seconds}s) and is skipped")


def skipped_message(plan: SlotPlan) -> str:
    count = f"over {MAX_COUNTED_MISSES}" if plan.skipped > MAX_COUNTED_MISSES else str(plan.skipped)
    return f"; {count} earlier slot(s) passed without a run (only the latest missed slot is started)"


class Scheduler:
    """Starts the scheduled runs of the Workflows of the current leader."""

    def __init__(self, client: AsyncClient, store: RunStore, clock: Clock | None = None) -> None:
        self.client = client
        self.store = store
        self.clock = clock or Clock()
        self.run_type = KAGENT_RESOURCES["WorkflowRun"]

    async def reconcile(self, namespace: str, name: str) -> float | None:
        """Start what is due; seconds (real time) until the next slot of any schedule, if any."""
        workflow = await self.store.get_workflow(namespace, name)
        if workflow is None or workflow["metadata"].get("deletionTimestamp"):
            return None
        status = workflow.get("status") or {}
        if not (workflow.get("spec") or {}).get("schedules") and not status.get("schedules"):
            return None  # the common case, without validating the spec again
        try:
            spec = WorkflowSpec.model_validate(workflow.get("spec") or {})
        except ValueError:
            return None  # reported on the Workflow's Accepted condition
        previous = {s.name: s for s in (ScheduleStatus.model_validate(raw)
                                        for raw in status.get("schedules") or [])}
        if not spec.schedules:
            if previous:
                await self.store.write_workflow_status(namespace, name, WorkflowStatus(schedules=None))
            return None
        now = self.clock.now()
        created_at = parse_time(workflow["metadata"].get("creationTimestamp")) or now
        wanted: list[ScheduleStatus] = []
        soonest: datetime | None = None
        failure: Exception | None = None
        for schedule in spec.schedules:
            old = previous.get(schedule.name) or ScheduleStatus(name=schedule.name)
            try:
                entry = await self._schedule(workflow, schedule, old, created_at, now)
            except ScheduleError as error:  # admission refuses these; an old object may have one
                log.warning("Workflow %s/%s schedule %s: %s", namespace, name, schedule.name, error)
                entry = old.model_copy(update={"next_schedule_time": None})
            except ApiError as error:
                failure = failure or error
                entry = old
            wanted.append(entry)
            upcoming = parse_time(entry.next_schedule_time)
            if upcoming is not None and (soonest is None or upcoming < soonest):
                soonest = upcoming
        if [s.to_wire() for s in wanted] != [s.to_wire() for s in previous.values()]:
            await self.store.write_workflow_status(namespace, name, WorkflowStatus(schedules=wanted))
        if failure is not None:
            raise failure  # the work queue retries with backoff
        if soonest is None:
            return None
        return max(self.clock.real_seconds((soonest - now).total_seconds()), 0.0) + WAKE_MARGIN

    async def _schedule(self, workflow: dict[str, Any], schedule: WorkflowSchedule,
                        old: ScheduleStatus, created_at: datetime, now: datetime) -> ScheduleStatus:
        cron = parse_cron(schedule.cron, schedule.time_zone)
        handled = [t for t in (parse_time(old.last_schedule_time), parse_time(old.last_missed_time),
                               created_at) if t is not None]
        plan = plan_slots(cron, since=max(handled), now=now, suspend=schedule.suspend,
                          starting_deadline_seconds=schedule.starting_deadline_seconds)
        entry = old.model_copy(update={"next_schedule_time": rfc3339(plan.next) if plan.next else None})
        if plan.missed is not None:
            await post_event(self.client, self._involved(workflow), "Warning", "MissedSchedule",
                             missed_message(plan.missed, schedule) + (skipped_message(plan) if plan.skipped else ""))
            entry.last_missed_time = rfc3339(plan.missed)
        if plan.start is not None:
            body = scheduled_run(workflow, schedule, plan.start)
            run = body["metadata"]["name"]
            try:
                created = await self._create(body)
            except ApiError as error:  # refused (a quota, an admission policy): say why, retry
                await post_event(self.client, self._involved(workflow), "Warning", "ScheduleFailed",
                                 f"schedule {schedule.name} could not start run {run}: "
                                 f"{error.status.message or error}")
                raise
            if created:
                message = f"schedule {schedule.name} started run {run} for {rfc3339(plan.start)}"
                await post_event(self.client, self._involved(workflow), "Normal", "ScheduledRun",
                                 message + (skipped_message(plan) if plan.skipped else ""))
            entry.last_schedule_time = rfc3339(plan.start)
            entry.last_run = run
        await self._prune(workflow, schedule, entry.last_run)
        return entry

    async def _create(self, body: dict[str, Any]) -> bool:
        """Create the run; False when the slot's run exists already (made by this or an
        earlier leader)."""
        try:
            await self.client.create(self.run_type(body))
        except ApiError as error:
            if error.status.code == 409:
                return False
            raise
        return True

    async def _prune(self, workflow: dict[str, Any], schedule: WorkflowSchedule, newest: str | None) -> None:
        """Delete this schedule's finished runs past its history limits. Only runs this
        Workflow owns are considered, and the newest slot's run is always kept: it is the proof
        that its slot was started."""
        meta = workflow["metadata"]
        finished: list[FinishedRun] = []
        async for obj in self.client.list(self.run_type, namespace=meta["namespace"],
                                          labels={WORKFLOW_LABEL: meta["name"], SCHEDULE_LABEL: schedule.name}):
            raw = obj.to_dict()
            run_meta = raw["metadata"]
            owned = any(o.get("uid") == meta["uid"] for o in run_meta.get("ownerReferences") or [])
            phase = (raw.get("status") or {}).get("phase")
            if not owned or phase not in ("Succeeded", "Failed"):
                continue
            slot = (run_meta.get("annotations") or {}).get(SCHEDULED_AT_ANNOTATION) or run_meta.get(
                "creationTimestamp", "")
            finished.append(FinishedRun(run_meta["name"], phase, slot))
        doomed = runs_to_prune(finished, schedule.successful_runs_history_limit,
                               schedule.failed_runs_history_limit)
        for name in (n for n in doomed if n != newest):
            try:
                await self.client.delete(self.run_type, name, namespace=meta["namespace"])
            except ApiError as error:
                if error.status.code != 404:
                    raise

    @staticmethod
    def _involved(workflow: dict[str, Any]) -> dict[str, Any]:
        meta = workflow["metadata"]
        return {"apiVersion": API_VERSION, "kind": "Workflow",
                "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta.get("uid"),
                             "resourceVersion": meta.get("resourceVersion")}}
