"""Agent as a tool: a pydantic-ai agent (scripted model) asks a second agent over A2A.

The second agent is a real A2A server built from a2a-sdk's own server classes (request handler,
task store, JSON-RPC and agent-card routes), answering with a task artifact, a direct message,
a failed task or an input-required task depending on what it is asked.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from a2a.helpers.proto_helpers import new_task_from_user_message, new_text_message
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandlerV2
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types import AgentCapabilities, AgentCard, AgentInterface, AgentSkill, Part
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import REGISTRY
from pydantic_ai import Agent
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider
from starlette.applications import Starlette

from kagent.api import Tool
from kagent.runtime.context import RuntimeContext
from kagent.runtime.secrets import SecretResolver
from kagent.runtime.tools import agent_toolset, build_toolset
from kagent.local.services import AsgiServer, free_port

AGENT = "orchestrator"


class Researcher(AgentExecutor):
    """Answers in the A2A shape its input asks for."""

    def __init__(self) -> None:
        self.inputs: list[str] = []

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        text = context.get_user_input()
        self.inputs.append(text)
        if text.startswith("direct:"):
            await event_queue.enqueue_event(new_text_message("direct reply to " + text[7:]))
            return
        assert context.message is not None
        task = context.current_task or new_task_from_user_message(context.message)
        await event_queue.enqueue_event(task)
        updater = TaskUpdater(event_queue, task.id, task.context_id)
        await updater.start_work()
        if text.startswith("fail:"):
            await updater.failed(updater.new_agent_message([Part(text="no sources for "
                                                                 + text[5:])]))
        elif text.startswith("ask:"):
            await updater.requires_input(updater.new_agent_message([Part(text="Which year?")]))
        else:
            await updater.add_artifact([Part(text=f"findings about {text}")], name="answer")
            await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        raise NotImplementedError


class HeaderRecorder:
    def __init__(self, app: Any) -> None:
        self.app = app
        self.seen: list[tuple[str, dict[str, str]]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
            self.seen.append((scope["path"], headers))
        await self.app(scope, receive, send)


@pytest.fixture(scope="module")
def researcher() -> Iterator[tuple[AsgiServer, Researcher, HeaderRecorder]]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    card = AgentCard(
        name="researcher", description="Finds things out.", version="1.0.0",
        supported_interfaces=[AgentInterface(url=url + "/", protocol_binding="JSONRPC",
                                             protocol_version="1.0")],
        capabilities=AgentCapabilities(streaming=False),
        default_input_modes=["text/plain"], default_output_modes=["text/plain"],
        skills=[AgentSkill(id="research", name="research", description="Research a topic",
                           tags=["research"])],
    )
    executor = Researcher()
    handler = DefaultRequestHandlerV2(agent_executor=executor, task_store=InMemoryTaskStore(),
                                      agent_card=card)
    app = HeaderRecorder(Starlette(routes=[*create_agent_card_routes(card),
                                           *create_jsonrpc_routes(handler, "/")]))
    with AsgiServer(app, port=port) as server:
        yield server, executor, app


@pytest.fixture
async def ctx(researcher: tuple[AsgiServer, Researcher, HeaderRecorder]
              ) -> AsyncIterator[RuntimeContext]:
    server, _, _ = researcher
    context = RuntimeContext(agent_name=AGENT, namespace="team",
                             secrets=SecretResolver([], environ={}),
                             agent_url_template=server.url)
    yield context
    await context.http.aclose()


async def run(toolset: Any, tool: str, message: str) -> str:
    from kagent.mockllm import MockLLM

    script = {"rules": [
        {"has_tool_result": False, "tools_offered": tool,
         "tool_calls": [{"name": tool, "arguments": {"message": message}}]},
        {"has_tool_result": tool, "content": "{{tool_result}}"},
    ]}
    with MockLLM(script) as llm:
        model = OpenAIChatModel("gpt-4o", provider=OpenAIProvider(base_url=llm.openai_base_url,
                                                                  api_key="sk-test"))
        result = await Agent(model, toolsets=[toolset]).run("Research it.")
        return result.output


async def test_agent_entry_calls_the_other_agent_with_trace_context(
    researcher: tuple[AsgiServer, Researcher, HeaderRecorder], ctx: RuntimeContext
) -> None:
    _, executor, recorder = researcher
    recorder.seen.clear()
    before = REGISTRY.get_sample_value("agent_tool_calls_total",
                                       {"agent": AGENT, "tool": "researcher",
                                        "outcome": "success"}) or 0
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("request") as span:
        output = await run(agent_toolset("researcher", None, ctx), "researcher",
                           "tide tables in Brest")
    assert output == "findings about tide tables in Brest"
    assert executor.inputs[-1] == "tide tables in Brest"
    paths = [path for path, _ in recorder.seen]
    assert paths == ["/.well-known/agent-card.json", "/"]
    trace_id = f"{span.get_span_context().trace_id:032x}"
    assert all(headers["traceparent"].split("-")[1] == trace_id for _, headers in recorder.seen)
    assert REGISTRY.get_sample_value("agent_tool_calls_total",
                                     {"agent": AGENT, "tool": "researcher",
                                      "outcome": "success"}) == before + 1


async def test_tool_resource_of_type_agent(
    researcher: tuple[AsgiServer, Researcher, HeaderRecorder], ctx: RuntimeContext
) -> None:
    tool = Tool.model_validate({
        "apiVersion": "kagent.dev/v1alpha1", "kind": "Tool",
        "metadata": {"name": "ask-researcher", "namespace": "team"},
        "spec": {"type": "agent", "description": "Ask the researcher.",
                 "agent": {"name": "researcher"}},
    })
    toolset = await build_toolset(tool, ctx)
    assert await run(toolset, "ask-researcher", "direct:quick one") == \
        "direct reply to quick one"


async def test_failed_and_input_required_tasks(ctx: RuntimeContext) -> None:
    toolset = agent_toolset("researcher", "Ask the researcher.", ctx)
    failed = await run(toolset, "researcher", "fail:dark matter")
    assert json.loads(failed) == {"error": "agent researcher failed the task: no sources for "
                                           "dark matter"}
    asked = await run(toolset, "researcher", "ask:weather")
    assert asked == "Agent researcher needs more information: Which year?"


async def test_unreachable_agent_is_an_error_the_model_sees(ctx: RuntimeContext) -> None:
    ctx.agent_url_template = "http://127.0.0.1:9/{name}"
    output = await run(agent_toolset("ghost", None, ctx), "ghost", "hello")
    assert "cannot reach agent ghost at http://127.0.0.1:9/ghost" in output
