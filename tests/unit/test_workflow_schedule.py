"""The slot planner of Workflow schedules (pure), the admission of schedules, the run a slot
starts, the history kept, and the NEXT / LAST columns of `kagent get workflows`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kagent.api.labels import SCHEDULE_LABEL, SCHEDULED_AT_ANNOTATION, WORKFLOW_LABEL
from kagent.api.workflow import WorkflowSchedule
from kagent.cli.resources import _schedule_times, table_rows
from kagent.webhook.validate import validate
from kagent.workflow.schedule import (
    MAX_COUNTED_MISSES,
    FinishedRun,
    ScheduleError,
    SlotPlan,
    parse_cron,
    plan_slots,
    rfc3339,
    runs_to_prune,
    scheduled_run_name,
)
from kagent.workflow.scheduler import Clock, scheduled_run


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def walk(cron: str, zone: str | None, start: str, count: int) -> list[str]:
    parsed = parse_cron(cron, zone)
    moment, slots = at(start), []
    for _ in range(count):
        moment = parsed.next_after(moment)
        slots.append(rfc3339(moment))
    return slots


# --- next slot: golden walks, daylight-saving edges ------------------------------------------


def test_every_minute_in_utc() -> None:
    assert walk("* * * * *", None, "2026-11-30T10:00:30Z", 3) == [
        "2026-11-30T10:01:00Z", "2026-11-30T10:02:00Z", "2026-11-30T10:03:00Z"]


def test_a_slot_exactly_now_is_not_next() -> None:
    assert walk("*/15 * * * *", "UTC", "2026-11-30T10:15:00Z", 1) == ["2026-11-30T10:30:00Z"]


def test_spring_forward_runs_a_missing_local_time_once_just_after_the_change() -> None:
    # Europe/Paris skips 02:00-03:00 on 2026-03-29: 02:30 does not exist that day.
    assert walk("30 2 * * *", "Europe/Paris", "2026-03-28T12:00:00Z", 3) == [
        "2026-03-29T01:00:00Z",  # 03:00 CEST, right after the gap
        "2026-03-30T00:30:00Z",  # 02:30 CEST
        "2026-03-31T00:30:00Z"]


def test_fall_back_runs_a_repeated_local_time_once() -> None:
    # 02:30 happens twice in Europe/Paris on 2026-10-25: the job at a fixed time runs once.
    assert walk("30 2 * * *", "Europe/Paris", "2026-10-24T12:00:00Z", 2) == [
        "2026-10-25T00:30:00Z",  # 02:30 CEST, the first pass
        "2026-10-26T01:30:00Z"]  # 02:30 CET


def test_inside_the_repeated_hour_the_next_slot_is_never_in_the_past() -> None:
    # At 01:10Z it is 02:10 CET, the second pass of the hour; today's 02:30 was at 00:30Z.
    assert walk("30 2 * * *", "Europe/Paris", "2026-10-25T01:10:00Z", 1) == ["2026-10-26T01:30:00Z"]


def test_an_hourly_wildcard_job_runs_in_both_passes_of_the_repeated_hour() -> None:
    assert walk("0 * * * *", "Europe/Paris", "2026-10-24T23:30:00Z", 4) == [
        "2026-10-25T00:00:00Z", "2026-10-25T01:00:00Z", "2026-10-25T02:00:00Z",
        "2026-10-25T03:00:00Z"]


def test_time_zone_shifts_the_slots() -> None:
    assert walk("0 9 * * MON-FRI", "America/New_York", "2026-11-27T00:00:00Z", 2) == [
        "2026-11-27T14:00:00Z", "2026-11-30T14:00:00Z"]  # a Friday, then Monday


def test_shorthands_read_as_cronjob_reads_them() -> None:
    assert parse_cron("@hourly").expression == "0 * * * *"
    assert parse_cron("@DAILY").expression == "0 0 * * *"
    assert walk("@weekly", None, "2026-11-30T10:00:00Z", 1) == ["2026-12-06T00:00:00Z"]


@pytest.mark.parametrize(("cron", "zone", "field", "words"), [
    ("61 * * * *", None, "cron", "Bad minute"),
    ("* * * *", None, "cron", "4 fields"),
    ("*/5 * * * * *", None, "cron", "6 fields"),
    ("@every 5m", None, "cron", "shorthand"),
    ("TZ=UTC * * * *", None, "cron", "timeZone"),
    ("* * 31 2 *", None, "cron", "day-of-month"),
    ("* * * * *", "Mars/Olympus", "timeZone", "unknown time zone"),
    ("* * * * *", "../../etc/passwd", "timeZone", "unknown time zone"),
])
def test_bad_cron_or_zone_names_the_field(cron: str, zone: str | None, field: str, words: str) -> None:
    with pytest.raises(ScheduleError) as raised:
        parse_cron(cron, zone)
    assert raised.value.field == field and words in raised.value.message


# --- planning: which slot to start -------------------------------------------------------------


EVERY_MINUTE = parse_cron("* * * * *")


def test_nothing_due_gives_only_the_next_slot() -> None:
    plan = plan_slots(EVERY_MINUTE, since=at("2026-11-30T10:00:00Z"), now=at("2026-11-30T10:00:40Z"))
    assert plan == SlotPlan(next=at("2026-11-30T10:01:00Z"))


def test_the_due_slot_is_started() -> None:
    plan = plan_slots(EVERY_MINUTE, since=at("2026-11-30T10:00:00Z"), now=at("2026-11-30T10:01:00.3Z"))
    assert plan == SlotPlan(start=at("2026-11-30T10:01:00Z"), next=at("2026-11-30T10:02:00Z"))


def test_after_downtime_only_the_latest_missed_slot_is_started() -> None:
    plan = plan_slots(EVERY_MINUTE, since=at("2026-11-30T10:00:00Z"), now=at("2026-11-30T10:05:10Z"))
    assert plan.start == at("2026-11-30T10:05:00Z") and plan.skipped == 4 and plan.missed is None


def test_a_long_downtime_is_counted_up_to_a_bound_and_costs_no_backlog() -> None:
    plan = plan_slots(EVERY_MINUTE, since=at("2026-01-01T00:00:00Z"), now=at("2026-11-30T10:05:10Z"))
    assert plan.start == at("2026-11-30T10:05:00Z")
    assert plan.skipped == MAX_COUNTED_MISSES + 1


def test_a_slot_past_its_starting_deadline_is_missed_not_started() -> None:
    plan = plan_slots(EVERY_MINUTE, since=at("2026-11-30T10:00:00Z"), now=at("2026-11-30T10:01:45Z"),
                      starting_deadline_seconds=30)
    assert plan.start is None and plan.missed == at("2026-11-30T10:01:00Z")
    within = plan_slots(EVERY_MINUTE, since=at("2026-11-30T10:00:00Z"), now=at("2026-11-30T10:01:20Z"),
                        starting_deadline_seconds=30)
    assert within.start == at("2026-11-30T10:01:00Z")


def test_a_missed_slot_once_recorded_is_not_reported_again() -> None:
    plan = plan_slots(EVERY_MINUTE, since=at("2026-11-30T10:01:00Z"), now=at("2026-11-30T10:01:50Z"),
                      starting_deadline_seconds=30)
    assert plan == SlotPlan(next=at("2026-11-30T10:02:00Z"))


def test_a_suspended_schedule_plans_nothing() -> None:
    assert plan_slots(EVERY_MINUTE, since=at("2026-11-30T10:00:00Z"), now=at("2026-11-30T11:00:00Z"),
                      suspend=True) == SlotPlan()


def test_the_latest_slot_across_fall_back_is_the_one_that_happened() -> None:
    nightly = parse_cron("30 2 * * *", "Europe/Paris")
    plan = plan_slots(nightly, since=at("2026-10-20T00:00:00Z"), now=at("2026-10-25T01:00:00Z"))
    assert plan.start == at("2026-10-25T00:30:00Z") and plan.skipped == 5  # the 20th to the 24th
    again = plan_slots(nightly, since=at("2026-10-25T00:30:00Z"), now=at("2026-10-25T01:45:00Z"))
    assert again.start is None and again.next == at("2026-10-26T01:30:00Z")


def test_a_rare_schedule_long_past_is_found() -> None:
    leap = parse_cron("0 12 29 2 *")
    plan = plan_slots(leap, since=at("2020-03-01T00:00:00Z"), now=at("2026-11-30T00:00:00Z"))
    assert plan.start == at("2024-02-29T12:00:00Z") and plan.next == at("2028-02-29T12:00:00Z")


# --- the run a slot starts ---------------------------------------------------------------------


def test_run_names_are_a_function_of_workflow_schedule_and_slot() -> None:
    slot = at("2026-11-30T10:05:00Z")
    name = scheduled_run_name("digest", "nightly", slot)
    assert name == f"digest-nightly-{int(slot.timestamp()) // 60}"
    assert scheduled_run_name("digest", "nightly", slot) == name
    assert scheduled_run_name("digest", "nightly", slot + timedelta(minutes=1)) != name


def test_run_names_of_long_workflow_names_stay_valid_and_distinct() -> None:
    slot = at("2026-11-30T10:05:00Z")
    one = scheduled_run_name("a" * 250, "s" * 40, slot)
    two = scheduled_run_name("a" * 249 + "b", "s" * 40, slot)
    assert len(one) <= 253 and len(two) <= 253 and one != two
    assert one[0].isalnum() and one[-1].isalnum()


def test_a_scheduled_run_is_labelled_owned_and_annotated() -> None:
    workflow = {"metadata": {"name": "digest", "namespace": "team", "uid": "u-1"}}
    schedule = WorkflowSchedule(name="nightly", cron="0 2 * * *", input={"topic": "news"})
    run = scheduled_run(workflow, schedule, at("2026-11-30T02:00:00Z"))
    meta = run["metadata"]
    assert meta["labels"][SCHEDULE_LABEL] == "nightly" and meta["labels"][WORKFLOW_LABEL] == "digest"
    assert meta["annotations"][SCHEDULED_AT_ANNOTATION] == "2026-11-30T02:00:00Z"
    assert meta["ownerReferences"][0]["uid"] == "u-1"
    assert run["spec"] == {"workflowRef": {"name": "digest"}, "input": {"topic": "news"}}


def test_history_keeps_the_newest_of_each_phase() -> None:
    runs = [FinishedRun(f"r{i}", "Succeeded" if i % 2 else "Failed", f"2026-11-30T10:0{i}:00Z")
            for i in range(8)]
    assert sorted(runs_to_prune(runs, keep_succeeded=2, keep_failed=1)) == ["r0", "r1", "r2", "r3", "r4"]
    assert runs_to_prune(runs, keep_succeeded=10, keep_failed=10) == []


# --- the test clock ----------------------------------------------------------------------------


def test_the_test_clock_runs_faster_from_its_origin() -> None:
    origin = datetime.now(UTC) - timedelta(seconds=10)
    clock = Clock.parse(f"{rfc3339(origin)}*30")
    assert clock.now() - origin >= timedelta(seconds=290)
    assert clock.real_seconds(60) == 2.0
    assert Clock.parse("").speed == 1.0
    with pytest.raises(ValueError):
        Clock.parse("2026-11-30T10:00:00Z*0.5")


# --- admission ---------------------------------------------------------------------------------


def workflow(schedules: list[dict[str, Any]], inputs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"steps": [{"name": "a", "agent": "writer", "input": "{{ input.topic }}"}],
                            "schedules": schedules}
    spec["input"] = inputs if inputs is not None else [
        {"name": "topic", "required": True}, {"name": "count", "type": "integer"},
        {"name": "tone", "enum": ["plain", "formal"], "default": "plain"}]
    return {"apiVersion": "kagent.dev/v1alpha1", "kind": "Workflow",
            "metadata": {"name": "digest", "namespace": "team"}, "spec": spec}


def errors_of(doc: dict[str, Any]) -> dict[str, str]:
    return {e.field: e.message for e in validate(doc)}


def test_a_good_schedule_is_admitted() -> None:
    assert errors_of(workflow([{"name": "nightly", "cron": "0 2 * * *", "timeZone": "Europe/Paris",
                                "input": {"topic": "news", "count": 3}}])) == {}


def test_bad_cron_and_zone_are_refused_naming_the_field() -> None:
    found = errors_of(workflow([{"name": "n", "cron": "0 25 * * *", "timeZone": "Europe/Atlantis",
                                 "input": {"topic": "x"}}]))
    assert "Bad hour" in found["spec.schedules[0].cron"]
    assert "Europe/Atlantis" in found["spec.schedules[0].timeZone"]


def test_input_not_matching_the_parameters_is_refused_naming_the_input() -> None:
    found = errors_of(workflow([{"name": "n", "cron": "@daily",
                                 "input": {"count": "many", "tone": "angry", "colour": "red"}}]))
    assert "no input named 'colour'" in found["spec.schedules[0].input.colour"]
    assert "not of type 'integer'" in found["spec.schedules[0].input.count"]
    assert "is not one of" in found["spec.schedules[0].input.tone"]
    assert "requires input topic" in found["spec.schedules[0].input.topic"]


def test_schedule_names_are_unique_and_bounded() -> None:
    found = errors_of(workflow([{"name": "n", "cron": "@daily", "input": {"topic": "a"}},
                                {"name": "n", "cron": "@hourly", "input": {"topic": "b"}}]))
    assert "another schedule" in found["spec.schedules[1].name"]
    assert any(f.startswith("spec.schedules.0.name") or "schedules" in f
               for f in errors_of(workflow([{"name": "x" * 41, "cron": "@daily"}])))


# --- kagent get workflows ----------------------------------------------------------------------


def test_get_workflows_shows_the_next_and_last_slot() -> None:
    now = at("2026-11-30T10:37:00Z")
    status = {"schedules": [
        {"name": "a", "nextScheduleTime": "2026-11-30T10:40:00Z", "lastScheduleTime": "2026-11-30T10:35:00Z"},
        {"name": "b", "nextScheduleTime": "2026-11-30T10:38:30Z"}]}
    assert _schedule_times(status, now) == ["in 90s", "2m ago"]
    assert _schedule_times({}, now) == ["-", "-"]
    columns, rows = table_rows("Workflow", [{"metadata": {"name": "w"}, "spec": {}, "status": status}],
                               False, False)
    headers = [c.header for c in columns]
    assert headers[headers.index("NEXT") + 1] == "LAST" and rows[0][headers.index("NEXT")].startswith("in ")
