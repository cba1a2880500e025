"""Callers kept apart, A2A 0.3 beside 1.0, and backend outages — against an in-process runtime
on real Redis/PostgreSQL, driven by the official a2a-sdk and openai clients.

Callers are told apart by the agent's own API keys (``spec.auth.apiKeys``): each key's caller is
``apikey:<name>``, set by the authentication middleware."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from a2a.client import ClientConfig, ClientFactory
from a2a.client.card_resolver import parse_agent_card
from a2a.types import (
    GetTaskRequest,
    ListTasksRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    TaskState,
)

from kagent.local.process import Process
from kagent.local.services import AsgiServer, PostgresServer, RedisServer, free_port
from kagent.mockllm import MockLLM
from kagent.testing.runtime import RuntimeServer
from tests.runtime_manifests import agent, model, secret, unique

@pytest.fixture(scope="module")
def llm() -> Iterator[MockLLM]:
    with MockLLM({"rules": [], "default": {"content": "echo: {{last_user}}"}}) as server:
        yield server


KEYS = {"alice": "alice-key-0123456789abcdef", "bob": "bob-key-0123456789abcdef"}
API_KEYS = {"apiKeys": [{"name": who, "secretKeyRef": {"name": "keys", "key": who}} for who in KEYS]}


def memory_block(kind: str, redis_server: RedisServer, postgres_server: PostgresServer) -> Any:
    if kind == "redis":
        return {"type": "redis", "config": {"url": redis_server.url}}
    if kind == "postgres":
        return {"type": "postgres", "config": {"url": postgres_server.url,
                                               "secretRef": {"name": "pg", "key": "password"}}}
    return {"type": "in-memory"}


@pytest.fixture
def served(llm: MockLLM, redis_server: RedisServer,
           postgres_server: PostgresServer) -> Iterator[Any]:
    servers: list[tuple[AsgiServer, RuntimeServer]] = []

    def start(memory: Any, auth: Any = None) -> tuple[str, str]:
        from kagent.runtime.app import create_app

        spec = {"memory": memory, **({"auth": auth} if auth else {})}
        runtime = RuntimeServer([
            agent(unique("callers"), model("openai", llm.url), **spec), secret(),
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "keys"}, "stringData": KEYS},
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "pg"},
             "stringData": {"password": postgres_server.password}},
        ])
        server = AsgiServer(create_app(runtime.runtime), lifespan="on").start(30)
        servers.append((server, runtime))
        return server.url, runtime.name

    yield start
    for server, runtime in servers:
        server.stop()
        runtime.stop()


def message(text: str, context_id: str, message_id: str | None = None) -> Message:
    return Message(role=Role.ROLE_USER, message_id=message_id or str(uuid.uuid4()),
                   context_id=context_id, parts=[Part(text=text)])


async def as_caller(url: str, name: str) -> tuple[Any, httpx.AsyncClient]:
    http = httpx.AsyncClient(timeout=60, headers={"Authorization": f"Bearer {KEYS[name]}"})
    client = await ClientFactory(ClientConfig(streaming=False, httpx_client=http)).create_from_url(url)
    return client, http


async def send(client: Any, msg: Message) -> Any:
    return [r async for r in client.send_message(SendMessageRequest(message=msg))][-1]


@pytest.mark.parametrize("kind", ["in-memory", "redis", "postgres"])
async def test_callers_never_see_each_others_tasks_answers_or_conversations(
        kind: str, served: Any, llm: MockLLM, redis_server: RedisServer,
        postgres_server: PostgresServer) -> None:
    llm.reset()
    url, name = served(memory_block(kind, redis_server, postgres_server), auth=API_KEYS)
    alice, alice_http = await as_caller(url, "alice")
    bob, bob_http = await as_caller(url, "bob")
    context_id, message_id = f"ctx-{uuid.uuid4().hex[:6]}", f"msg-{uuid.uuid4().hex[:6]}"

    secret_answer = await send(alice, message("my PIN is 4321", context_id, message_id))
    task_id = secret_answer.task.id
    assert secret_answer.task.artifacts[0].parts[0].text == "echo: my PIN is 4321"

    # Bob lists nothing, cannot get Alice's task, and reusing her ids gets him his own answer.
    assert list((await bob.list_tasks(ListTasksRequest())).tasks) == []
    with pytest.raises(Exception, match="(?i)not found"):
        await bob.get_task(GetTaskRequest(id=task_id))
    own = await send(bob, message("what did I say", context_id, message_id))
    assert own.task.artifacts[0].parts[0].text == "echo: what did I say"
    assert [m["text"] for m in llm.calls[-1].messages] == ["what did I say"]  # not her history

    # Alice still has exactly her task, and her conversation is hers alone.
    listed = await alice.list_tasks(ListTasksRequest())
    assert [t.id for t in listed.tasks] == [task_id]
    await send(alice, message("and again", context_id))
    assert [m["text"] for m in llm.calls[-1].messages] == [
        "my PIN is 4321", "echo: my PIN is 4321", "and again"]

    # The OpenAI-compatible API keeps conversations per caller too.
    for who, text in (("alice", "remember blue"), ("bob", "remember red")):
        chat = openai.OpenAI(base_url=f"{url}/v1", api_key=KEYS[who])
        chat.chat.completions.create(model=name, messages=[{"role": "user", "content": text}],
                                     extra_headers={"X-Conversation-Id": "same-id"})
        chat.close()
    assert [m["text"] for m in llm.calls[-1].messages] == ["remember red"]
    for http in (alice_http, bob_http):
        await http.aclose()


async def test_a2a_0_3_and_1_0_clients_both_hold_a_conversation(served: Any, llm: MockLLM) -> None:
    llm.reset()
    url, _ = served({"type": "in-memory"})
    async with httpx.AsyncClient(timeout=60) as http:
        card = (await http.get(f"{url}/.well-known/agent-card.json")).json()
        # A 0.3 client reads the 0.3 fields of the same card.
        assert card["protocolVersion"].startswith("0.3") and card["url"] == url
        legacy = {k: v for k, v in card.items() if k != "supportedInterfaces"}
        clients = {
            "1.0": ClientFactory(ClientConfig(streaming=False, httpx_client=http)).create(
                parse_agent_card(card)),
            "0.3": ClientFactory(ClientConfig(streaming=False, httpx_client=http)).create(
                parse_agent_card(legacy)),
            "0.3-rest": ClientFactory(ClientConfig(
                streaming=False, httpx_client=http, supported_protocol_bindings=["HTTP+JSON"],
            )).create(parse_agent_card(legacy)),
        }
        assert type(clients["0.3"]._transport).__name__ == "CompatJsonRpcTransport"
        assert type(clients["0.3-rest"]._transport).__name__ == "CompatRestTransport"
        assert type(clients["1.0"]._transport).__name__ == "JsonRpcTransport"
        for version, client in clients.items():
            context_id = str(uuid.uuid4())
            await send(client, message(f"hello from {version}", context_id))
            answer = await send(client, message("and again", context_id))
            assert [m["text"] for m in llm.calls[-1].messages] == [
                f"hello from {version}", f"echo: hello from {version}", "and again"]
            task = await client.get_task(GetTaskRequest(id=answer.task.id))
            assert task.status.state == TaskState.TASK_STATE_COMPLETED
            assert task.artifacts[0].parts[0].text == "echo: and again"


async def test_agent_tool_calls_an_agent_that_speaks_only_a2a_0_3(llm: MockLLM) -> None:
    """Our client (the agent tool's) against a server that advertises only A2A 0.3."""
    from a2a.helpers.proto_helpers import new_text_message
    from a2a.server.agent_execution import AgentExecutor, RequestContext
    from a2a.server.events import EventQueue
    from a2a.server.request_handlers import DefaultRequestHandler
    from a2a.server.request_handlers.response_helpers import agent_card_to_dict
    from a2a.server.routes import create_jsonrpc_routes
    from a2a.server.tasks import InMemoryTaskStore
    from a2a.types import AgentCapabilities, AgentCard, AgentInterface
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from kagent.agentclient import AgentClient

    class Echo(AgentExecutor):
        async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
            await event_queue.enqueue_event(new_text_message(f"0.3 says: {context.get_user_input()}"))

        async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
            raise NotImplementedError

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    card = AgentCard(name="old", description="an A2A 0.3 agent", version="1",
                     supported_interfaces=[AgentInterface(url=base, protocol_binding="JSONRPC",
                                                          protocol_version="0.3")],
                     capabilities=AgentCapabilities(), default_input_modes=["text/plain"],
                     default_output_modes=["text/plain"])
    handler = DefaultRequestHandler(agent_executor=Echo(), task_store=InMemoryTaskStore(),
                                    agent_card=card)

    async def card_route(request: Any) -> JSONResponse:
        served_card = agent_card_to_dict(card)
        served_card.pop("supportedInterfaces")  # exactly what a 0.3 server serves
        return JSONResponse(served_card)

    app = Starlette(routes=[Route("/.well-known/agent-card.json", card_route),
                            *create_jsonrpc_routes(handler, rpc_url="/", enable_v0_3_compat=True)])
    with AsgiServer(app, port=port):
        client = AgentClient()
        try:
            answer = await client.ask(base, "old", "hello")
        finally:
            await client.aclose()
    assert answer.text == "0.3 says: hello"


def start_redis(port: int, directory: Path) -> Process:
    """redis-server with an append-only file, so a restart keeps what was written."""
    import shutil
    import socket

    binary = shutil.which("redis-server")
    assert binary, "redis-server is not installed (hack/system-deps.sh)"
    process = Process.start(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
         "--dir", str(directory), "--protected-mode", "no"],
        name="redis-server", log_file=directory / "redis.log", die_with_parent=True)

    def pong() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")

    process.wait_ready(pong, timeout=15, what="redis-server to answer PING")
    return process


