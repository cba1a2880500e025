"""Traces: spans reach an OTLP/HTTP receiver with OTel GenAI (``gen_ai.*``) attributes, one
trace spans two agents (each a real ``kagent runtime`` process) and the caller, and the
Langfuse and LangSmith providers send their keys as headers — never in a span."""

from __future__ import annotations

import secrets as random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import openai
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kagent.mockllm import MockLLM
from kagent.testing.runtime import RuntimeProcess
from kagent.local.services import AsgiServer
from tests.runtime_manifests import API_KEY, agent, model, secret, unique

SPECIALIST = "specialist"
SCRIPT = {
    "rules": [
        {"name": "delegate", "model": "front-model", "has_tool_result": False,
         "tool_calls": [{"name": SPECIALIST, "arguments": {"message": "{{last_user}}"}}]},
        {"name": "relay", "model": "front-model", "has_tool_result": SPECIALIST,
         "content": "The specialist says: {{tool_result}}"},
        {"name": "specialist", "model": "specialist-model", "content": "42"},
    ],
    "default": {"content": "hello"},
}


@dataclass
class Span:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]


@dataclass
class Receiver:
    server: AsgiServer
    spans: list[Span] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.server.url

    def wait_for(self, predicate: Any, timeout: float = 20.0) -> list[Span]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.spans):
                return self.spans
            time.sleep(0.1)
        raise AssertionError(f"spans never matched; got {[(s.service, s.name) for s in self.spans]}")


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    """A tiny OTLP/HTTP (protobuf) trace receiver."""
    holder: dict[str, Receiver] = {}

    async def traces(request: Request) -> Response:
        body = await request.body()
        found = holder["r"]
        found.raw.append(body)
        found.headers.append(dict(request.headers))
        export = ExportTraceServiceRequest()
        export.ParseFromString(body)
        for resource_spans in export.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    found.spans.append(Span(
                        service=resource.get("service.name", ""), name=span.name,
                        trace_id=span.trace_id.hex(), span_id=span.span_id.hex(),
                        parent_id=span.parent_span_id.hex(),
                        attributes={a.key: _value(a.value) for a in span.attributes},
                    ))
        return Response(b"", media_type="application/x-protobuf")

    with AsgiServer(Starlette(routes=[Route("/v1/traces", traces, methods=["POST"])])) as server:
        holder["r"] = Receiver(server)
        yield holder["r"]


@pytest.fixture(scope="module")
def llm() -> Iterator[MockLLM]:
    with MockLLM(SCRIPT) as server:
        yield server


def tracing(receiver: Receiver, **extra: Any) -> dict[str, Any]:
    return {"tracing": {"enabled": True, "provider": "otlp", "endpoint": receiver.url, **extra}}


def test_one_trace_across_two_agents_with_gen_ai_spans(llm: MockLLM, receiver: Receiver) -> None:
    receiver.spans.clear()
    front_name = unique("front")
    specialist_docs = [
        agent(SPECIALIST, model("openai", llm.url, name="specialist-model"),
              description="Knows the answer.", observability=tracing(receiver)),
        secret(),
    ]
    with RuntimeProcess(specialist_docs) as specialist:
        front_docs = [
            agent(front_name, model("openai", llm.url, name="front-model"),
                  tools=[{"name": SPECIALIST, "kind": "Agent"}], observability=tracing(receiver)),
            secret(),
        ]
        # Any agent name resolves to the specialist's local port.
        environ = {"KAGENT_AGENT_URL_TEMPLATE": specialist.url}
        with RuntimeProcess(front_docs, environ=environ) as front:
            trace_id = random.token_hex(16)
            parent = random.token_hex(8)
            client = openai.OpenAI(base_url=front.openai_base_url, api_key="x")
            answer = client.chat.completions.create(
                model=front_name, messages=[{"role": "user", "content": "What is the answer?"}],
                extra_headers={"traceparent": f"00-{trace_id}-{parent}-01",
                               "X-Conversation-Id": str(uuid.uuid4())},
            )
            client.close()
            assert answer.choices[0].message.content == "The specialist says: 42"

            def complete(spans: list[Span]) -> bool:
                services = {s.service for s in spans if s.name.startswith("chat ")}
                return services >= {front_name, SPECIALIST}

            spans = receiver.wait_for(complete)

    ours = [s for s in spans if s.trace_id == trace_id]
    assert {s.service for s in ours} == {front_name, SPECIALIST}
    # Every span of both agents belongs to the caller's trace.
    assert [s for s in spans if s.service in (front_name, SPECIALIST) and
            s.trace_id != trace_id] == []

    front_request = next(s for s in ours if s.service == front_name and
                         s.name.startswith("kagent.request"))
    assert front_request.parent_id == parent
    assert front_request.attributes["gen_ai.agent.name"] == front_name
    assert front_request.attributes["kagent.protocol"] == "openai"

    chats = [s for s in ours if s.name.startswith("chat ")]
    assert {s.attributes["gen_ai.request.model"] for s in chats} == {
        "front-model", "specialist-model"}
    for span in chats:
        assert span.attributes["gen_ai.usage.input_tokens"] > 0
        assert span.attributes["gen_ai.usage.output_tokens"] > 0
        assert span.attributes["gen_ai.operation.name"] == "chat"

    tool_span = next(s for s in ours if s.attributes.get("gen_ai.tool.name") == SPECIALIST)
    assert tool_span.service == front_name
    # The specialist's request span is a child of the front agent's tool call: the W3C trace
    # context travelled with the A2A request.
    specialist_request = next(s for s in ours if s.service == SPECIALIST and
                              s.name.startswith("kagent.request"))
    assert specialist_request.parent_id == tool_span.span_id
    assert specialist_request.attributes["kagent.protocol"] == "a2a"

    # The model API key went to the model, never into a span or its export.
    assert all(API_KEY.encode() not in body for body in receiver.raw)


@pytest.mark.parametrize("provider", ["langfuse", "langsmith"])
def test_hosted_providers_send_their_keys_as_headers(provider: str, llm: MockLLM,
                                                     receiver: Receiver,
                                                     agent_runtime: Any) -> None:
    receiver.headers.clear()
    receiver.raw.clear()
    keys = ({"public-key": "pk-lf-public", "secret-key": "sk-lf-secret-value"}
            if provider == "langfuse" else {"api-key": "lsv2-secret-value"})
    name = unique(provider)
    runtime = agent_runtime([
        agent(name, model("openai", llm.url, name="front-model"),
              observability=tracing(receiver, provider=provider,
                                    secretRef={"name": "tracing-keys"})),
        secret(),
        secret("tracing-keys", **keys),
    ])
    client = openai.OpenAI(base_url=runtime.openai_base_url, api_key="x")
    client.chat.completions.create(model=name, messages=[{"role": "user", "content": "hi"}])
    client.close()
    runtime.runtime.tracer_provider.force_flush(10_000)
    deadline = time.monotonic() + 10
    while not receiver.headers and time.monotonic() < deadline:
        time.sleep(0.05)
    headers = receiver.headers[-1]
    if provider == "langfuse":
        import base64

        expected = base64.b64encode(b"pk-lf-public:sk-lf-secret-value").decode()
        assert headers["authorization"] == f"Basic {expected}"
    else:
        assert headers["x-api-key"] == "lsv2-secret-value"
    for value in keys.values():
        assert all(value.encode() not in body for body in receiver.raw)
