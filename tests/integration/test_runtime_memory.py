"""Session memory in a real Redis and a real PostgreSQL: the backend itself enforces maxHistory
and ttl, and an agent runtime keeps its conversations there."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import openai
import psycopg
import pytest
import redis.asyncio as aioredis
from pydantic_ai.messages import ModelMessage, ModelRequest, ModelResponse, TextPart, UserPromptPart

from kagent.api.memory import MemorySpec
from kagent.runtime.memory.base import SessionStore, caller_scoped, usable_history
from kagent.runtime.memory.factory import open_session_store
from kagent.runtime.secrets import SecretResolver
from kagent.mockllm import MockLLM
from kagent.local.services import PostgresServer, RedisServer
from tests.runtime_manifests import agent, memory, model, secret, unique

PG_SECRET = {"name": "pg", "key": "password"}


def exchange(i: int) -> list[ModelMessage]:
    return [ModelRequest(parts=[UserPromptPart(content=f"question {i}")]),
            ModelResponse(parts=[TextPart(content=f"answer {i}")])]


def texts(messages: list[ModelMessage]) -> list[str]:
    return [str(part.content) for m in messages for part in m.parts]


def memory_block(kind: str, redis_server: RedisServer, postgres_server: PostgresServer,
                 **config: Any) -> dict[str, Any]:
    if kind == "redis":
        return {"type": "redis", "config": {"url": redis_server.url, **config}}
    return {"type": "postgres",
            "config": {"url": postgres_server.url, "secretRef": PG_SECRET, **config}}


def secrets(postgres_server: PostgresServer) -> SecretResolver:
    return SecretResolver([{"metadata": {"name": "pg"},
                            "stringData": {"password": postgres_server.password}}], environ={})


@pytest.fixture
async def open_store(redis_server: RedisServer,
                     postgres_server: PostgresServer) -> AsyncIterator[Any]:
    stores: list[SessionStore] = []

    async def make(kind: str, **config: Any) -> SessionStore:
        spec = MemorySpec.model_validate(memory_block(kind, redis_server, postgres_server, **config))
        store = open_session_store(spec, namespace="tests", agent_name=unique("mem"),
                                   secrets=secrets(postgres_server))
        await store.start()
        stores.append(store)
        return store

    yield make
    for store in stores:
        await store.close()


async def stored_count(kind: str, store: Any, conversation_id: str, redis_server: RedisServer,
                       postgres_server: PostgresServer) -> int:
    """How many messages the backend itself holds, read with its own client."""
    if kind == "redis":
        client = aioredis.Redis.from_url(redis_server.url)
        try:
            return int(await client.llen(store.key(conversation_id, "messages")))
        finally:
            await client.aclose()
    async with await psycopg.AsyncConnection.connect(
        postgres_server.url, password=postgres_server.password
    ) as connection:
        cursor = await connection.execute(
            "SELECT count(*) FROM kagent_session_messages WHERE namespace = %s AND "
            "conversation_id = %s", (store.namespace, caller_scoped(conversation_id)))
        row = await cursor.fetchone()
        return int(row[0])


@pytest.mark.parametrize("kind", ["redis", "postgres"])
async def test_max_history_is_enforced_by_the_backend(kind: str, open_store: Any,
                                                      redis_server: RedisServer,
                                                      postgres_server: PostgresServer) -> None:
    store = await open_store(kind, maxHistory=4)
    cid = str(uuid.uuid4())
    for i in range(3):
        count = await store.append(cid, exchange(i))
    assert count == 4
    assert await stored_count(kind, store, cid, redis_server, postgres_server) == 4
    session = await store.load(cid)
    assert texts(session.messages) == ["question 1", "answer 1", "question 2", "answer 2"]
    # One more message leaves a history that starts with an answer: the usable history drops
    # it, so a model never sees a reply without its question.
    await store.append(cid, [ModelRequest(parts=[UserPromptPart(content="question 3")])])
    session = await store.load(cid)
    assert texts(session.messages)[0] == "answer 1"
    assert texts(usable_history(session)) == ["question 2", "answer 2", "question 3"]


@pytest.mark.parametrize("kind", ["redis", "postgres"])
async def test_ttl_expires_conversations_in_the_backend(kind: str, open_store: Any,
                                                        redis_server: RedisServer,
                                                        postgres_server: PostgresServer) -> None:
    store = await open_store(kind, ttl=1)
    cid, other = str(uuid.uuid4()), str(uuid.uuid4())
    await store.append(cid, exchange(0))
    if kind == "redis":
        client = aioredis.Redis.from_url(redis_server.url)
        ttl = await client.ttl(store.key(cid, "messages"))
        assert 0 < ttl <= 1
    assert texts((await store.load(cid)).messages) == ["question 0", "answer 0"]
    await asyncio.sleep(1.3)
    assert (await store.load(cid)).messages == []
    if kind == "redis":
        assert await client.exists(store.key(cid, "messages")) == 0
        await client.aclose()
    else:
        # Expired rows are deleted by the next write to the table, whatever its conversation.
        await store.append(other, exchange(1))
        assert await stored_count(kind, store, cid, redis_server, postgres_server) == 0
        async with await psycopg.AsyncConnection.connect(
            postgres_server.url, password=postgres_server.password
        ) as connection:
            cursor = await connection.execute(
                "SELECT count(*) FROM kagent_sessions WHERE conversation_id = %s",
                (caller_scoped(cid),))
            assert (await cursor.fetchone())[0] == 0


@pytest.mark.parametrize("kind", ["redis", "postgres"])
async def test_ttl_restarts_on_every_message(kind: str, open_store: Any) -> None:
    store = await open_store(kind, ttl=2)
    cid = str(uuid.uuid4())
    await store.append(cid, exchange(0))
    await asyncio.sleep(1.2)
    await store.append(cid, exchange(1))
    await asyncio.sleep(1.2)  # 2.4 s after the first message, 1.2 s after the last
    assert len((await store.load(cid)).messages) == 4


@pytest.mark.parametrize("kind", ["redis", "postgres"])
async def test_compact_replaces_the_oldest_messages_by_a_summary(kind: str,
                                                                 open_store: Any) -> None:
    store = await open_store(kind)
    cid = str(uuid.uuid4())
    for i in range(3):
        await store.append(cid, exchange(i))
    await store.compact(cid, "they asked three questions", 4)
    session = await store.load(cid)
    assert session.summary == "they asked three questions"
    assert texts(session.messages) == ["question 2", "answer 2"]
    history = usable_history(session)
    assert texts(history)[0].endswith("they asked three questions")
    assert texts(history)[1:] == ["question 2", "answer 2"]


# -- an agent runtime on these backends --------------------------------------------------------

SCRIPT = {"rules": [], "default": {"content": "reply to {{last_user}}"}}


@pytest.fixture(scope="module")
def llm() -> Iterator[MockLLM]:
    with MockLLM(SCRIPT) as server:
        yield server


@pytest.mark.parametrize("kind", ["redis", "postgres"])
def test_runtime_keeps_conversations_in_the_backend(kind: str, llm: MockLLM, agent_runtime: Any,
                                                    redis_server: RedisServer,
                                                    postgres_server: PostgresServer) -> None:
    llm.reset()
    name = unique(f"mem-{kind}")
    runtime = agent_runtime([
        agent(name, model("openai", llm.url), memoryRef={"name": "sessions"}),
        memory("sessions", memory_block(kind, redis_server, postgres_server, maxHistory=4)),
        secret(),
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "pg"},
         "stringData": {"password": postgres_server.password}},
    ])
    ready = httpx.get(f"{runtime.url}/readyz")
    assert ready.status_code == 200 and ready.json()["memory"] == kind
    client = openai.OpenAI(base_url=runtime.openai_base_url, api_key="x")
    cid = str(uuid.uuid4())
    for i in range(3):
        client.chat.completions.create(
            model=name, messages=[{"role": "user", "content": f"message {i}"}],
            extra_headers={"X-Conversation-Id": cid})
    client.close()
    # The third call saw the two earlier exchanges from the backend; after it, maxHistory 4
    # left the last two exchanges.
    assert [m["text"] for m in llm.calls[-1].messages] == [
        "message 0", "reply to message 0", "message 1", "reply to message 1", "message 2"]
    session = asyncio.run(_load(runtime, cid))
    assert texts(session.messages) == [
        "message 1", "reply to message 1", "message 2", "reply to message 2"]


async def _load(runtime: Any, cid: str) -> Any:
    config = runtime.config
    store = open_session_store(config.memory, namespace=config.namespace, agent_name=config.name,
                               secrets=config.secrets)
    try:
        return await store.load(cid)
    finally:
        await store.close()


def test_backend_down_gives_503_not_an_unready_pod(llm: MockLLM, agent_runtime: Any) -> None:
    with RedisServer() as doomed:
        runtime = agent_runtime([
            agent(unique("mem-down"), model("openai", llm.url),
                  memory={"type": "redis", "config": {"url": doomed.url}}),
            secret(),
        ])
        assert httpx.get(f"{runtime.url}/readyz").status_code == 200
    client = openai.OpenAI(base_url=runtime.openai_base_url, api_key="x", max_retries=0)
    for _ in range(2):  # the first finds it down, the second is refused before any work
        with pytest.raises(openai.APIStatusError) as refused:
            client.chat.completions.create(
                model=runtime.name, messages=[{"role": "user", "content": "hello"}],
                extra_headers={"X-Conversation-Id": "c1"})
        assert refused.value.status_code == 503
        assert "redis memory backend is unavailable" in refused.value.message
        assert refused.value.response.headers["retry-after"] == "5"
    client.close()
    ready = httpx.get(f"{runtime.url}/readyz", timeout=10)
    assert ready.status_code == 200 and ready.json()["memoryAvailable"] is False
    assert httpx.get(f"{runtime.url}/healthz").status_code == 200
