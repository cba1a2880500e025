"""Tool calls as they happen: over A2A streaming (the official a2a-sdk client, as the dashboard's
chat panel uses it) the runtime reports each tool call when it starts and when it returns, with
the result bounded in size and secret values redacted."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from kagent.dashboard.chat import stream_turn
from kagent.local.services import AsgiServer
from kagent.mockllm import MockLLM
from tests.runtime_manifests import API_KEY, agent, model, secret, tool, unique

SCRIPT = {"rules": [
    {"name": "answer", "has_tool_result": "lookup", "content": "Looked it up."},
    {"name": "call", "contains": "look up", "tools_offered": "lookup",
     "tool_calls": [{"id": "call-1", "name": "lookup", "arguments": {"item": "widgets"}}]},
]}


@pytest.fixture(scope="module")
def service() -> Iterator[AsgiServer]:
    async def lookup(request: Request) -> PlainTextResponse:
        # A careless service echoing a credential, and a long body.
        return PlainTextResponse(f"{request.query_params['item']}: 42 in stock; key {API_KEY}; "
                                 + "x" * 5000)

    with AsgiServer(Starlette(routes=[Route("/lookup", lookup)])) as server:
        yield server


async def test_tool_calls_are_reported_as_they_happen(agent_runtime: Any,
                                                       service: AsgiServer) -> None:
    with MockLLM(SCRIPT) as llm:
        runtime = agent_runtime([
            agent(unique("tools"), model("openai", llm.url), tools=[{"name": "lookup"}]),
            tool("lookup", {"type": "api", "description": "Look an item up.",
                            "parameters": [{"name": "item", "type": "string", "required": True}],
                            "api": {"endpoint": f"{service.url}/lookup", "method": "GET"}}),
            secret(),
        ])
        async with httpx.AsyncClient(timeout=30) as http:
            events = [e async for e in stream_turn(http, runtime.url, runtime.name,
                                                   "please look up widgets",
                                                   context_id=None, task_id=None)]
    tools = [e for e in events if e["type"] == "tool"]
    assert [(t["phase"], t["name"], t["id"]) for t in tools] == [
        ("call", "lookup", "call-1"), ("result", "lookup", "call-1")]
    assert tools[0]["arguments"] == {"item": "widgets"}
    result = tools[1]
    assert result["outcome"] == "success"
    assert result["content"].startswith("widgets: 42 in stock")
    assert API_KEY not in result["content"] and "[REDACTED]" in result["content"]
    assert len(result["content"]) < 2_100 and "more characters" in result["content"]
    # The tool events come before the answer, which still arrives whole.
    done = [e for e in events if e["type"] == "done"]
    assert done and done[-1]["text"] == "Looked it up."
    assert events.index(tools[1]) < events.index(done[-1])
