"""The api tool driven by a real pydantic-ai agent (scripted model) against a real HTTP server.

Each test checks both ends: the request the HTTP service received, and what the model was told.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import REGISTRY
from pydantic_ai import Agent
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from kagent.api import Tool
from kagent.runtime.context import RuntimeContext
from kagent.runtime.secrets import SecretResolver
from kagent.runtime.tools import build_toolset
from kagent.mockllm import MockLLM
from kagent.local.services import AsgiServer

TOKEN = "s3cret-token-value"
AGENT = "api-test-agent"


class Recorder:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    async def record(self, request: Request) -> dict[str, Any]:
        body = await request.body()
        entry = {
            "method": request.method,
            "raw_path": request.scope["raw_path"].decode(),
            "query": request.url.query,
            "headers": dict(request.headers),
            "json": json.loads(body) if body else None,
        }
        self.requests.append(entry)
        return entry


@pytest.fixture(scope="module")
def service() -> Iterator[tuple[AsgiServer, Recorder]]:
    recorder = Recorder()

    async def weather(request: Request) -> Response:
        await recorder.record(request)
        return JSONResponse({"city": request.path_params["city"], "temp": 21,
                             "units": request.query_params.get("units")})

    async def tickets(request: Request) -> Response:
        entry = await recorder.record(request)
        return JSONResponse({"id": 42, "title": entry["json"]["title"]}, status_code=201)

    async def fail(request: Request) -> Response:
        await recorder.record(request)
        echoed = request.headers.get("authorization", "")
        return PlainTextResponse(f"upstream is down; you sent {echoed}", status_code=503)

    async def bad_shape(request: Request) -> Response:
        await recorder.record(request)
        return JSONResponse({"temp": "warm"})

    async def slow(request: Request) -> Response:
        await recorder.record(request)
        await asyncio.sleep(3)
        return JSONResponse({"late": True})

    app = Starlette(routes=[
        Route("/weather/{city:path}", weather),
        Route("/tickets", tickets, methods=["POST"]),
        Route("/fail", fail),
        Route("/bad-shape", bad_shape),
        Route("/slow", slow),
    ])
    with AsgiServer(app) as server:
        yield server, recorder


@pytest.fixture
async def ctx() -> AsyncIterator[RuntimeContext]:
    secrets = SecretResolver(
        [{"metadata": {"name": "weather-api"}, "stringData": {"token": TOKEN}}], environ={}
    )
    context = RuntimeContext(agent_name=AGENT, namespace="default", secrets=secrets)
    yield context
    await context.http.aclose()


def weather_tool(base: str, path: str = "/weather/{city}", **extra: Any) -> Tool:
    spec: dict[str, Any] = {
        "type": "api",
        "description": "Current weather for a city.",
        "parameters": [
            {"name": "city", "type": "string", "required": True},
            {"name": "units", "type": "string", "enum": ["metric", "imperial"],
             "default": "metric"},
        ],
        "api": {
            "endpoint": base + path,
            "method": "GET",
            "headers": {"X-Client": "kagent-test"},
            "auth": {"type": "bearer", "secretRef": {"name": "weather-api", "key": "token"}},
            "timeout": "5s",
        },
    }
    spec.update(extra)
    return Tool.model_validate(
        {"apiVersion": "kagent.dev/v1alpha1", "kind": "Tool",
         "metadata": {"name": "get-weather", "namespace": "default"}, "spec": spec}
    )


def script(*calls: dict[str, Any], tool: str = "get-weather") -> dict[str, Any]:
    """The model calls ``tool`` with each argument set in turn, then reports the last result."""
    rules: list[dict[str, Any]] = [
        {"name": "first", "has_tool_result": False, "tools_offered": tool, "times": 1,
         "tool_calls": [{"name": tool, "arguments": calls[0]}]},
    ]
    for i, arguments in enumerate(calls[1:]):
        rules.append({"name": f"again-{i}", "has_tool_result": tool, "times": 1,
                      "tool_calls": [{"name": tool, "arguments": arguments}]})
    rules.append({"name": "answer", "has_tool_result": tool, "content": "RESULT {{tool_result}}"})
    return {"rules": rules}


def model(llm: MockLLM) -> OpenAIChatModel:
    return OpenAIChatModel("gpt-4o", provider=OpenAIProvider(base_url=llm.openai_base_url,
                                                             api_key="sk-test"))


def tool_results(llm: MockLLM) -> list[dict[str, Any]]:
    """Every tool result the model was sent, in order."""
    seen = []
    for call in llm.calls:
        for message in call.messages:
            for result in message.get("tool_results") or []:
                if result not in seen:
                    seen.append(result)
    return seen


def tool_calls_metric(tool: str, outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "agent_tool_calls_total", {"agent": AGENT, "tool": tool, "outcome": outcome}
    )
    return value or 0.0


async def run_agent(tool: Tool, ctx: RuntimeContext,
                    llm_script: dict[str, Any]) -> tuple[str, MockLLM]:
    toolset = await build_toolset(tool, ctx)
    assert toolset is not None
    with MockLLM(llm_script) as llm:
        agent = Agent(model(llm), toolsets=[toolset])
        result = await agent.run("What is the weather?")
        return result.output, llm


async def test_get_call_fills_path_query_auth_and_trace_context(
    service: tuple[AsgiServer, Recorder], ctx: RuntimeContext
) -> None:
    server, recorder = service
    recorder.requests.clear()
    before = tool_calls_metric("get-weather", "success")
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("request") as span:
        output, llm = await run_agent(
            weather_tool(server.url), ctx,
            script({"city": "Paris Nord/Est", "units": "imperial"}),
        )
    assert len(recorder.requests) == 1, output
    [request] = recorder.requests
    assert request["method"] == "GET"
    assert request["raw_path"] == "/weather/Paris%20Nord%2FEst"
    assert request["query"] == "units=imperial"
    assert request["headers"]["authorization"] == f"Bearer {TOKEN}"
    assert request["headers"]["x-client"] == "kagent-test"
    trace_id = format(span.get_span_context().trace_id, "032x")
    assert request["headers"]["traceparent"].split("-")[1] == trace_id
    assert json.loads(output.removeprefix("RESULT ")) == {
        "city": "Paris Nord/Est", "temp": 21, "units": "imperial"
    }
    assert tool_calls_metric("get-weather", "success") == before + 1
    assert TOKEN not in json.dumps([c.to_json() for c in llm.calls])


async def test_post_sends_json_body_and_validates_output(
    service: tuple[AsgiServer, Recorder], ctx: RuntimeContext
) -> None:
    server, recorder = service
    recorder.requests.clear()
    tool = Tool.model_validate({
        "apiVersion": "kagent.dev/v1alpha1", "kind": "Tool",
        "metadata": {"name": "create.ticket", "namespace": "default"},
        "spec": {
            "type": "api",
            "description": "Open a support ticket.",
            "parameters": [
                {"name": "title", "type": "string", "required": True},
                {"name": "priority", "type": "integer", "required": True},
            ],
            "output": {"type": "object", "required": ["id"],
                       "properties": {"id": {"type": "integer"}}},
            "api": {"endpoint": server.url + "/tickets", "method": "POST",
                    "auth": {"type": "basic",
                             "secretRef": {"name": "weather-api", "key": "token"}}},
        },
    })
    ctx.secrets = SecretResolver(
        [{"metadata": {"name": "weather-api"}, "stringData": {"token": "bot:pa55word"}}],
        environ={},
    )
    # The dot in the resource name is not allowed in a tool name: the model sees an underscore.
    output, _ = await run_agent(tool, ctx, script({"title": "Printer on fire", "priority": "2"},
                                                  tool="create_ticket"))
    [request] = recorder.requests
    assert request["method"] == "POST"
    assert request["json"] == {"title": "Printer on fire", "priority": 2}
    assert request["headers"]["authorization"] == "Basic Ym90OnBhNTV3b3Jk"
    assert json.loads(output.removeprefix("RESULT ")) == {"id": 42, "title": "Printer on fire"}


async def test_bad_argument_becomes_a_retry_prompt(
    service: tuple[AsgiServer, Recorder], ctx: RuntimeContext
) -> None:
    server, recorder = service
    recorder.requests.clear()
    output, llm = await run_agent(
        weather_tool(server.url), ctx,
        script({"units": "kelvin"}, {"city": "Oslo", "units": "metric"}),
    )
    # Only the corrected call reached the service.
    assert [r["raw_path"] for r in recorder.requests] == ["/weather/Oslo"]
    first = tool_results(llm)[0]["content"]
    assert "invalid arguments" in first and "'city' is a required property" in first
    assert "'kelvin' is not one of ['metric', 'imperial']" in first
    assert json.loads(output.removeprefix("RESULT "))["city"] == "Oslo"


async def test_http_error_reaches_the_model_with_the_secret_redacted(
    service: tuple[AsgiServer, Recorder], ctx: RuntimeContext, caplog: pytest.LogCaptureFixture
) -> None:
    server, recorder = service
    recorder.requests.clear()
    before = tool_calls_metric("get-weather", "error")
    caplog.set_level(logging.DEBUG)
    output, llm = await run_agent(weather_tool(server.url, "/fail"), ctx, script({"city": "x"}))
    [request] = recorder.requests
    assert request["headers"]["authorization"] == f"Bearer {TOKEN}"  # the service did get it
    assert "HTTP 503" in output and "upstream is down" in output
    assert "[REDACTED]" in output
    assert tool_calls_metric("get-weather", "error") == before + 1
    everything = output + json.dumps([c.to_json() for c in llm.calls]) + caplog.text
    assert TOKEN not in everything


async def test_result_not_matching_output_schema_is_an_error(
    service: tuple[AsgiServer, Recorder], ctx: RuntimeContext
) -> None:
    server, _ = service
    tool = weather_tool(server.url, "/bad-shape", output={
        "type": "object", "required": ["temp"], "properties": {"temp": {"type": "number"}},
    })
    output, _ = await run_agent(tool, ctx, script({"city": "x"}))
    assert "does not match the tool's output schema" in output
    assert "temp: 'warm' is not of type 'number'" in output


async def test_timeout_is_reported(service: tuple[AsgiServer, Recorder],
                                   ctx: RuntimeContext) -> None:
    server, _ = service
    tool = weather_tool(server.url, "/slow")
    assert tool.spec.api is not None
    tool.spec.api.timeout = "300ms"
    output, _ = await run_agent(tool, ctx, script({"city": "x"}))
    assert "did not answer within 300ms" in output
