"""Per-request limits (``spec.limits``) stop a runaway request with a clear message, counted
as outcome ``limit`` in the request metrics."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from kagent.mockllm import MockLLM
from kagent.local.services import AsgiServer
from tests.runtime_manifests import agent, model, secret, tool, unique

SCRIPT = {
    "rules": [
        # A model that never stops asking for the tool.
        {"name": "loop", "contains": "forever", "tools_offered": "ping",
         "tool_calls": [{"name": "ping", "arguments": {}}], "usage": {"input_tokens": 20,
                                                                      "output_tokens": 20}},
        {"name": "slow", "contains": "slowly", "content": "finally", "delay": 3},
    ],
    "default": {"content": "fine"},
}


@pytest.fixture(scope="module")
def llm() -> Iterator[MockLLM]:
    with MockLLM(SCRIPT) as server:
        yield server


@pytest.fixture(scope="module")
def pong() -> Iterator[tuple[AsgiServer, list[int]]]:
    calls: list[int] = []

    async def ping(request: Request) -> JSONResponse:
        calls.append(1)
        return JSONResponse({"pong": True})

    with AsgiServer(Starlette(routes=[Route("/ping", ping)])) as server:
        yield server, calls


def start(agent_runtime: Any, llm: MockLLM, pong_url: str, limits: dict[str, Any]) -> Any:
    return agent_runtime([
        agent(unique("limits"), model("openai", llm.url), tools=[{"name": "ping"}],
              limits=limits),
        tool("ping", {"type": "api", "description": "Ping the service.",
                      "api": {"endpoint": f"{pong_url}/ping"}}),
        secret(),
    ])


@pytest.mark.parametrize(("limits", "prompt", "message", "model_calls", "tool_calls"), [
    ({"maxTurns": 3}, "loop forever",
     "the request was stopped: The next request would exceed the limits.maxTurns of 3", 3, 3),
    ({"maxToolCalls": 2}, "loop forever",
     "the request was stopped: The next tool call(s) would exceed the limits.maxToolCalls of 2",
     3, 2),
    ({"maxTokens": 100}, "loop forever",
     "the request was stopped: Exceeded the limits.maxTokens of 100", 3, 2),
    ({"timeout": "500ms"}, "do it slowly",
     "the request took longer than the agent's time limit (500ms, limits.timeout)", 1, 0),
], ids=["maxTurns", "maxToolCalls", "maxTokens", "timeout"])
def test_limits_stop_a_runaway_request(limits: dict[str, Any], prompt: str, message: str,
                                       model_calls: int, tool_calls: int, llm: MockLLM,
                                       pong: tuple[AsgiServer, list[int]],
                                       agent_runtime: Any) -> None:
    server, calls = pong
    calls.clear()
    llm.reset()
    runtime = start(agent_runtime, llm, server.url, limits)
    with (openai.OpenAI(base_url=runtime.openai_base_url, api_key="x") as client,
          pytest.raises(openai.UnprocessableEntityError) as caught):
        client.chat.completions.create(model=runtime.name,
                                       messages=[{"role": "user", "content": prompt}])
    assert caught.value.body["code"] == "limit_exceeded"
    assert caught.value.body["message"].startswith(message), caught.value.body
    assert len([c for c in llm.calls if c.endpoint == "chat"]) == model_calls
    assert len(calls) == tool_calls
    metrics = httpx.get(f"{runtime.url}/metrics").text
    assert (f'agent_requests_total{{agent="{runtime.name}",outcome="limit",protocol="openai"}} '
            "1.0") in metrics