async def test_stopping_redis_mid_conversation_gives_503s_and_restarting_it_recovers(
        served: Any, llm: MockLLM, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="kagent.runtime.memory")
    llm.reset()
    port = free_port()
    redis = start_redis(port, tmp_path)
    try:
        url, name = served({"type": "redis", "config": {"url": f"redis://127.0.0.1:{port}"}})
        chat = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)

        async def say(text: str) -> str:
            reply = await chat.chat.completions.create(
                model=name, messages=[{"role": "user", "content": text}],
                extra_headers={"X-Conversation-Id": "outage"})
            return str(reply.choices[0].message.content)

        assert await say("first") == "echo: first"
        redis.stop()
        calls_before = len(llm.calls)
        for text in ("second", "third"):
            with pytest.raises(openai.APIStatusError) as refused:
                await say(text)
            assert refused.value.status_code == 503
            assert "redis memory backend is unavailable" in refused.value.message
        async with httpx.AsyncClient(timeout=10) as http:
            a2a = await http.post(url, json={
                "jsonrpc": "2.0", "id": 1, "method": "SendMessage",
                "params": {"message": {"role": "ROLE_USER", "messageId": "m-1",
                                       "parts": [{"text": "hi"}]}}},
                headers={"A2A-Version": "1.0"})
            assert a2a.status_code == 503 and "memory backend" in a2a.json()["error"]["message"]
            ready = await http.get(f"{url}/readyz")
            assert ready.status_code == 200 and ready.json()["memoryAvailable"] is False
            metrics = (await http.get(f"{url}/metrics")).text
        assert f'agent_memory_unavailable_total{{agent="{name}",backend="redis"}}' in metrics
        assert f'agent_memory_backend_up{{agent="{name}",backend="redis"}} 0.0' in metrics
        assert "redis memory backend unavailable" in caplog.text
        # The second turn's model call may have run before the write failed, but nothing of
        # it was stored; the third was refused before any work.
        assert len(llm.calls) - calls_before <= 1

        redis = start_redis(port, tmp_path)
        for _ in range(40):  # recovers on its own (a probe a second), no agent restart
            try:
                answer = await say("fourth")
                break
            except openai.APIStatusError as error:
                assert error.status_code == 503
                await asyncio.sleep(0.25)
        else:
            pytest.fail("the agent did not recover after Redis came back")
        assert answer == "echo: fourth"
        # No half-written turn: the history is the first exchange and this one, nothing else.
        assert [m["text"] for m in llm.calls[-1].messages] == ["first", "echo: first", "fourth"]
        assert "redis memory backend is back" in caplog.text
        async with httpx.AsyncClient(timeout=10) as http:
            metrics = (await http.get(f"{url}/metrics")).text
        assert f'agent_memory_backend_up{{agent="{name}",backend="redis"}} 1.0' in metrics
        await chat.close()
    finally:
        redis.stop()


