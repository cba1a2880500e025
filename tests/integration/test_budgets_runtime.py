"""Budgets enforced by real agent runtimes against real Redis and PostgreSQL counters: two
replicas share one daily token cap and refuse with 429 naming the Budget once it is used up,
overspending by no more than the requests in flight; a per-caller Budget stops one caller while
another goes on; A2A callers get a failed task saying why; the usage ledger matches the scripted
model's own token count."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from kagent.agentclient import AgentCallError, AgentClient, StaticToken
from kagent.api.budget import BudgetCounterStore
from kagent.local.services import AsgiServer, PostgresServer, RedisServer
from kagent.mockllm import MockLLM
from kagent.runtime.app import create_app
from kagent.runtime.budget import open_counter_store
from kagent.runtime.config import build_runtime_config
from kagent.runtime.server import build_runtime
from tests.runtime_manifests import API, agent, model, secret, unique

TOKENS_PER_CALL = 150  # the script's usage: 100 in, 50 out
SCRIPT = {"rules": [], "default": {"content": "fine", "delay": 0.2,
                                   "usage": {"input_tokens": 100, "output_tokens": 50}}}
WORKERS = 4


KEYS = {"alice": "alice-key-0123456789abcdef", "bob": "bob-key-0123456789abcdef",
        "carol": "carol-key-0123456789abcdef"}
"""API keys of the agent (spec.auth.apiKeys): each caller is ``apikey:<name>``."""


@pytest.fixture(scope="module")
def llm() -> Iterator[MockLLM]:
    with MockLLM(SCRIPT) as server:
        yield server


@pytest.fixture
def replicas() -> Iterator[Any]:
    servers: list[AsgiServer] = []

    def start(documents: list[dict[str, Any]], count: int = 2) -> list[str]:
        urls = []
        for _ in range(count):
            config = build_runtime_config(documents, environ={})
            runtime = build_runtime(config, environ={})
            server = AsgiServer(create_app(runtime), lifespan="on").start(timeout=30)
            servers.append(server)
            urls.append(server.url)
        return urls

    yield start
    for server in reversed(servers):
        server.stop()


def counter(kind: str, redis_server: RedisServer, postgres_server: PostgresServer) -> dict[str, Any]:
    if kind == "redis":
        return {"type": "redis", "url": redis_server.url}
    return {"type": "postgres", "url": postgres_server.url,
            "secretRef": {"name": "pg", "key": "password"}}


def budget(name: str, store: dict[str, Any], *, tokens: int, per_caller: bool = False,
           warning: int = 80) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "Budget", "metadata": {"name": name, "namespace": "tests"},
            "spec": {"limits": [{"window": "day", "tokens": tokens}], "perCaller": per_caller,
                     "warningPercent": warning, "counter": store}}


def manifests(name: str, llm: MockLLM, the_budget: dict[str, Any],
              postgres_server: PostgresServer) -> list[dict[str, Any]]:
    keys = [{"name": who, "secretKeyRef": {"name": "keys", "key": who}} for who in KEYS]
    return [agent(name, model("openai", llm.url), auth={"apiKeys": keys}), the_budget, secret(),
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "keys"}, "stringData": KEYS},
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "pg"},
             "stringData": {"password": postgres_server.password}}]


def ask(url: str, name: str, caller: str = "alice") -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", timeout=30,
                      headers={"Authorization": f"Bearer {KEYS[caller]}"},
                      json={"model": name, "messages": [{"role": "user", "content": "hello"}]})


def mock_tokens(llm: MockLLM) -> int:
    return sum(c.reply["usage"]["input_tokens"] + c.reply["usage"]["output_tokens"]
               for c in llm.calls if c.reply.get("usage"))


def ledger_tokens(documents: list[dict[str, Any]], postgres_server: PostgresServer) -> int:
    store_spec = BudgetCounterStore.model_validate(documents[1]["spec"]["counter"])
    password = postgres_server.password if store_spec.type == "postgres" else None

    async def read() -> int:
        store = open_counter_store(store_spec, password)
        try:
            now = datetime.now(UTC)
            rows = await store.usage("tests", now - timedelta(hours=1), now)
        finally:
            await store.close()
        agent_name = documents[0]["metadata"]["name"]
        return sum(r.input_tokens + r.output_tokens for r in rows if r.agent == agent_name)

    return asyncio.run(read())


@pytest.mark.parametrize("kind", ["redis", "postgres"])
def test_two_replicas_share_a_daily_token_budget(kind: str, llm: MockLLM, replicas: Any,
                                                 redis_server: RedisServer,
                                                 postgres_server: PostgresServer) -> None:
    llm.reset()
    name, budget_name = unique("budgeted"), unique("daily")
    documents = manifests(name, llm, budget(budget_name, counter(kind, redis_server,
                                                                 postgres_server), tokens=1000),
                          postgres_server)
    urls = replicas(documents)
    refusals: list[httpx.Response] = []
    answered = 0
    by_replica = dict.fromkeys(urls, 0)
    lock = threading.Lock()

    def worker(i: int) -> None:
        nonlocal answered
        for attempt in range(40):
            url = urls[(i + attempt) % 2]
            response = ask(url, name)
            with lock:
                if response.status_code == 429:
                    refusals.append(response)
                    return
                assert response.status_code == 200, response.text
                answered += 1
                by_replica[url] += 1

    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(worker, range(WORKERS)))

    spent = mock_tokens(llm)
    assert spent == answered * TOKENS_PER_CALL
    assert spent >= 1000, "requests were refused before the limit was reached"
    # Overspend: at most what the requests in flight when the limit was crossed used.
    assert spent - 1000 <= WORKERS * TOKENS_PER_CALL
    assert len(refusals) == WORKERS
    error = refusals[0].json()["error"]
    assert error["code"] == "budget_exceeded"
    assert f'Budget "{budget_name}"' in error["message"]
    assert "per day" in error["message"] and "resets at" in error["message"]
    assert int(refusals[0].headers["retry-after"]) > 0
    # Both replicas answered: the cap held across them, not per replica.
    assert all(by_replica[url] for url in urls)
    # A2A callers (and so workflow steps) get a failed task saying why.
    calls_before = len(llm.calls)
    with pytest.raises(AgentCallError, match=f'Budget "{budget_name}" is used up'):
        asyncio.run(_call_a2a(urls[1], name))
    assert len(llm.calls) == calls_before, "a refused request reached the model"
    # The usage ledger (what `kagent usage` reads) matches the model's own count.
    assert ledger_tokens(documents, postgres_server) == spent


async def _call_a2a(url: str, name: str) -> dict[str, int]:
    client = AgentClient(credentials=StaticToken(KEYS["carol"]))
    try:
        return (await client.ask(url, name, "hello")).usage
    finally:
        await client.aclose()


def test_a_per_caller_budget_stops_one_caller_and_not_another(
        llm: MockLLM, replicas: Any, redis_server: RedisServer,
        postgres_server: PostgresServer) -> None:
    llm.reset()
    name, budget_name = unique("percaller"), unique("each")
    documents = manifests(name, llm, budget(budget_name, counter("redis", redis_server,
                                                                 postgres_server),
                                            tokens=300, per_caller=True), postgres_server)
    urls = replicas(documents)
    statuses = [ask(urls[i % 2], name, "alice").status_code for i in range(3)]
    assert statuses == [200, 200, 429]
    refused = ask(urls[0], name, "alice").json()["error"]["message"]
    assert "for caller apikey:alice" in refused
    assert [ask(urls[i % 2], name, "bob").status_code for i in range(2)] == [200, 200]
    assert ask(urls[1], name, "bob").status_code == 429
    # An A2A caller (carol's key) has its own share; the answer reports usage and cost, which
    # a workflow step adds to its status: gpt-4o's default price, 100 x $2.50 + 50 x $10 per
    # million tokens = $0.00075.
    usage = asyncio.run(_call_a2a(urls[0], name))
    assert usage == {"inputTokens": 100, "outputTokens": 50, "requests": 1, "costMicros": 750}


def test_a_budget_whose_counter_store_is_down_refuses_with_503(
        llm: MockLLM, replicas: Any, postgres_server: PostgresServer) -> None:
    llm.reset()
    name = unique("nostore")
    documents = manifests(name, llm, budget(unique("b"), {"type": "redis",
                                                           "url": "redis://127.0.0.1:1"},
                                            tokens=1000), postgres_server)
    [url] = replicas(documents, count=1)
    response = ask(url, name)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "budget_unavailable"
    assert not llm.calls
