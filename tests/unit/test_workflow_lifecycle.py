"""A run's life around its execution, against the in-memory store: waiting for agents,
concurrency policies, invalid and missing Workflows, cancel, deadlines and clean-up."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

from kagent.workflow.lifecycle import RUNNING_READ_SECONDS
from kagent.workflow.plan import PlanCache
from kagent.workflow.resolver import AgentNotReady
from kagent.workflow.state import parse_time
from tests.unit.test_workflow_engine import (
    RUNNING,
    Agents,
    MemoryStore,
    Resolver,
    WorkflowEngine,
    engine_of,
    run_of,
    workflow_of,
)


def status(store: MemoryStore, name: str = "r") -> dict[str, Any]:
    return store.runs[("ns", name)].get("status") or {}


async def never(message: str) -> str:
    await asyncio.sleep(30)
    return "never"


SLOW = {"steps": [{"name": "s", "agent": "slow"}]}


def now_text(offset: float = 0) -> str:
    return datetime.fromtimestamp(time.time() + offset, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_a_run_waits_for_its_agents_and_records_them_as_dependencies() -> None:
    class NotYet(Resolver):
        async def resolve(self, namespace: str, name: str) -> str:
            raise AgentNotReady(f'Agent "{name}" does not exist')

    recorded: dict[Any, Any] = {}
    store = MemoryStore([run_of(None)], [workflow_of(SLOW)])
    engine = WorkflowEngine(None, NotYet(), Agents({"slow": never}), store=store,
                            record_dependencies=lambda key, deps: recorded.update({key: deps}))
    after = await engine.reconcile_run("ns", "r")
    assert after is not None and 0 < after <= 6
    assert status(store) == {"phase": "Pending", "reason": "WaitingForAgent",
                             "message": 'Agent "slow" does not exist'}
    assert recorded == {("ns", "r"): {("Agent", "ns", "slow"), ("Workflow", "ns", "wf")}}
    assert store.events == [("Normal", "WaitingForAgent")]
    await engine.reconcile_run("ns", "r")  # nothing changed: no write, no event
    assert len(store.writes) == 1 and len(store.events) == 1
    engine.services.resolver = Resolver()  # the agent is Ready now
    await engine.reconcile_run("ns", "r")
    assert status(store)["phase"] == "Running"
    assert recorded == {("ns", "r"): set()}  # admitted: changes of its Workflow or agents no longer wake it
    await engine.shutdown()


async def test_queue_keeps_a_run_pending_until_a_slot_frees() -> None:
    spec = {**SLOW, "concurrency": {"limit": 1, "policy": "queue"}}
    store = MemoryStore([run_of(None, name="first", created="2026-01-01T00:00:00Z"),
                         run_of(None, name="second", created="2026-01-01T00:00:01Z")],
                        [workflow_of(spec)])
    woken: list[tuple[str, str]] = []
    engine = WorkflowEngine(None, Resolver(), Agents({"slow": never}), store=store,
                            requeue_run=lambda ns, name: woken.append((ns, name)))
    assert await engine.reconcile_run("ns", "second") is not None  # the older one goes first
    assert status(store, "second")["reason"] == "Queued"
    assert await engine.reconcile_run("ns", "first") is None
    assert status(store, "first")["phase"] == "Running"
    assert await engine.reconcile_run("ns", "second") is not None
    assert status(store, "second")["phase"] == "Pending"
    pending = await engine.reconcile_workflow("ns", "wf")
    assert pending == ["second"]
    assert store.workflows[("ns", "wf")]["status"]["running"] == 1
    store.runs[("ns", "first")]["spec"]["cancel"] = True
    first = engine.runs.executors[("ns", "first")]
    after = await engine.reconcile_run("ns", "first")  # a running run is read once in a while
    assert after is not None and 0 < after <= RUNNING_READ_SECONDS and first.running
    first.read_at -= RUNNING_READ_SECONDS  # that while has passed
    assert await engine.reconcile_run("ns", "first") is None
    assert first.task is not None
    await asyncio.wait_for(first.task, 5)
    await asyncio.sleep(0)  # its exit callback
    assert status(store, "first")["reason"] == "Cancelled"
    assert woken == [("ns", "second")]  # the slot is free: the queued run is woken at once
    assert await engine.reconcile_run("ns", "second") is None
    assert status(store, "second")["phase"] == "Running"
    await engine.shutdown()


async def test_reject_fails_the_excess_run_and_replace_stops_the_oldest() -> None:
    store = MemoryStore(
        [run_of(RUNNING, name="old", workflow="rej"), run_of(None, name="new", workflow="rej"),
         run_of(RUNNING, name="old2", workflow="rep"), run_of(None, name="new2", workflow="rep")],
        [workflow_of({**SLOW, "concurrency": {"limit": 1, "policy": "reject"}}, "rej"),
         workflow_of({**SLOW, "concurrency": {"limit": 1, "policy": "replace"}}, "rep")])
    agents = Agents({"slow": never})
    engine = engine_of(store, agents)
    for name in ("old", "old2"):
        await engine.reconcile_run("ns", name)  # resumed
    while len(agents.calls) < 2:  # both are in their step
        await asyncio.sleep(0.01)
    await engine.reconcile_run("ns", "new")
    assert status(store, "new")["phase"] == "Failed"
    assert status(store, "new")["reason"] == "ConcurrencyLimit"
    assert ("Warning", "ConcurrencyLimit") in store.events
    await engine.reconcile_run("ns", "new2")
    assert status(store, "old2")["reason"] == "Replaced"
    assert status(store, "old2")["steps"][0]["phase"] == "Failed"
    assert status(store, "new2")["phase"] == "Running"
    await engine.shutdown()


async def test_an_invalid_or_missing_workflow_is_reported_on_the_run() -> None:
    cyclic = {"steps": [{"name": "a", "agent": "x", "dependsOn": ["b"]},
                        {"name": "b", "agent": "x", "dependsOn": ["a"]}]}
    store = MemoryStore([run_of(None, name="bad"), run_of(None, name="lost", workflow="gone"),
                         run_of(RUNNING, name="orphan", workflow="gone")], [workflow_of(cyclic)])
    engine = engine_of(store, Agents({}))
    assert await engine.reconcile_run("ns", "bad") is None
    assert status(store, "bad")["reason"] == "InvalidWorkflow"
    assert "spec.steps[0].dependsOn: dependency cycle: a -> b -> a" in status(store, "bad")["message"]
    assert await engine.reconcile_run("ns", "lost") == 10.0
    assert status(store, "lost")["reason"] == "WorkflowNotFound"
    assert await engine.reconcile_run("ns", "orphan") is None
    assert status(store, "orphan")["phase"] == "Failed"
    await engine.reconcile_workflow("ns", "wf")
    accepted = store.workflows[("ns", "wf")]["status"]["conditions"][0]
    assert accepted["status"] == "False" and "dependency cycle" in accepted["message"]


async def test_cancel_and_deadline_end_a_run_that_never_started() -> None:
    store = MemoryStore([run_of(None, name="c"), run_of(None, name="late", created=now_text(-10))],
                        [workflow_of({**SLOW, "timeout": "5s"})])
    store.runs[("ns", "c")]["spec"]["cancel"] = True
    store.runs[("ns", "c")]["metadata"]["creationTimestamp"] = now_text()
    engine = engine_of(store, Agents({"slow": never}))
    await engine.reconcile_run("ns", "c")
    await engine.reconcile_run("ns", "late")
    assert (status(store, "c")["phase"], status(store, "c")["reason"]) == ("Failed", "Cancelled")
    assert status(store, "late")["reason"] == "Timeout" and "startedAt" not in status(store, "late")


async def test_finished_runs_are_deleted_after_their_ttl() -> None:
    finished = {"phase": "Succeeded", "finishedAt": now_text(-60)}
    recent = {"phase": "Succeeded", "finishedAt": now_text()}
    store = MemoryStore([run_of(finished, name="old"), run_of(recent, name="recent")],
                        [workflow_of({**SLOW, "ttlSecondsAfterFinished": 30})])
    engine = engine_of(store, Agents({}))
    assert await engine.reconcile_run("ns", "old") is None
    assert ("ns", "old") not in store.runs
    after = await engine.reconcile_run("ns", "recent")
    assert after is not None and 25 < after <= 31
    assert ("ns", "recent") in store.runs


def test_a_workflow_spec_is_planned_once_per_generation() -> None:
    plans = PlanCache(size=2)
    workflow = workflow_of(SLOW)
    first = plans.for_workflow(workflow)
    assert plans.for_workflow(workflow) is first
    changed = {**workflow, "metadata": {**workflow["metadata"], "generation": 2},
               "spec": {"steps": [{"name": "t", "agent": "slow"}]}}
    assert plans.for_workflow(changed).deps == {"t": []}
    invalid = workflow_of({"steps": [{"name": "a", "agent": "x", "dependsOn": ["zz"]}]}, "bad")
    for _ in range(2):
        try:
            plans.for_workflow(invalid)
        except ValueError as error:
            assert "no step named 'zz'" in str(error)
        else:
            raise AssertionError("an invalid spec must not plan")
    assert len(plans._plans) == 2  # bounded
    assert parse_time("2026-01-01T00:00:00Z") == 1767225600.0


async def test_a_run_that_finishes_here_is_cleaned_up_without_reading_its_workflow_again() -> None:
    class Counting(MemoryStore):
        workflow_reads = 0

        async def get_workflow(self, namespace: str, name: str) -> dict[str, Any] | None:
            self.workflow_reads += 1
            return await super().get_workflow(namespace, name)

    store = Counting([run_of(None)], [workflow_of({**SLOW, "ttlSecondsAfterFinished": 30})])
    requeued: list[tuple[str, str]] = []
    engine = WorkflowEngine(None, Resolver(), Agents({"slow": lambda m: "done"}), store=store,
                            requeue_run=lambda ns, name: requeued.append((ns, name)))
    await engine.reconcile_run("ns", "r")
    runner = engine.runs.executors[("ns", "r")]
    assert runner.task is not None
    await asyncio.wait_for(runner.task, 5)
    await asyncio.sleep(0)  # the task's exit callback
    assert requeued == [("ns", "r")] and not engine.runs.executors  # the slot is free
    reads = store.workflow_reads
    after = await engine.reconcile_run("ns", "r")
    assert after is not None and 25 < after <= 31
    assert store.workflow_reads == reads


async def test_a_cancel_is_seen_in_the_answer_to_the_next_status_write() -> None:
    store = MemoryStore([run_of(None)], [workflow_of(
        {"steps": [{"name": f"s{i}", "agent": "w"} for i in range(3)]})])

    def reply(message: str) -> str:
        if len(agents.calls) == 2:  # someone cancels while s1 runs
            store.runs[("ns", "r")]["spec"]["cancel"] = True
        return "ok"

    agents = Agents({"w": reply})
    engine = engine_of(store, agents)
    await engine.reconcile_run("ns", "r")
    runner = engine.runs.executors[("ns", "r")]
    assert runner.task is not None
    await asyncio.wait_for(runner.task, 5)  # no reconcile needed
    assert (status(store)["phase"], status(store)["reason"]) == ("Failed", "Cancelled")
    assert [c["id"] for c in agents.calls] == ["uid-s0-1", "uid-s1-1", "uid-s2-1"][:len(agents.calls)]
    assert len(agents.calls) <= 3 and status(store)["steps"][1]["phase"] == "Succeeded"
    assert all(s["phase"] != "Running" for s in status(store)["steps"])


async def test_a_burst_of_runs_shares_its_lists_and_never_exceeds_the_limit() -> None:
    class Counting(MemoryStore):
        lists = 0

        async def runs_of(self, namespace: str, workflow: str) -> list[Any]:
            self.lists += 1
            await asyncio.sleep(0.01)  # a list takes a while
            return await super().runs_of(namespace, workflow)

    names = [f"r{i:02d}" for i in range(20)]
    store = Counting([run_of(None, name=n, created=f"2026-01-01T00:00:{i:02d}Z")
                      for i, n in enumerate(names)],
                     [workflow_of({**SLOW, "concurrency": {"limit": 5, "policy": "queue"}})])
    engine = engine_of(store, Agents({"slow": never}))
    await asyncio.gather(*(engine.reconcile_run("ns", n) for n in names))
    phases = {n: status(store, n).get("phase") for n in names}
    assert [n for n in names if phases[n] == "Running"] == names[:5]  # the oldest, in order
    assert all(status(store, n)["reason"] == "Queued" for n in names[5:])
    assert store.lists <= 2
    await engine.shutdown()


async def test_a_run_finished_for_good_needs_no_further_look() -> None:
    store = MemoryStore([run_of(None)], [workflow_of(SLOW)])
    settled: list[tuple[str, str]] = []
    requeued: list[tuple[str, str]] = []
    engine = WorkflowEngine(None, Resolver(), Agents({"slow": lambda m: "done"}), store=store,
                            requeue_run=lambda ns, name: requeued.append((ns, name)),
                            run_settled=lambda ns, name: settled.append((ns, name)))
    await engine.reconcile_run("ns", "r")
    runner = engine.runs.executors[("ns", "r")]
    assert runner.task is not None
    await asyncio.wait_for(runner.task, 5)
    await asyncio.sleep(0)
    assert status(store)["phase"] == "Succeeded"
    assert settled == [("ns", "r")] and requeued == []  # no TTL: nothing more to do
