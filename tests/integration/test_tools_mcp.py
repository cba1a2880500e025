"""The mcp tool against a real server built with the official ``mcp`` SDK (MCPServer), served
over streamable HTTP and over SSE by uvicorn: discovery for the controller, and tool calls from a
pydantic-ai agent with only the listed tools offered."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import REGISTRY
from pydantic_ai import Agent
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

from kagent.api import Tool
from kagent.runtime.context import RuntimeContext
from kagent.runtime.secrets import SecretResolver
from kagent.runtime.tools import build_toolset, list_mcp_tools
from kagent.mockllm import MockLLM
from kagent.local.services import AsgiServer

TOKEN = "mcp-secret-token"
AGENT = "mcp-test-agent"


def make_server() -> MCPServer:
    server = MCPServer("kagent-test-tools")

    @server.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @server.tool()
    def whoami(ctx: Context) -> str:
        """Report what the caller sent: its Authorization header and trace id."""
        headers = ctx.headers or {}
        span = trace.get_current_span().get_span_context()
        return json.dumps({"authorization": headers.get("authorization"),
                           "trace_id": f"{span.trace_id:032x}" if span.is_valid else None})

    @server.tool()
    def delete_everything() -> str:
        """A tool the Tool resource does not pass on."""
        return "deleted"

    @server.tool()
    def fail(reason: str) -> str:
        """Always fails."""
        raise ToolError(f"cannot do that: {reason}")

    return server


class HeaderRecorder:
    """ASGI middleware that remembers each request's headers."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.seen: list[dict[str, str]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.seen.append({k.decode().lower(): v.decode() for k, v in scope["headers"]})
        await self.app(scope, receive, send)


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, tuple[str, HeaderRecorder]]]:
    http_app = HeaderRecorder(make_server().streamable_http_app())
    sse_app = HeaderRecorder(make_server().sse_app())
    with AsgiServer(http_app, lifespan="on") as http, AsgiServer(sse_app) as sse:
        yield {
            "streamable-http": (http.url + "/mcp", http_app),
            "sse": (sse.url + "/sse", sse_app),
        }


@pytest.fixture
async def ctx() -> AsyncIterator[RuntimeContext]:
    secrets = SecretResolver(
        [{"metadata": {"name": "mcp-auth"}, "stringData": {"token": f"Bearer {TOKEN}"}}],
        environ={},
    )
    context = RuntimeContext(agent_name=AGENT, namespace="default", secrets=secrets)
    yield context
    await context.http.aclose()


def mcp_tool(url: str, transport: str, tool_names: list[str] | None = ("add", "whoami", "fail")
             ) -> Tool:
    mcp: dict[str, Any] = {
        "url": url, "transport": transport,
        "headersFrom": [{"name": "Authorization",
                         "secretKeyRef": {"name": "mcp-auth", "key": "token"}}],
    }
    if tool_names is not None:
        mcp["toolNames"] = list(tool_names)
    return Tool.model_validate({
        "apiVersion": "kagent.dev/v1alpha1", "kind": "Tool",
        "metadata": {"name": "team-tools", "namespace": "default"},
        "spec": {"type": "mcp", "mcp": mcp},
    })


TRANSPORTS = ["streamable-http", "sse"]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_discovery_lists_only_the_listed_tools(
    servers: dict[str, tuple[str, HeaderRecorder]], ctx: RuntimeContext, transport: str
) -> None:
    url, recorder = servers[transport]
    recorder.seen.clear()
    found = await list_mcp_tools(mcp_tool(url, transport), ctx)
    assert found == [
        {"name": "add", "description": "Add two integers."},
        {"name": "whoami",
         "description": "Report what the caller sent: its Authorization header and trace id."},
        {"name": "fail", "description": "Always fails."},
    ]
    everything = await list_mcp_tools(mcp_tool(url, transport, tool_names=None), ctx)
    assert [t["name"] for t in everything] == ["add", "whoami", "delete_everything", "fail"]
    assert recorder.seen and all(h.get("authorization") == f"Bearer {TOKEN}"
                                 for h in recorder.seen)


async def test_discovery_error_names_the_server(ctx: RuntimeContext) -> None:
    with pytest.raises(RuntimeError, match="MCP server http://127.0.0.1:9/mcp"):
        await list_mcp_tools(mcp_tool("http://127.0.0.1:9/mcp", "streamable-http"), ctx)


def crowded_server(count: int, description: str = "A tool.") -> MCPServer:
    server = MCPServer("crowded")

    def noop() -> str:
        return "ok"

    for i in range(count):
        server.add_tool(noop, name=f"tool_{i}", description=description)
    return server


