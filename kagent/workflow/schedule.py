"""Cron schedules of a Workflow, as pure decisions: which slot to start now, which was missed,
when the next one is, what a scheduled run is called and which old runs to delete.

Cron expressions are read by ``cronsim`` (five fields, Debian cron's rules, including its
daylight-saving behaviour: a local time that does not exist runs once just after the change, one
that happens twice runs once) in the schedule's IANA time zone (``zoneinfo``). Every time that
leaves this module is an aware UTC ``datetime``.

A scheduled run's name is a function of (workflow, schedule, slot), so that the API server, not
the controller's memory, decides whether a slot already has its run: a second create of the same
slot — after a restart, on a new leader, or from a status read a moment stale — gets
AlreadyExists.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
"""The shorthands a Kubernetes CronJob accepts."""

MAX_COUNTED_MISSES = 100
"""Missed slots are counted (for the Event) up to this many; past it the message says "over"."""
MAX_NAME = 253
MAX_STEPS = 100_000
"""Bound on any walk over slots (a minute-by-minute walk over about ten weeks)."""
LOOKBACK = (timedelta(hours=1), timedelta(days=1), timedelta(days=32), timedelta(days=367),
            timedelta(days=366 * 8))
"""How far back the latest due slot is looked for, widening; a schedule whose last slot is
older than the widest (none in eight years) is treated as having none due."""


class ScheduleError(ValueError):
    """A cron expression or time zone that cannot be used; ``field`` is the schedule's field
    at fault (cron or timeZone)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Cron:
    """A checked cron expression in its time zone."""

    expression: str
    zone: tzinfo

    def next_after(self, moment: datetime) -> datetime:
        """The first slot strictly after ``moment`` (UTC)."""
        slots = CronSim(self.expression, moment.astimezone(self.zone))
        for _ in range(MAX_STEPS):
            slot = _utc(next(slots))
            # In the repeated hour of a daylight-saving change cronsim reads local wall time
            # and may answer the hour's first pass, which is before ``moment``: step on.
            if slot > moment:
                return slot
        raise ScheduleError("cron", f"{self.expression!r}: no slot after {rfc3339(moment)}")

    def latest_between(self, after: datetime, moment: datetime) -> datetime | None:
        """The last slot in (after, moment], or None. Walks forward (cronsim's reverse walk
        misreads the repeated hour of a daylight-saving change) from a point shortly before
        ``moment``, widened until a slot is found, so a long downtime costs no long walk."""
        for window in LOOKBACK:
            start = max(after, moment - window)
            slot = self.next_after(start)
            if slot <= moment:
                for _ in range(MAX_STEPS):
                    following = self.next_after(slot)
                    if following > moment:
                        return slot
                    slot = following
                raise ScheduleError("cron", f"{self.expression!r}: too many slots to walk")
            if start == after:
                return None
        return None


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


def parse_cron(expression: str, time_zone: str | None = None) -> Cron:
    """The schedule's cron expression and time zone, checked; raises ScheduleError."""
    text = " ".join(expression.split())
    text = MACROS.get(text.lower(), text)
    if text.startswith("@"):
        raise ScheduleError("cron", f"unknown shorthand {expression!r}: use one of "
                                    f"{', '.join(MACROS)}")
    fields = text.split(" ")
    if len(fields) != 5:
        raise ScheduleError("cron", f"{expression!r} has {len(fields)} fields; give five: minute "
                                    "hour day-of-month month day-of-week (e.g. '*/15 * * * *')")
    if any(f.upper().startswith(("TZ=", "CRON_TZ=")) for f in fields):
        raise ScheduleError("cron", "give the time zone in timeZone, not in the expression")
    zone = parse_time_zone(time_zone)
    try:
        CronSim(text, datetime(2000, 1, 1, tzinfo=UTC))
    except CronSimError as error:
        raise ScheduleError("cron", f"{expression!r} is not a valid cron expression: {error}") from None
    return Cron(text, zone)


def parse_time_zone(name: str | None) -> tzinfo:
    """An IANA time zone (UTC when none is given); raises ScheduleError."""
    if name is None or name == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError("timeZone", f"unknown time zone {name!r}: give an IANA name such as "
                                        "UTC or Europe/Paris") from None


@dataclass(frozen=True)
class SlotPlan:
    """What one schedule asks for at one moment."""

    start: datetime | None = None
    """The slot to start a run for now (the latest one due; earlier ones are never started)."""
    missed: datetime | None = None
    """The latest due slot, not started: its starting deadline has passed."""
    skipped: int = 0
    """Earlier due slots passed over without a run (at most MAX_COUNTED_MISSES + 1)."""
    next: datetime | None = None
    """The next slot after now (None while suspended)."""


def plan_slots(cron: Cron, *, since: datetime, now: datetime, suspend: bool = False,
               starting_deadline_seconds: int | None = None) -> SlotPlan:
    """The decision for a schedule whose slots up to ``since`` are handled (started or missed).

    Like a Kubernetes CronJob: after downtime only the latest due slot is started — never a
    backlog — and only if it is not older than the starting deadline; a suspended schedule
    starts nothing.
    """
    if suspend:
        return SlotPlan()
    upcoming = cron.next_after(now)
    latest = cron.latest_between(since, now)
    if latest is None:
        return SlotPlan(next=upcoming)
    skipped = _count_between(cron, since, latest)
    if starting_deadline_seconds is not None and (now - latest).total_seconds() > starting_deadline_seconds:
        return SlotPlan(missed=latest, skipped=skipped, next=upcoming)
    return SlotPlan(start=latest, skipped=skipped, next=upcoming)


def _count_between(cron: Cron, after: datetime, before: datetime) -> int:
    """Slots strictly between the two moments, counted up to one past MAX_COUNTED_MISSES."""
    count = 0
    moment = cron.next_after(after)
    while moment < before and count <= MAX_COUNTED_MISSES:
        count += 1
        moment = cron.next_after(moment)
    return count


def scheduled_run_name(workflow: str, schedule: str, slot: datetime) -> str:
    """``<workflow>-<schedule>-<minutes since the epoch>`` (a CronJob's Job naming), shortened
    with a digest of the workflow's name when that would pass 253 characters."""
    suffix = f"-{schedule}-{int(slot.timestamp()) // 60}"
    if len(workflow) + len(suffix) <= MAX_NAME:
        return workflow + suffix
    digest = hashlib.sha256(workflow.encode()).hexdigest()[:10]
    head = workflow[:MAX_NAME - len(suffix) - len(digest) - 1].rstrip("-.")
    return f"{head}-{digest}{suffix}"


def rfc3339(moment: datetime) -> str:
    """A UTC moment as Kubernetes writes timestamps."""
    return _utc(moment).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class FinishedRun:
    name: str
    phase: str
    slot: str
    """The slot the run was started for (RFC 3339), or its creation time."""


def runs_to_prune(runs: Iterable[FinishedRun], keep_succeeded: int, keep_failed: int) -> list[str]:
    """The finished runs past the history limits, oldest slots first deleted (pure)."""
    doomed: list[str] = []
    for phase, keep in (("Succeeded", keep_succeeded), ("Failed", keep_failed)):
        finished = sorted((r for r in runs if r.phase == phase), key=lambda r: (r.slot, r.name),
                          reverse=True)
        doomed += [r.name for r in finished[keep:]]
    return doomed
