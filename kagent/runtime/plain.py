"""The plain turn: one model call answered in text, without pydantic-ai's agent graph.

A request to an agent without tools, from a caller that does not stream, is one model call.
Run through the agent graph it costs several times the CPU of the call itself (graph nodes,
capability dispatch, the per-request machinery a tool loop needs), so such a turn asks the
agent's model directly, through pydantic-ai's direct API: the same model chain with its
fallbacks and circuit breakers, the same instructions and history, the same messages stored,
the same metrics, meter and spans. ``tests/unit/test_runtime_plain.py`` holds the two paths to
the same requests and the same stored history.

A response that is not a plain text answer (a call to a tool the agent does not have, no text
at all, a suspended turn) goes to the agent graph, which handles it exactly as if it had asked
itself: :class:`PrimedModel` answers the graph's first request with the response already
received, so nothing is asked or paid for twice.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from opentelemetry import baggage
from opentelemetry import context as otel_context

from pydantic_ai import RunUsage, UsageLimits
from pydantic_ai.direct import model_request
from pydantic_ai.messages import (
    AgentInstructionSource,
    InstructionId,
    InstructionPart,
    ModelMessage,
    ModelRequest,
    ModelResponse,
    TextPart,
    ThinkingPart,
    UserPromptPart,
    repair_messages,
)
from pydantic_ai.models import Model, ModelRequestParameters
from pydantic_ai.models.wrapper import WrapperModel
from pydantic_ai.settings import ModelSettings

from kagent.runtime.budget import UsageMeter
from kagent.runtime.metering import ModelMetrics


@dataclass(frozen=True)
class PlainAnswer:
    text: str
    new_messages: list[ModelMessage]
    usage: RunUsage


@dataclass(frozen=True)
class Handover:
    """The model answered with something only the agent graph handles; ``response`` is it."""

    response: ModelResponse


def plain_text(response: ModelResponse) -> str | None:
    """The answer a text-only response gives (as the graph reads it), else None."""
    if response.state != "complete":
        return None
    if not all(isinstance(part, TextPart | ThinkingPart) for part in response.parts):
        return None
    text = "".join(part.content for part in response.parts if isinstance(part, TextPart))
    return text or None


def continues_plainly(history: Sequence[ModelMessage]) -> bool:
    """Whether a new prompt can follow ``history`` as one new request: it is empty or ends in
    a finished answer (a trailing request or open tool calls are the graph's to repair)."""
    if not history:
        return True
    last = history[-1]
    return isinstance(last, ModelResponse) and last.state == "complete" and not last.tool_calls


@dataclass
class PlainModel:
    """How an agent without tools asks its model in one call.

    ``model`` is the agent's model chain, wrapped for tracing exactly as the agent graph wraps
    it when the agent traces (``traced``); ``metrics`` and ``meter`` are the agent's own
    model-call hooks."""

    model: Model
    agent_name: str
    system_prompt: str | None
    metrics: ModelMetrics
    meter: UsageMeter
    traced: bool = False

    @contextmanager
    def _run_baggage(self, run_id: str, conversation_id: str) -> Iterator[None]:
        """What the agent graph puts in the trace context for its model-call spans to carry."""
        if not self.traced:
            yield
            return
        ctx = baggage.set_baggage("gen_ai.agent.name", self.agent_name)
        ctx = baggage.set_baggage("gen_ai.agent.call.id", run_id, context=ctx)
        ctx = baggage.set_baggage("gen_ai.conversation.id", conversation_id, context=ctx)
        token = otel_context.attach(ctx)
        try:
            yield
        finally:
            otel_context.detach(token)

    def instruction_parts(self, instructions: str | None) -> list[InstructionPart]:
        """The instructions as the graph sends them: the system prompt, then the turn's own."""
        parts = []
        if self.system_prompt:
            parts.append(InstructionPart(self.system_prompt,
                                         id=InstructionId(source=AgentInstructionSource())))
        if instructions:
            parts.append(InstructionPart(instructions))
        return parts

    async def answer(self, history: Sequence[ModelMessage], prompt: str, *,
                     instructions: str | None, conversation_id: str,
                     limits: UsageLimits) -> PlainAnswer | Handover:
        """Raises what the model call raises, or UsageLimitExceeded as the graph would."""
        history = repair_messages(history, repair_last_response=False)
        parts = self.instruction_parts(instructions)
        run_id = str(uuid.uuid4())
        request = ModelRequest(parts=[UserPromptPart(prompt)],
                               instructions=InstructionPart.join(parts),
                               run_id=run_id, conversation_id=conversation_id)
        usage = RunUsage()
        limits.check_before_request(usage)
        try:
            with self._run_baggage(run_id, conversation_id):
                response = await model_request(
                    self.model, [*history, request],
                    model_request_parameters=ModelRequestParameters(instruction_parts=parts),
                    instrument=False,
                )
        except Exception:  # not swallowed: counted as a failed model call, then re-raised; the
            self.metrics.record_error()  # turn reports and logs it (AgentRuntime._execute)
            raise
        text = plain_text(response)
        if text is None:
            return Handover(response)
        response.run_id = run_id
        response.conversation_id = conversation_id
        response.model_id = response.model_id or self.model.model_id
        self.metrics.record(response)
        self.meter.record(response)
        usage.requests = 1
        usage.incr(response.usage)
        limits.check_tokens(usage)
        return PlainAnswer(text, [request, response], usage)


class PrimedModel(WrapperModel):
    """A model whose first request is answered with a response already received.

    The agent graph runs with it (without streaming) to take over a plain turn whose answer it
    must handle; every later request goes to the wrapped model."""

    def __init__(self, wrapped: Model, first: ModelResponse) -> None:
        super().__init__(wrapped)
        self._first: ModelResponse | None = first

    async def request(self, messages: list[ModelMessage], model_settings: ModelSettings | None,
                      model_request_parameters: ModelRequestParameters) -> ModelResponse:
        first, self._first = self._first, None
        if first is not None:
            return first
        return await super().request(messages, model_settings, model_request_parameters)