async def test_discovery_is_bounded_in_count_and_size(ctx: RuntimeContext) -> None:
    from kagent.runtime.tools import mcp as mcp_module

    too_many = crowded_server(mcp_module.MAX_DISCOVERED_TOOLS + 1)
    with AsgiServer(too_many.streamable_http_app(), lifespan="on") as server:
        tool = mcp_tool(server.url + "/mcp", "streamable-http", tool_names=None)
        with pytest.raises(RuntimeError, match=f"more than {mcp_module.MAX_DISCOVERED_TOOLS} tools"):
            await list_mcp_tools(tool, ctx)
    wordy = crowded_server(2, description="x" * 100_000)
    with AsgiServer(wordy.streamable_http_app(), lifespan="on") as server:
        tool = mcp_tool(server.url + "/mcp", "streamable-http", tool_names=None)
        found = await list_mcp_tools(tool, ctx)
    assert [t["name"] for t in found] == ["tool_0", "tool_1"]
    assert all(len(t["description"]) == mcp_module.MAX_DESCRIPTION_CHARS for t in found)


async def test_discovery_of_a_server_that_never_answers_ends_in_time(
        ctx: RuntimeContext, monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio as aio

    from kagent.runtime.tools import mcp as mcp_module

    async def silent(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await aio.sleep(3600)  # accepts the connection, never answers

    monkeypatch.setattr(mcp_module, "DISCOVERY_TIMEOUT", 1.0)
    with AsgiServer(silent) as server:
        tool = mcp_tool(server.url + "/mcp", "streamable-http", tool_names=None)
        with pytest.raises(RuntimeError, match="took longer than 1 s"):
            await list_mcp_tools(tool, ctx)


def agent_script(tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"rules": [
        {"has_tool_result": False,
         "tool_calls": [{"name": tool, "arguments": arguments}]},
        {"has_tool_result": tool, "content": "{{tool_result}}"},
    ]}


async def run_agent(tool: Tool, ctx: RuntimeContext, script: dict[str, Any]
                    ) -> tuple[str, MockLLM]:
    toolset = await build_toolset(tool, ctx)
    with MockLLM(script) as llm:
        model = OpenAIChatModel("gpt-4o", provider=OpenAIProvider(base_url=llm.openai_base_url,
                                                                  api_key="sk-test"))
        result = await Agent(model, toolsets=[toolset]).run("Use the team tools.")
        return result.output, llm


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_agent_calls_an_mcp_tool_with_headers_and_trace_context(
    servers: dict[str, tuple[str, HeaderRecorder]], ctx: RuntimeContext, transport: str
) -> None:
    url, recorder = servers[transport]
    recorder.seen.clear()
    output, llm = await run_agent(mcp_tool(url, transport), ctx, agent_script("add", {"a": 2,
                                                                                   "b": 40}))
    assert output == "42"
    assert sorted(llm.calls[0].tools) == ["add", "fail", "whoami"]  # delete_everything is hidden

    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("request") as span:
        output, llm = await run_agent(mcp_tool(url, transport), ctx,
                                      agent_script("whoami", {}))
    seen = json.loads(output)
    # The server got the header; the secret it echoed back was redacted before the model saw it.
    assert all(h.get("authorization") == f"Bearer {TOKEN}" for h in recorder.seen)
    assert seen["authorization"] == "[REDACTED]"
    assert TOKEN not in json.dumps([c.to_json() for c in llm.calls])
    assert seen["trace_id"] == f"{span.get_span_context().trace_id:032x}"


async def test_tool_errors_and_hidden_tools_reach_the_model_as_errors(
    servers: dict[str, tuple[str, HeaderRecorder]], ctx: RuntimeContext
) -> None:
    url, _ = servers["streamable-http"]
    before = REGISTRY.get_sample_value("agent_tool_calls_total",
                                       {"agent": AGENT, "tool": "fail", "outcome": "error"}) or 0
    output, _ = await run_agent(mcp_tool(url, "streamable-http"), ctx,
                                agent_script("fail", {"reason": "no budget"}))
    assert "cannot do that: no budget" in output
    after = REGISTRY.get_sample_value("agent_tool_calls_total",
                                      {"agent": AGENT, "tool": "fail", "outcome": "error"})
    assert after == before + 1

    hidden, _ = await run_agent(mcp_tool(url, "streamable-http"), ctx,
                                {"rules": [
                                    {"has_tool_result": False, "times": 1, "tool_calls": [
                                        {"name": "delete_everything", "arguments": {}}]},
                                    {"content": "gave up: {{tool_result}}"},
                                ]})
    assert "Unknown tool name: 'delete_everything'" in hidden
