"""The runtime over A2A, driven by the official a2a-sdk client (JSON-RPC and REST, plain and
streaming): agent card, multi-turn conversations in one context, get and cancel, failures, and
the human tool through ``input-required``."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from a2a.client import ClientConfig, ClientFactory
from a2a.types import (
    CancelTaskRequest,
    GetTaskRequest,
    Message,
    Part,
    Role,
    SendMessageConfiguration,
    SendMessageRequest,
    StreamResponse,
    TaskState,
)

from kagent.mockllm import MockLLM
from tests.runtime_manifests import agent, human_tool, model, secret, unique

SCRIPT = {
    "rules": [
        {"name": "intro", "contains": "my name is", "content": "Nice to meet you!"},
        {"name": "recall", "contains": "what is my name", "content": "You told me before."},
        {"name": "ask", "contains": "deploy", "has_tool_result": False,
         "tool_calls": [{"name": "ask-operator", "arguments": {"question": "Which environment?"}}]},
        {"name": "deploy", "has_tool_result": "ask-operator",
         "content": "Deploying to {{tool_result}}."},
        {"name": "slow", "contains": "take your time", "content": "done", "delay": 10},
        {"name": "bad-key", "contains": "bad key", "error": {"status": 401, "message": "no"}},
    ],
    "default": {"content": "echo: {{last_user}}"},
}


@pytest.fixture(scope="module")
def llm() -> Iterator[MockLLM]:
    with MockLLM(SCRIPT) as server:
        yield server


def documents(llm: MockLLM, name: str, timeout: str = "1h") -> list[dict[str, Any]]:
    return [
        agent(name, model("openai", llm.url), displayName="Deployer",
              description="Deploys things after asking.", tools=[{"name": "ask-operator"}]),
        human_tool(timeout=timeout),
        secret(),
    ]


@pytest.fixture
def runtime(llm: MockLLM, agent_runtime: Any) -> Any:
    llm.reset()
    return agent_runtime(documents(llm, unique("a2a")))


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


async def connect(runtime: Any, http: httpx.AsyncClient, *, streaming: bool,
                  rest: bool = False) -> Any:
    bindings = ["HTTP+JSON"] if rest else ["JSONRPC"]
    config = ClientConfig(streaming=streaming, httpx_client=http,
                          supported_protocol_bindings=bindings)
    return await ClientFactory(config).create_from_url(runtime.url)


def user_message(text: str, context_id: str, task_id: str | None = None) -> Message:
    return Message(role=Role.ROLE_USER, message_id=str(uuid.uuid4()), context_id=context_id,
                   task_id=task_id or "", parts=[Part(text=text)])


async def send(client: Any, message: Message, **config: Any) -> list[StreamResponse]:
    request = SendMessageRequest(message=message)
    if config:
        request.configuration.CopyFrom(SendMessageConfiguration(**config))
    return [response async for response in client.send_message(request)]


def final_task_id(responses: list[StreamResponse]) -> str:
    last = responses[-1]
    if last.HasField("task"):
        return last.task.id
    return last.status_update.task_id


async def test_agent_card_has_skills_from_tools(runtime: Any, http: httpx.AsyncClient) -> None:
    card = (await http.get(f"{runtime.url}/.well-known/agent-card.json")).json()
    assert card["name"] == "Deployer"
    assert card["description"] == "Deploys things after asking."
    assert card["capabilities"]["streaming"] is True
    assert [(s["id"], s["tags"]) for s in card["skills"]] == [("ask-operator", ["human"])]
    assert card["skills"][0]["description"].startswith("Ask the operator")
    bindings = {i["protocolBinding"]: i["url"] for i in card["supportedInterfaces"]}
    assert bindings == {"JSONRPC": runtime.url, "HTTP+JSON": f"{runtime.url}/rest"}


@pytest.mark.parametrize(("streaming", "rest"), [(False, False), (True, False), (True, True)],
                         ids=["jsonrpc-send", "jsonrpc-stream", "rest-stream"])
async def test_multi_turn_in_one_context(runtime: Any, llm: MockLLM, http: httpx.AsyncClient,
                                         streaming: bool, rest: bool) -> None:
    client = await connect(runtime, http, streaming=streaming, rest=rest)
    context_id = str(uuid.uuid4())
    first = await send(client, user_message("Hello, my name is Ada", context_id))
    second = await send(client, user_message("What is my name?", context_id))

    # The second model call saw the first exchange: memory is keyed by the context id.
    assert [(m["role"], m["text"]) for m in llm.calls[-1].messages] == [
        ("user", "Hello, my name is Ada"), ("assistant", "Nice to meet you!"),
        ("user", "What is my name?"),
    ]
    for responses, answer in ((first, "Nice to meet you!"), (second, "You told me before.")):
        task = await client.get_task(GetTaskRequest(id=final_task_id(responses)))
        assert task.context_id == context_id
        assert task.status.state == TaskState.TASK_STATE_COMPLETED
        assert task.status.message.parts[0].text == answer
        assert [p.text for p in task.artifacts[0].parts] == [answer]
    if streaming:
        chunks = [r.artifact_update for r in second if r.HasField("artifact_update")]
        assert chunks[0].append is False and all(c.append for c in chunks[1:-1])
        assert "".join(c.artifact.parts[0].text for c in chunks[:-1]) == "You told me before."
        assert chunks[-1].last_chunk and chunks[-1].artifact.parts[0].text == "You told me before."
    await client.close()


@pytest.mark.parametrize("streaming", [False, True], ids=["send", "stream"])
async def test_human_tool_through_input_required(runtime: Any, llm: MockLLM,
                                                 http: httpx.AsyncClient,
                                                 streaming: bool) -> None:
    client = await connect(runtime, http, streaming=streaming)
    context_id = str(uuid.uuid4())
    asked = await send(client, user_message("Please deploy the release", context_id))
    task_id = final_task_id(asked)
    task = await client.get_task(GetTaskRequest(id=task_id))
    assert task.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
    assert task.status.message.parts[0].text == (
        "An agent needs your decision.\n\nWhich environment?"
    )

    await send(client, user_message("staging", context_id, task_id))
    task = await client.get_task(GetTaskRequest(id=task_id))
    assert task.status.state == TaskState.TASK_STATE_COMPLETED
    assert task.artifacts[0].parts[0].text == "Deploying to staging."
    # The answer reached the model as the human tool's result.
    last = llm.calls[-1]
    assert last.rule == "deploy"
    assert last.messages[-1]["tool_results"][0] == {
        "tool_call_id": last.messages[-2]["tool_calls"][0]["id"], "name": "ask-operator",
        "content": "staging", "is_error": False,
    }
    # The conversation goes on in the same context with the whole exchange remembered.
    await send(client, user_message("what is my name", context_id))
    texts = [m["text"] for m in llm.calls[-1].messages if m["text"]]
    assert texts == ["Please deploy the release", "Deploying to staging.", "what is my name"]
    await client.close()


async def test_unanswered_question_times_out(llm: MockLLM, agent_runtime: Any,
                                             http: httpx.AsyncClient) -> None:
    llm.reset()
    runtime = agent_runtime(documents(llm, unique("a2a-timeout"), timeout="500ms"))
    client = await connect(runtime, http, streaming=False)
    context_id = str(uuid.uuid4())
    task_id = final_task_id(await send(client, user_message("deploy now", context_id)))
    await asyncio.sleep(0.7)
    await send(client, user_message("production", context_id, task_id))
    task = await client.get_task(GetTaskRequest(id=task_id))
    assert task.status.state == TaskState.TASK_STATE_FAILED
    assert "not answered within" in task.status.message.parts[0].text
    assert llm.calls[-1].rule == "ask"  # the late answer never reached the model
    # The conversation is usable again: the stale question was closed in memory.
    await send(client, user_message("hello again", context_id))
    assert llm.calls[-1].rule == "default"
    assert llm.calls[-1].messages[-1]["text"] == "hello again"
    assert llm.calls[-1].messages[-2]["tool_results"][0]["content"].startswith(
        "The person did not answer within")
    await client.close()


async def test_cancel_a_running_task(runtime: Any, llm: MockLLM,
                                     http: httpx.AsyncClient) -> None:
    client = await connect(runtime, http, streaming=False)
    responses = await send(client, user_message("take your time", str(uuid.uuid4())),
                           return_immediately=True)
    task_id = final_task_id(responses)
    deadline = time.monotonic() + 5
    while not any(c.rule == "slow" for c in llm.calls):
        assert time.monotonic() < deadline, "the model was never called"
        await asyncio.sleep(0.05)
    cancelled = await client.cancel_task(CancelTaskRequest(id=task_id))
    assert cancelled.status.state == TaskState.TASK_STATE_CANCELED
    task = await client.get_task(GetTaskRequest(id=task_id))
    assert task.status.state == TaskState.TASK_STATE_CANCELED
    metrics = (await http.get(f"{runtime.url}/metrics")).text
    deadline = time.monotonic() + 5
    line = f'agent_requests_total{{agent="{runtime.name}",outcome="cancelled",protocol="a2a"}} 1.0'
    while line not in metrics:
        assert time.monotonic() < deadline, metrics
        await asyncio.sleep(0.05)
        metrics = (await http.get(f"{runtime.url}/metrics")).text
    await client.close()


async def test_provider_failure_fails_the_task_clearly(runtime: Any,
                                                       http: httpx.AsyncClient) -> None:
    client = await connect(runtime, http, streaming=True)
    responses = await send(client, user_message("use the bad key", str(uuid.uuid4())))
    task = await client.get_task(GetTaskRequest(id=final_task_id(responses)))
    assert task.status.state == TaskState.TASK_STATE_FAILED
    assert "rejected the agent's API key" in task.status.message.parts[0].text
    assert task.metadata["kagent.error"] == "provider_authentication_error"
    await client.close()


async def test_a_resent_message_id_is_answered_once(runtime: Any, llm: MockLLM) -> None:
    """The workflow engine re-sends an in-flight step with the same message id after a
    controller failover; the agent must not run it twice."""
    from kagent.agentclient import ask_agent_at

    key = f"run-uid-step-1-{uuid.uuid4().hex[:6]}"
    first, second = await asyncio.gather(
        ask_agent_at(runtime.url, runtime.name, "summarise the quarter", message_id=key),
        ask_agent_at(runtime.url, runtime.name, "summarise the quarter", message_id=key),
    )
    third = await ask_agent_at(runtime.url, runtime.name, "summarise the quarter", message_id=key)
    assert first == second == third == "echo: summarise the quarter"
    assert len([c for c in llm.calls if c.last_user == "summarise the quarter"]) == 1
    other = await ask_agent_at(runtime.url, runtime.name, "summarise the quarter", message_id=key + "-b")
    assert other == first
    assert len([c for c in llm.calls if c.last_user == "summarise the quarter"]) == 2