def test_a_cycle_of_agents_calling_each_other_is_refused_clearly() -> None:
    """Agent A asks B (agent as tool), whose model asks A again: B refuses the call with an
    error naming the cycle, which reaches both models; nothing loops."""
    from kagent.runtime.app import create_app

    name_a, name_b = unique("cyc-a"), unique("cyc-b")
    port_a, port_b = free_port(), free_port()
    script = {"rules": [
        {"model": "model-a", "has_tool_result": False,
         "tool_calls": [{"name": name_b, "arguments": {"message": "ping back"}}]},
        {"model": "model-a", "has_tool_result": name_b, "content": "A got: {{tool_result}}"},
        {"model": "model-b", "has_tool_result": False,
         "tool_calls": [{"name": name_a, "arguments": {"message": "loop"}}]},
        {"model": "model-b", "has_tool_result": name_a, "content": "B saw: {{tool_result}}"},
    ]}
    with MockLLM(script) as llm:
        runtimes = [
            RuntimeServer([agent(name, model("openai", llm.url, name=model_name),
                                 tools=[{"name": other, "kind": "Agent"}]), secret()],
                          environ={"KAGENT_AGENT_URL_TEMPLATE": f"http://127.0.0.1:{other_port}"})
            for name, model_name, other, other_port in (
                (name_a, "model-a", name_b, port_b), (name_b, "model-b", name_a, port_a))
        ]
        servers = [AsgiServer(create_app(r.runtime), port=p, lifespan="on").start(30)
                   for r, p in zip(runtimes, (port_a, port_b))]
        try:
            chat = openai.OpenAI(base_url=f"{servers[0].url}/v1", api_key="x")
            reply = chat.chat.completions.create(
                model=name_a, messages=[{"role": "user", "content": "start"}])
            chat.close()
        finally:
            for server in servers:
                server.stop()
            for runtime in runtimes:
                runtime.stop()
        answer = str(reply.choices[0].message.content)
        assert answer.startswith("A got: B saw: ")
        assert f"cycle of agent calls (tests/{name_a} -> tests/{name_b} -> tests/{name_a})" in answer
        assert [c.model for c in llm.calls] == ["model-a", "model-b", "model-b", "model-a"]


