"""The plain turn (an agent without tools, a caller that does not stream) skips the agent graph
and must not be told apart from it: the same requests reach the model, the same history is
stored, the same limits, metrics, cost and spans; an answer only the graph can handle is handed
to it without asking the model twice."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY
from pydantic_ai.messages import ModelMessagesTypeAdapter

from kagent.mockllm import MockLLM
from kagent.runtime.agent import AgentRuntime, Turn, TurnFailed
from kagent.runtime.config import build_runtime_config
from kagent.runtime.plain import PlainModel
from tests.runtime_manifests import agent, model, secret, unique

SCRIPT: dict[str, Any] = {
    "rules": [
        {"contains": "call a tool", "tool_calls": [{"name": "lookup", "arguments": {"q": "x"}}],
         "times": 1, "usage": {"input_tokens": 5, "output_tokens": 3}},
        {"contains": "slowly", "content": "late", "delay": 3},
    ],
    "default": {"content": "Answer to {{last_user}}", "usage": {"input_tokens": 20, "output_tokens": 8}},
}


@pytest.fixture(scope="module")
def llm() -> Iterator[MockLLM]:
    with MockLLM(SCRIPT) as server:
        yield server


@pytest.fixture
def plain_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The prompts that took the plain path (so a test cannot pass on the graph alone)."""
    taken: list[str] = []
    answer = PlainModel.answer

    async def counted(self: PlainModel, history: Any, prompt: str, **kwargs: Any) -> Any:
        taken.append(prompt)
        return await answer(self, history, prompt, **kwargs)

    monkeypatch.setattr(PlainModel, "answer", counted)
    return taken


def documents(llm: MockLLM, name: str, **spec: Any) -> list[dict[str, Any]]:
    block = model("openai", llm.url, name="plain-model", temperature=0.3,
                  pricing={"inputPerMillion": 1.0, "outputPerMillion": 2.0})
    return [agent(name, block, systemPrompt="You are terse.", **spec), secret()]


async def started(llm: MockLLM, name: str, *, graph: bool, tracer: TracerProvider | None = None,
                  **spec: Any) -> AgentRuntime:
    runtime = AgentRuntime(build_runtime_config(documents(llm, name, **spec), environ={}),
                           tracer_provider=tracer)
    await runtime.start()
    assert runtime.plain is not None, "an agent without tools takes plain turns"
    if graph:
        runtime.plain = None  # every turn through the agent graph, as before plain turns
    return runtime


def calls_since(llm: MockLLM, start: int) -> list[dict[str, Any]]:
    return [call.body for call in llm.calls[start:]]


VOLATILE = {"timestamp", "run_id", "provider_response_id", "provider_details", "tool_call_id"}


def comparable(messages: Any) -> Any:
    """Stored messages without what differs between any two runs (times, ids)."""
    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in VOLATILE}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value
    return strip(ModelMessagesTypeAdapter.dump_python(list(messages), mode="json"))


async def conversation(runtime: AgentRuntime, llm: MockLLM,
                       turns: list[Turn]) -> tuple[list[Any], list[dict[str, Any]], list[str]]:
    start = len(llm.calls)
    answers = [(await runtime.run(turn)).text for turn in turns]
    stored = (await runtime.store.load(turns[0].conversation_id)).messages
    return comparable(stored), calls_since(llm, start), answers


def turns(conversation_id: str) -> list[Turn]:
    return [
        Turn(conversation_id, "hello", "openai", instructions="Answer in French.", stream=False),
        Turn(conversation_id, "and again", "openai", stream=False),
        Turn(conversation_id, "third", "openai", instructions="Be brief.", stream=False),
    ]


