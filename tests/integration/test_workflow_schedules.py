"""Scheduled runs on a real control plane: the controller as processes (killed, failed over),
agent runtimes as processes behind the scripted model.

The schedules are real every-minute cron schedules; the controllers read them on the test clock
(``KAGENT_SCHEDULE_CLOCK``: the same origin for every controller, running 10 times faster), so a
minute's slot comes every six seconds and a failover spans a few slots.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import pytest
import yaml

from kagent.api.labels import SCHEDULE_LABEL, SCHEDULED_AT_ANNOTATION
from kagent.local.controller import ControllerProcess, remove_webhook_configurations
from kagent.local.controlplane import ControlPlane
from kagent.mockllm import MockLLM
from kagent.testing.runtime import RuntimeProcess
from kagent.workflow.schedule import parse_time, rfc3339, scheduled_run_name
from kagent.workflow.scheduler import Clock
from tests.helpers import wait_for
from tests.runtime_manifests import agent, model, secret

pytestmark = pytest.mark.integration

SPEED = 10
"""The test clock's speed: an every-minute schedule's slots come every 6 s."""
SLOT_SECONDS = 60 / SPEED

SCRIPT = {"rules": [
    {"name": "quick", "system_contains": "ROLE quick", "content": "done[{{last_user}}]"},
    {"name": "slow", "system_contains": "ROLE slow", "delay": 25, "content": "slow"},
]}
ROLES = ("quick", "slow")


@pytest.fixture(scope="module")
def llm() -> Iterator[MockLLM]:
    with MockLLM(SCRIPT) as server:
        yield server


@pytest.fixture(scope="module")
def runtimes(llm: MockLLM) -> Iterator[dict[str, RuntimeProcess]]:
    started: dict[str, RuntimeProcess] = {}
    try:
        for role in ROLES:
            docs = [agent(role, model("openai", llm.url), systemPrompt=f"ROLE {role}"), secret()]
            started[role] = RuntimeProcess(docs).start()
        yield started
    finally:
        for process in started.values():
            process.cleanup()


@pytest.fixture(scope="module")
def clock() -> str:
    """One clock for every controller of the module (an origin a little in the past)."""
    return f"{rfc3339(datetime.now(UTC))}*{SPEED}"


def controller(plane: ControlPlane, runtimes: dict[str, RuntimeProcess], clock: str, identity: str,
               webhook: bool = False) -> ControllerProcess:
    env = {"KAGENT_WORKFLOW_AGENT_URLS": json.dumps({n: r.url for n, r in runtimes.items()}),
           "KAGENT_SCHEDULE_CLOCK": clock}
    return ControllerProcess(plane, identity=identity, webhook=webhook, lease_seconds=3, env=env).start()


def namespace_with_agents(plane: ControlPlane, prefix: str) -> str:
    namespace = plane.create_namespace(prefix)
    docs = [{"apiVersion": "kagent.dev/v1alpha1", "kind": "Agent",
             "metadata": {"name": role, "namespace": namespace},
             "spec": {"model": {"provider": "openai", "name": "gpt-4o-mini"}, "systemPrompt": f"ROLE {role}"}}
            for role in ROLES]
    plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
    return namespace


def apply_workflow(plane: ControlPlane, namespace: str, name: str, spec: dict[str, Any],
                   check: bool = True) -> Any:
    doc = {"apiVersion": "kagent.dev/v1alpha1", "kind": "Workflow",
           "metadata": {"name": name, "namespace": namespace}, "spec": spec}
    return plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc), check=check)


def runs(plane: ControlPlane, namespace: str, schedule: str | None = None) -> list[dict[str, Any]]:
    selector = ["-l", f"{SCHEDULE_LABEL}={schedule}"] if schedule else []
    out = plane.kubectl("get", "workflowruns", "-n", namespace, *selector, "-o", "json").stdout
    return json.loads(out)["items"]


def workflow_status(plane: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    out = plane.kubectl("get", "workflow", name, "-n", namespace, "-o", "json").stdout
    return json.loads(out).get("status") or {}


def slots_of(found: list[dict[str, Any]]) -> list[datetime]:
    return [parse_time(r["metadata"]["annotations"][SCHEDULED_AT_ANNOTATION]) for r in found]  # type: ignore[misc]


def leader_of(*candidates: ControllerProcess) -> ControllerProcess | None:
    return next((c for c in candidates if c.is_leader()), None)


def test_every_minute_schedule_makes_one_run_per_slot_across_a_kill_and_a_failover(
        plane: ControlPlane, runtimes: dict[str, RuntimeProcess], clock: str) -> None:
    namespace = namespace_with_agents(plane, "sched")
    first = controller(plane, runtimes, clock, "sched-a")
    second = controller(plane, runtimes, clock, "sched-b")
    third: ControllerProcess | None = None
    try:
        leader = wait_for(lambda: leader_of(first, second), what="a leader")
        follower = second if leader is first else first
        apply_workflow(plane, namespace, "tick", {
            "input": [{"name": "topic", "required": True}],
            "steps": [{"name": "s", "agent": "quick", "input": "{{ input.topic }}"}],
            "schedules": [
                {"name": "every", "cron": "* * * * *", "input": {"topic": "tick"},
                 "successfulRunsHistoryLimit": 1000},
                {"name": "paused", "cron": "* * * * *", "input": {"topic": "never"}, "suspend": True},
            ]})
        wait_for(lambda: len(runs(plane, namespace, "every")) >= 4, timeout=90, what="four slots")

        leader.kill()  # a crash: no clean-up
        wait_for(follower.is_leader, timeout=30, what="the follower to take over")
        before = len(runs(plane, namespace, "every"))
        wait_for(lambda: len(runs(plane, namespace, "every")) >= before + 4, timeout=90,
                 what="slots after the kill")

        third = controller(plane, runtimes, clock, "sched-c")
        follower.stop()  # a clean hand-over to the new replica
        wait_for(third.is_leader, timeout=30, what="the third replica to lead")
        before = len(runs(plane, namespace, "every"))
        wait_for(lambda: len(runs(plane, namespace, "every")) >= before + 4, timeout=90,
                 what="slots after the failover")
        time.sleep(2 * SLOT_SECONDS)  # any duplicate a confused replica might make would show now

        found = runs(plane, namespace, "every")
        slots = slots_of(found)
        duplicates = [s for s, n in Counter(slots).items() if n > 1]
        assert not duplicates, f"slots with more than one run: {duplicates}"
        for run, slot in zip(found, slots, strict=True):
            assert slot.second == 0, "every slot is a whole minute of the schedule's clock"
            assert run["metadata"]["name"] == scheduled_run_name("tick", "every", slot)
            assert run["spec"]["input"] == {"topic": "tick"}
        ordered = sorted(slots)
        gaps = [(b - a).total_seconds() / 60 for a, b in pairwise(ordered)]
        # While a controller leads, every minute has its run; a slot or two may pass during a
        # failover (only the latest missed slot is started then: no backlog).
        assert sum(1 for g in gaps if g != 1) <= 2, gaps
        assert max(gaps) <= 6, gaps
        status = {s["name"]: s for s in workflow_status(plane, namespace, "tick")["schedules"]}
        assert status["every"]["lastScheduleTime"] == rfc3339(ordered[-1]) or (
            parse_time(status["every"]["lastScheduleTime"]) > ordered[-1])
        assert status["every"]["nextScheduleTime"] > status["every"]["lastScheduleTime"]

        # The suspended schedule started nothing and shows no next slot.
        assert runs(plane, namespace, "paused") == []
        assert "nextScheduleTime" not in status["paused"] and "lastScheduleTime" not in status["paused"]

        # Runs finish like any other run.
        wait_for(lambda: any((r.get("status") or {}).get("phase") == "Succeeded"
                             for r in runs(plane, namespace, "every")), what="a scheduled run to succeed")
    finally:
        for process in (first, second, third):
            if process is not None:
                process.stop()


def test_concurrency_reject_applies_to_scheduled_runs_and_history_is_pruned(
        plane: ControlPlane, runtimes: dict[str, RuntimeProcess], clock: str) -> None:
    namespace = namespace_with_agents(plane, "sched-reject")
    process = controller(plane, runtimes, clock, "sched-reject")
    try:
        wait_for(process.is_leader, what="leadership")
        apply_workflow(plane, namespace, "busy", {
            "concurrency": {"limit": 1, "policy": "reject"},
            "steps": [{"name": "s", "agent": "slow", "input": "work"}],
            "schedules": [{"name": "often", "cron": "* * * * *", "failedRunsHistoryLimit": 2}]})

        def phases() -> Counter[str]:
            return Counter((r.get("status") or {}).get("reason") or (r.get("status") or {}).get("phase")
                           for r in runs(plane, namespace, "often"))

        wait_for(lambda: phases()["ConcurrencyLimit"] >= 2, timeout=90, what="rejected scheduled runs")
        running = [r for r in runs(plane, namespace, "often") if (r.get("status") or {}).get("phase") == "Running"]
        assert len(running) == 1, "the first scheduled run runs; the next ones are rejected"

        # Slots keep coming; the rejected (Failed) ones beyond the limit are deleted. The newest
        # run is always kept as the record of its slot, so at most limit + 1 remain.
        first_slot = min(slots_of(runs(plane, namespace, "often")))
        def last_slot() -> datetime:
            schedules = workflow_status(plane, namespace, "busy").get("schedules") or [{}]
            return parse_time(schedules[0].get("lastScheduleTime")) or first_slot

        wait_for(lambda: last_slot() >= first_slot + timedelta(minutes=6), timeout=90,
                 what="six more slots")
        time.sleep(SLOT_SECONDS)
        failed = [r for r in runs(plane, namespace, "often") if (r.get("status") or {}).get("phase") == "Failed"]
        assert all(r["status"]["reason"] == "ConcurrencyLimit" for r in failed)
        assert len(failed) <= 3, [r["metadata"]["name"] for r in failed]
        events = plane.kubectl("get", "events", "-n", namespace, "--field-selector",
                               "involvedObject.kind=Workflow,reason=ScheduledRun", "-o", "name").stdout
        assert events.strip(), "each started run is recorded as an Event on the Workflow"
    finally:
        process.stop()


def test_admission_refuses_bad_schedules_a_late_slot_is_skipped_and_get_shows_next_and_last(
        plane: ControlPlane, runtimes: dict[str, RuntimeProcess], clock: str) -> None:
    namespace = namespace_with_agents(plane, "sched-admit")
    process = controller(plane, runtimes, clock, "sched-admit", webhook=True)
    try:
        wait_for(process.is_leader, what="leadership")
        steps = [{"name": "s", "agent": "quick", "input": "{{ input.topic }}"}]
        inputs = [{"name": "topic", "required": True}]
        refused = apply_workflow(plane, namespace, "bad", {
            "input": inputs, "steps": steps,
            "schedules": [{"name": "hourly", "cron": "0 25 * * *", "timeZone": "Europe/Atlantis",
                           "input": {"topic": "x"}}]}, check=False)
        assert refused.returncode != 0
        assert "spec.schedules[0].cron" in refused.stderr and "spec.schedules[0].timeZone" in refused.stderr
        refused = apply_workflow(plane, namespace, "bad", {
            "input": inputs, "steps": steps,
            "schedules": [{"name": "hourly", "cron": "@hourly", "input": {"subject": "x"}}]}, check=False)
        assert refused.returncode != 0
        assert "spec.schedules[0].input.subject" in refused.stderr
        assert "spec.schedules[0].input.topic" in refused.stderr

        apply_workflow(plane, namespace, "good", {
            "input": inputs, "steps": steps,
            "schedules": [{"name": "hourly", "cron": "* * * * *", "input": {"topic": "x"}}]})
        wait_for(lambda: runs(plane, namespace, "hourly"), timeout=30, what="a scheduled run")
        # A slot not started within its starting deadline is skipped with an Event. The
        # controller looks 0.2 s (real) after each slot, two schedule-seconds on this clock,
        # so a one-second deadline is always missed: no run, a MissedSchedule Event, the slot
        # recorded as missed (and reported once). Created away from a slot: a Workflow created
        # within a schedule-second after one would have it start at its first reconcile.
        schedule_clock = Clock.parse(clock)
        wait_for(lambda: 15 <= schedule_clock.now().second <= 40, timeout=10, interval=0.05,
                 what="the middle of a schedule minute")
        apply_workflow(plane, namespace, "late", {
            "input": inputs, "steps": steps,
            "schedules": [{"name": "too-late", "cron": "* * * * *", "input": {"topic": "x"},
                           "startingDeadlineSeconds": 1}]})

        def missed() -> str | None:
            schedules = workflow_status(plane, namespace, "late").get("schedules") or [{}]
            return schedules[0].get("lastMissedTime")

        first_missed = wait_for(missed, timeout=30, what="a missed slot")
        wait_for(lambda: missed() != first_missed, timeout=30, what="the next missed slot")
        assert runs(plane, namespace, "too-late") == []
        events = json.loads(plane.kubectl("get", "events", "-n", namespace, "--field-selector",
                                          "involvedObject.name=late,reason=MissedSchedule",
                                          "-o", "json").stdout)["items"]
        assert events and "startingDeadlineSeconds" in events[0]["message"]
        assert len({e["message"] for e in events}) == len(events), "each missed slot is reported once"

        env = {**os.environ, "KUBECONFIG": str(plane.kubeconfig), "COLUMNS": "200"}
        table = subprocess.run([sys.executable, "-m", "kagent", "get", "workflows", "-n", namespace],
                               capture_output=True, text=True, timeout=120, check=True, env=env).stdout
        header, row = table.splitlines()[:2]
        assert "NEXT" in header and "LAST" in header
        assert "in " in row and " ago" in row
    finally:
        process.stop()
        remove_webhook_configurations(plane)
