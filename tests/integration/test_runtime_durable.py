"""Durable, shared A2A tasks: two real ``kagent runtime`` processes (two replicas of one agent)
share a real Redis or PostgreSQL. A task started on one is read, listed and continued on the
other; a replica killed (SIGKILL) while a human question is pending loses nothing; a re-sent
message id is answered once across replicas and restarts. Driven by the official a2a-sdk
client."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from a2a.client import ClientConfig, ClientFactory
from a2a.types import (
    GetTaskRequest,
    ListTasksRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    TaskState,
)

from kagent.agentclient import ask_agent_at
from kagent.local.services import PostgresServer, RedisServer
from kagent.mockllm import MockLLM
from kagent.testing.runtime import RuntimeProcess
from tests.runtime_manifests import agent, human_tool, memory, model, secret, unique

SCRIPT = {
    "rules": [
        {"name": "ask", "contains": "deploy", "has_tool_result": False,
         "tool_calls": [{"name": "ask-operator", "arguments": {"question": "Which environment?"}}]},
        {"name": "deploy", "has_tool_result": "ask-operator",
         "content": "Deploying to {{tool_result}}."},
    ],
    "default": {"content": "echo: {{last_user}}"},
}


@pytest.fixture(scope="module")
def llm() -> Iterator[MockLLM]:
    with MockLLM(SCRIPT) as server:
        yield server


def replica_documents(kind: str, name: str, llm: MockLLM, redis_server: RedisServer,
                      postgres_server: PostgresServer) -> list[dict[str, Any]]:
    if kind == "redis":
        block: dict[str, Any] = {"type": "redis", "config": {"url": redis_server.url}}
    else:
        block = {"type": "postgres",
                 "config": {"url": postgres_server.url, "secretRef": {"name": "pg", "key": "password"}}}
    return [
        agent(name, model("openai", llm.url), tools=[{"name": "ask-operator"}],
              memoryRef={"name": "shared"}),
        human_tool(),
        memory("shared", block),
        secret(),
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "pg"},
         "stringData": {"password": postgres_server.password}},
    ]


@pytest.fixture
def replicas(llm: MockLLM, redis_server: RedisServer,
             postgres_server: PostgresServer) -> Iterator[Any]:
    started: list[RuntimeProcess] = []

    def start(kind: str, count: int = 2) -> list[RuntimeProcess]:
        documents = replica_documents(kind, unique(f"dur-{kind}"), llm, redis_server,
                                      postgres_server)
        for _ in range(count):
            started.append(RuntimeProcess(documents).start())
        return started[-count:]

    yield start
    for process in started:
        process.cleanup()


def user_message(text: str, context_id: str, task_id: str = "") -> Message:
    return Message(role=Role.ROLE_USER, message_id=str(uuid.uuid4()), context_id=context_id,
                   task_id=task_id, parts=[Part(text=text)])


async def send(client: Any, message: Message) -> Any:
    return [r async for r in client.send_message(SendMessageRequest(message=message))][-1]


async def connect(url: str, http: httpx.AsyncClient) -> Any:
    return await ClientFactory(ClientConfig(streaming=False, httpx_client=http)).create_from_url(url)


@pytest.mark.parametrize("kind", ["redis", "postgres"])
async def test_a_task_started_on_one_replica_is_read_and_continued_on_the_other(
        kind: str, llm: MockLLM, replicas: Any) -> None:
    llm.reset()
    first, second = replicas(kind)
    async with httpx.AsyncClient(timeout=60) as http:
        one, two = await connect(first.url, http), await connect(second.url, http)
        context_id = str(uuid.uuid4())
        asked = await send(one, user_message("Please deploy the release", context_id))
        task_id = asked.task.id
        assert asked.task.status.state == TaskState.TASK_STATE_INPUT_REQUIRED

        # The other replica sees the task, its question and its history.
        seen = await two.get_task(GetTaskRequest(id=task_id))
        assert seen.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
        assert seen.status.message.parts[0].text.endswith("Which environment?")
        assert seen.history[0].parts[0].text == "Please deploy the release"
        listed = await two.list_tasks(ListTasksRequest(context_id=context_id))
        assert [t.id for t in listed.tasks] == [task_id]

        # The replica that asked dies while the question is pending: nothing is lost.
        first._process.kill()  # SIGKILL: no clean shutdown
        await send(two, user_message("staging", context_id, task_id))
        done = await two.get_task(GetTaskRequest(id=task_id))
        assert done.status.state == TaskState.TASK_STATE_COMPLETED
        assert done.artifacts[0].parts[0].text == "Deploying to staging."
        assert llm.calls[-1].rule == "deploy"

        # The conversation goes on, on the surviving replica, with the whole exchange.
        await send(two, user_message("how did it go", context_id))
        texts = [m["text"] for m in llm.calls[-1].messages if m["text"]]
        assert texts == ["Please deploy the release", "Deploying to staging.", "how did it go"]
        await one.close()
        await two.close()


@pytest.mark.parametrize("kind", ["redis", "postgres"])
async def test_a_resent_message_is_answered_once_across_replicas_and_restarts(
        kind: str, llm: MockLLM, replicas: Any) -> None:
    llm.reset()
    first, second = replicas(kind)
    key = f"run-uid-step-{uuid.uuid4().hex[:8]}"
    text = f"summarise quarter {key}"
    # Sent to both replicas at once (a failover racing the first leader): one model run.
    answers = await asyncio.gather(
        ask_agent_at(first.url, first.name, text, message_id=key),
        ask_agent_at(second.url, second.name, text, message_id=key),
    )
    assert answers == [f"echo: {text}"] * 2
    # Both replicas restart; the re-sent step still gets the first answer.
    for replica in (first, second):
        replica.stop()
        replica.start()
    again = await ask_agent_at(second.url, second.name, text, message_id=key)
    assert again == f"echo: {text}"
    assert len([c for c in llm.calls if c.last_user == text]) == 1
