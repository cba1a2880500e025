"""The pure parts of durable tasks and the request guard: listing and paging a caller's tasks,
the stored-task size bound, per-caller keys, idempotency claims, the backend health probe, the
agent-call chain and the request body limit."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from a2a.types import ListTasksRequest, Message, Part, Task, TaskState, TaskStatus
from pydantic_ai.exceptions import ToolFailed
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from kagent.runtime.caller import Caller, reset_caller, set_caller
from kagent.runtime.context import RuntimeContext
from kagent.runtime.guard import RequestGuard
from kagent.runtime.memory import base as memory_base
from kagent.runtime.memory.base import BackendHealth, BackendUnavailable, caller_scoped
from kagent.runtime.memory.inmemory import InMemorySessionStore
from kagent.runtime.memory.tasks import (
    CUT_NOTE,
    DurableTaskStore,
    InMemoryTaskRecords,
    bounded_body,
    entry_of,
    page_of_tasks,
)
from kagent.runtime.secrets import SecretResolver
from kagent.runtime.tools.agent import (
    MAX_AGENT_DEPTH,
    outgoing_chain,
    parse_chain,
    set_incoming_chain,
)


def task(task_id: str, context_id: str, seconds: int,
         state: TaskState = TaskState.TASK_STATE_COMPLETED) -> Task:
    status = TaskStatus(state=state)
    status.timestamp.FromSeconds(seconds)
    return Task(id=task_id, context_id=context_id, status=status)


def ids(page: Any) -> list[str]:
    return [e.task_id for e in page.entries]


def test_tasks_are_listed_newest_first_filtered_and_paged() -> None:
    tasks = [task(f"t{i}", "a" if i % 2 else "b", 1000 + i) for i in range(7)]
    tasks.append(task("w", "a", 2000, TaskState.TASK_STATE_INPUT_REQUIRED))
    entries = [entry_of(t) for t in tasks]
    everything = page_of_tasks(entries, ListTasksRequest(page_size=3))
    assert ids(everything) == ["w", "t6", "t5"]
    assert everything.total == 8
    rest = page_of_tasks(entries, ListTasksRequest(page_size=3, page_token=everything.next_token))
    assert ids(rest) == ["t4", "t3", "t2"]
    last = page_of_tasks(entries, ListTasksRequest(page_size=3, page_token=rest.next_token))
    assert ids(last) == ["t1", "t0"] and not last.next_token
    assert ids(page_of_tasks(entries, ListTasksRequest(context_id="a"))) == ["w", "t5", "t3", "t1"]
    waiting = page_of_tasks(entries, ListTasksRequest(status=TaskState.TASK_STATE_INPUT_REQUIRED))
    assert ids(waiting) == ["w"]


def test_a_stored_task_is_bounded_by_dropping_its_oldest_history() -> None:
    big = task("t", "c", 1)
    for i in range(100):
        big.history.append(Message(message_id=f"m{i}", parts=[Part(text="x" * 1000)]))
    body = bounded_body(big, limit=20_000)
    assert len(body) <= 20_000
    kept = Task()
    kept.ParseFromString(body)
    assert 1 <= len(kept.history) < 100 and kept.history[-1].message_id == "m99"
    assert bounded_body(task("small", "c", 1), limit=20_000) == task("small", "c", 1).SerializeToString()
    # An answer larger than the bound alone is cut, saying so: the bound always holds.
    huge = task("h", "c", 1)
    huge.artifacts.add(artifact_id="answer").parts.add(text="y" * 100_000)
    cut = Task()
    cut.ParseFromString(bounded_body(huge, limit=20_000))
    assert len(cut.SerializeToString()) <= 20_000
    assert cut.artifacts[0].parts[0].text.endswith(CUT_NOTE)


async def test_in_process_tasks_are_bounded_per_caller_and_in_total() -> None:
    records = InMemoryTaskRecords(BackendHealth("in-memory"), max_tasks=3, max_total=5)
    for i in range(4):
        await records.put_task("alice", entry_of(task(f"a{i}", "c", i)), b"x")
    assert [e.task_id for e in await records.task_index("alice")] == ["a1", "a2", "a3"]
    for i in range(3):
        await records.put_task("bob", entry_of(task(f"b{i}", "c", i)), b"x")
    assert len(await records.task_index("alice")) + len(await records.task_index("bob")) == 5


async def test_tasks_and_claims_belong_to_their_caller() -> None:
    store = DurableTaskStore(InMemoryTaskRecords(BackendHealth("in-memory")))
    alice = set_caller(Caller("user:alice", "user"))
    await store.save(task("t1", "c", 1))
    assert (await store.claim("m1")).mine
    await store.settle("m1", {"text": "alice's answer"})
    reset_caller(alice)
    bob = set_caller(Caller("user:bob", "user"))
    assert await store.get("t1") is None
    assert list((await store.list(ListTasksRequest())).tasks) == []
    assert (await store.claim("m1")).mine  # the same message id is a new key for bob
    second = await store.claim("m1")
    assert not second.mine and second.record is None  # bob's own run is in flight
    await store.release("m1")
    assert (await store.claim("m1")).mine
    reset_caller(bob)
    set_caller(Caller("user:alice", "user"))
    assert (await store.get("t1")) is not None
    assert (await store.claim("m1")).record == {"text": "alice's answer"}


def test_conversation_keys_hold_the_caller_unambiguously() -> None:
    token = set_caller(Caller("user:a/b", "user"))
    try:
        assert caller_scoped("c") == "user%3Aa%2Fb/c"
    finally:
        reset_caller(token)
    assert caller_scoped("user%3Aa%2Fb/c") == "anonymous/user%3Aa%2Fb/c"


async def test_in_memory_conversations_are_bounded() -> None:
    store = InMemorySessionStore(namespace="ns/a", ttl=0, max_history=10, max_conversations=3)
    for i in range(5):
        await store.append(f"c{i}", [])
    assert len(store) == 3
    assert (await store.load("c0")).messages == [] and len(store) == 3


async def test_backend_health_refuses_fast_and_recovers_with_one_probe_a_second(
        monkeypatch: pytest.MonkeyPatch) -> None:
    health = BackendHealth("redis", "agent")
    pings = 0
    up = False

    async def ping() -> None:
        nonlocal pings
        pings += 1
        await asyncio.sleep(0.01)
        if not up:
            raise ConnectionError("refused")

    with pytest.raises(BackendUnavailable, match="redis memory backend is unavailable"):
        async with health.guard():
            raise ConnectionRefusedError("connection refused")
    assert health.down
    # Within the probe interval: refused without a ping.
    assert await health.available(ping) is False and pings == 0
    monkeypatch.setattr(memory_base, "PROBE_INTERVAL", 0.0)
    assert await asyncio.gather(*(health.available(ping) for _ in range(5))) == [False] * 5
    assert pings == 1  # concurrent requests share one probe
    up = True
    assert await health.available(ping) is True and not health.down
    # An error that is not about reaching the backend leaves it up.
    with pytest.raises(ValueError):
        async with health.guard():
            raise ValueError("bad data")
    assert not health.down


def runtime_context(name: str = "a") -> RuntimeContext:
    return RuntimeContext(agent_name=name, namespace="ns", secrets=SecretResolver([], environ={}))


async def test_agent_calls_refuse_cycles_and_excessive_depth() -> None:
    async def inner() -> None:
        ctx = runtime_context("b")
        set_incoming_chain(parse_chain("ns/a"))
        assert outgoing_chain(ctx, "c") == ("ns/a", "ns/b")
        with pytest.raises(ToolFailed, match=r"cycle of agent calls \(ns/a -> ns/b -> ns/a\)"):
            outgoing_chain(ctx, "a")
        with pytest.raises(ToolFailed, match="cycle"):
            outgoing_chain(ctx, "b")  # calling itself
        set_incoming_chain(tuple(f"ns/x{i}" for i in range(MAX_AGENT_DEPTH - 1)))
        with pytest.raises(ToolFailed, match=f"more than the limit of {MAX_AGENT_DEPTH}"):
            outgoing_chain(ctx, "c")

    await asyncio.create_task(inner())  # its own context: the chain does not leak
    assert parse_chain(" , ns/a,,ns/b ") == ("ns/a", "ns/b")
    assert len(parse_chain(",".join(["ns/x"] * 1000))) == 64


async def test_request_bodies_over_the_limit_are_refused() -> None:
    async def echo(request: Request) -> JSONResponse:
        return JSONResponse({"bytes": len(await request.body())})

    store = InMemorySessionStore(namespace="ns/a", ttl=0, max_history=10)
    app = Starlette(routes=[Route("/", echo, methods=["POST"])])
    guarded: Any = RequestGuard(app, store=store, agent_name="a", max_body_bytes=1000)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=guarded),
                                 base_url="http://agent") as client:
        assert (await client.post("/", content=b"x" * 1000)).json() == {"bytes": 1000}
        refused = await client.post("/", content=b"x" * 1001)
        assert refused.status_code == 413
        assert refused.json()["error"]["message"] == "the request body is larger than 1000 bytes"

        async def chunks() -> Any:  # no Content-Length: counted while it is read
            for _ in range(5):
                yield b"x" * 400

        assert (await client.post("/", content=chunks())).status_code == 413


async def test_streamed_chunks_of_a_working_task_are_written_at_most_once_a_second() -> None:
    now = [100.0]
    store = DurableTaskStore(InMemoryTaskRecords(BackendHealth("in-memory")), clock=lambda: now[0])
    working = task("t", "c", 1, TaskState.TASK_STATE_WORKING)
    part = working.artifacts.add(artifact_id="answer").parts.add(text="Hel")
    await store.save(working)
    part.text = "Hello"
    await store.save(working)  # a chunk moments later: not written
    assert (await store.get("t")).artifacts[0].parts[0].text == "Hel"
    now[0] += 1.5
    part.text = "Hello, wor"
    await store.save(working)
    assert (await store.get("t")).artifacts[0].parts[0].text == "Hello, wor"
    done = task("t", "c", 2, TaskState.TASK_STATE_COMPLETED)
    done.artifacts.add(artifact_id="answer").parts.add(text="Hello, world")
    await store.save(done)  # a state change is written at once
    assert (await store.get("t")).status.state == TaskState.TASK_STATE_COMPLETED