async def test_a_plain_turn_sends_and_stores_what_the_agent_graph_does(
        llm: MockLLM, plain_calls: list[str]) -> None:
    plain = await started(llm, unique("plain"), graph=False)
    graph = await started(llm, unique("graph"), graph=True)
    try:
        plain_stored, plain_sent, plain_answers = await conversation(plain, llm, turns("c-1"))
        assert plain_calls == ["hello", "and again", "third"]
        graph_stored, graph_sent, graph_answers = await conversation(graph, llm, turns("c-1"))
        assert len(plain_calls) == 3
    finally:
        await plain.close()
        await graph.close()
    assert plain_answers == graph_answers == ["Answer to hello", "Answer to and again",
                                              "Answer to third"]
    assert plain_sent == graph_sent
    # Instructions as the graph sends them: the system prompt and the caller's, two messages.
    assert plain_sent[0]["messages"][:2] == [{"role": "system", "content": "You are terse."},
                                             {"role": "system", "content": "Answer in French."}]
    assert plain_sent[0]["stream"] is False
    assert plain_stored == graph_stored
    assert len(plain_stored) == 6


async def test_a_stateless_caller_history_is_sent_as_the_graph_sends_it(
        llm: MockLLM, plain_calls: list[str]) -> None:
    from kagent.runtime.openai_api import parse_messages

    history, text, system = parse_messages([
        {"role": "user", "content": "first"}, {"role": "user", "content": "more"},
        {"role": "assistant", "content": "ok"}, {"role": "user", "content": "last"}])
    sent = []
    for graph in (False, True):
        runtime = await started(llm, unique("stateless"), graph=graph)
        start = len(llm.calls)
        try:
            result = await runtime.run(Turn("stateless-1", text, "openai", history=history,
                                            instructions=system, stream=False))
        finally:
            await runtime.close()
        assert result.text == "Answer to last"
        sent.append(calls_since(llm, start))
    assert plain_calls == ["last"]
    assert sent[0] == sent[1]


def sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_metrics_cost_and_usage_are_counted_once(llm: MockLLM) -> None:
    name = unique("metered")
    runtime = await started(llm, name, graph=False)
    try:
        result = await runtime.run(Turn("c-2", "hi", "openai", stream=False))
    finally:
        await runtime.close()
    labels = {"agent": name, "model": "openai/plain-model"}
    assert sample("agent_llm_requests_total", {**labels, "outcome": "success"}) == 1
    assert sample("agent_llm_tokens_total", {**labels, "direction": "input"}) == 20
    assert sample("agent_llm_tokens_total", {**labels, "direction": "output"}) == 8
    assert (result.usage.requests, result.usage.input_tokens, result.usage.output_tokens) == (1, 20, 8)
    assert result.cost_micros == 20 * 1 + 8 * 2
    assert result.model == "openai/plain-model"


async def test_an_answer_only_the_graph_handles_is_handed_over_without_asking_twice(
        llm: MockLLM, plain_calls: list[str]) -> None:
    """The model calls a tool the agent does not have: the graph tells it so and asks again,
    exactly as when the graph had asked first."""
    outcomes = []
    for graph in (False, True):
        name = unique("handover")
        llm.reset()  # the tool-calling rule answers once per path
        runtime = await started(llm, name, graph=graph)
        start = len(llm.calls)
        try:
            result = await runtime.run(Turn("c-3", "please call a tool", "openai", stream=False))
            stored = comparable((await runtime.store.load("c-3")).messages)
        finally:
            await runtime.close()
        calls = calls_since(llm, start)
        labels = {"agent": name, "model": "openai/plain-model"}
        outcomes.append((result.text, len(calls), stored, result.usage.requests,
                         sample("agent_llm_requests_total", {**labels, "outcome": "success"}),
                         sample("agent_llm_tokens_total", {**labels, "direction": "input"}),
                         result.cost_micros))
    plain, graph = outcomes
    assert plain_calls == ["please call a tool"]
    assert plain[0].startswith("Answer to")
    assert plain[1] == 2, "the tool call was answered once, the retry once"
    assert plain[3:] == (2, 2.0, 25.0, 5 * 1 + 3 * 2 + 20 * 1 + 8 * 2)
    assert plain[1:] == graph[1:]
    assert len(plain[2]) == 4  # request, tool call, the graph's retry, answer