def test_request_bodies_over_the_limit_get_413(served: Any) -> None:
    url, name = served({"type": "in-memory"})
    huge = "x" * (9 << 20)
    chat = httpx.post(f"{url}/v1/chat/completions", timeout=30,
                      json={"model": name, "messages": [{"role": "user", "content": huge}]})
    assert chat.status_code == 413 and "larger than 8388608 bytes" in chat.json()["error"]["message"]
    a2a = httpx.post(url, timeout=30, content=b'{"jsonrpc": "2.0", "params": "' + b"x" * (9 << 20))
    assert a2a.status_code == 413


async def test_postgres_statements_are_bounded_and_a_timeout_counts_as_down(
        postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> None:
    from kagent.api.memory import MemorySpec
    from kagent.runtime.memory import base as memory_base
    from kagent.runtime.memory import postgres as pg
    from kagent.runtime.memory.base import BackendUnavailable
    from kagent.runtime.memory.factory import open_session_store
    from kagent.runtime.secrets import SecretResolver

    monkeypatch.setattr(pg, "STATEMENT_TIMEOUT_MS", 300)
    spec = MemorySpec.model_validate({"type": "postgres", "config": {
        "url": postgres_server.url, "secretRef": {"name": "pg", "key": "password"}}})
    secrets = SecretResolver([{"metadata": {"name": "pg"},
                               "stringData": {"password": postgres_server.password}}], environ={})
    store = open_session_store(spec, namespace="tests", agent_name=unique("stmt"), secrets=secrets)
    try:
        async with store.connection() as connection:
            row = await (await connection.execute("SHOW statement_timeout")).fetchone()
            assert row[0] == "300ms"
        with pytest.raises(BackendUnavailable, match="postgres memory backend is unavailable"):
            async with store.connection() as connection:
                await connection.execute("SELECT pg_sleep(5)")
        assert store.health.down
        # The database itself is fine: the next probe finds it and requests flow again.
        monkeypatch.setattr(memory_base, "PROBE_INTERVAL", 0.0)
        assert await store.health.available(store.ping) is True and not store.health.down
    finally:
        await store.close()


def test_postgres_down_gives_503_not_an_unready_pod(served: Any) -> None:
    with PostgresServer() as doomed:
        url, name = served({"type": "postgres", "config": {"url": doomed.dsn}})
        chat = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
        reply = chat.chat.completions.create(
            model=name, messages=[{"role": "user", "content": "hello"}],
            extra_headers={"X-Conversation-Id": "pg-outage"})
        assert reply.choices[0].message.content == "echo: hello"
    for _ in range(2):
        with pytest.raises(openai.APIStatusError) as refused:
            chat.chat.completions.create(
                model=name, messages=[{"role": "user", "content": "again"}],
                extra_headers={"X-Conversation-Id": "pg-outage"})
        assert refused.value.status_code == 503
        assert "postgres memory backend is unavailable" in refused.value.message
    chat.close()
    assert httpx.get(f"{url}/readyz").status_code == 200