@pytest.mark.parametrize("graph", [False, True], ids=["plain", "graph"])
async def test_limits_stop_a_plain_turn_as_they_stop_the_graph(llm: MockLLM, graph: bool) -> None:
    runtime = await started(llm, unique("limited"), graph=graph,
                            limits={"maxTokens": 10, "timeout": "1s"})
    try:
        with pytest.raises(TurnFailed) as too_many:
            await runtime.run(Turn("c-4", "hi", "openai", stream=False))
        with pytest.raises(TurnFailed) as too_slow:
            await runtime.run(Turn("c-5", "slowly", "openai", stream=False))
    finally:
        await runtime.close()
    assert too_many.value.failure.code == "limit_exceeded"
    assert "10" in too_many.value.failure.message and "28" in too_many.value.failure.message
    assert too_slow.value.failure.code == "limit_exceeded"
    assert "time limit" in too_slow.value.failure.message


async def test_a_plain_turn_is_traced_as_the_graph_traces_its_model_call(llm: MockLLM) -> None:
    chat_spans = []
    for graph in (False, True):
        exporter = InMemorySpanExporter()
        tracer = TracerProvider()
        tracer.add_span_processor(SimpleSpanProcessor(exporter))
        runtime = await started(llm, unique("traced"), graph=graph, tracer=tracer)
        try:
            await runtime.run(Turn("c-6", "hi", "openai", stream=False))
        finally:
            await runtime.close()
        spans = exporter.get_finished_spans()
        request = next(s for s in spans if s.name.startswith("kagent.request"))
        chat = next(s for s in spans if s.name == "chat plain-model")
        assert chat.context.trace_id == request.context.trace_id
        chat_spans.append(chat)
    plain, graph = chat_spans
    assert set(plain.attributes or {}) == set(graph.attributes or {})
    assert plain.attributes["gen_ai.conversation.id"] == "c-6"  # type: ignore[index]
    assert plain.attributes["gen_ai.usage.input_tokens"] == 20  # type: ignore[index]
    assert plain.attributes["gen_ai.request.temperature"] == 0.3  # type: ignore[index]


async def test_an_agent_with_tools_or_a_streaming_caller_keeps_the_graph(llm: MockLLM) -> None:
    runtime = AgentRuntime(build_runtime_config(
        documents(llm, unique("tooled"), tools=[{"name": "specialist", "kind": "Agent"}]),
        environ={}))
    await runtime.start()
    try:
        assert runtime.plain is None
    finally:
        await runtime.close()
    streaming = await started(llm, unique("streaming"), graph=False)
    start = len(llm.calls)
    try:
        deltas = [event async for event in streaming.stream(Turn("c-7", "hi", "openai"))]
    finally:
        await streaming.close()
    assert llm.calls[start].body["stream"] is True
    assert len(deltas) >= 2  # text as it was written, then the result


@pytest.mark.parametrize("graph", [False, True], ids=["plain", "graph"])
async def test_a_request_is_counted_with_its_tokens_and_cost_in_one_step(
        llm: MockLLM, graph: bool) -> None:
    """A canary's tokens and cost per request are ratios of these counters over a window: a
    scrape between the model's answer and the end of the request must see neither the request
    nor what it used (it saw the tokens without the request, and a canary's figures drifted)."""
    import asyncio

    name = unique("together")
    runtime = await started(llm, name, graph=graph)
    reached, release = asyncio.Event(), asyncio.Event()
    append = runtime.store.append

    async def held(*args: Any, **kwargs: Any) -> Any:  # the model has answered by now
        reached.set()
        await release.wait()
        return await append(*args, **kwargs)

    runtime.store.append = held  # type: ignore[method-assign]

    def counted() -> tuple[float, float, float]:
        return (sample("agent_requests_total", {"agent": name, "protocol": "openai",
                                                "outcome": "success"}),
                sample("agent_llm_tokens_total", {"agent": name, "model": "openai/plain-model",
                                                  "direction": "output"}),
                sample("agent_usage_cost_dollars_total", {
                    "namespace": "tests", "agent": name, "model": "openai/plain-model",
                    "caller": "anonymous"}))

    try:
        turn = asyncio.create_task(runtime.run(Turn("c-8", "hi", "openai", stream=False)))
        await asyncio.wait_for(reached.wait(), 30)
        assert counted() == (0, 0, 0)
        release.set()
        await turn
    finally:
        await runtime.close()
    requests, tokens, cost = counted()
    assert (requests, tokens) == (1, 8)
    assert cost == pytest.approx((20 * 1 + 8 * 2) / 1e6)
