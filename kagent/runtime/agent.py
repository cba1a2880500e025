"""The agent loop: one conversational turn, from the caller's message to the stored answer.

Both protocols (A2A and the OpenAI-compatible API) hand a :class:`Turn` to
:meth:`AgentRuntime.stream` and get text deltas and a :class:`TurnResult` back, or a
:class:`TurnFailed` saying clearly why not. Everything they share lives here: history from
session memory (and back into it), human questions and their answers, long-term recall,
compression, per-request limits, the request span and the request metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import httpx
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind, Status, StatusCode
from pydantic_ai import (
    Agent,
    AgentStreamEvent,
    DeferredToolRequests,
    DeferredToolResults,
    FunctionToolCallEvent,
    FunctionToolResultEvent,
    InstrumentationSettings,
    PartDeltaEvent,
    PartStartEvent,
    RunContext,
    RunUsage,
    TextPartDelta,
    UsageLimits,
)
from pydantic_ai.exceptions import RunTimedOut
from pydantic_ai.messages import ModelMessage, TextPart
from pydantic_ai.models.instrumented import instrument_model
from pydantic_ai.toolsets import AbstractToolset

from kagent.agentclient import WorkflowClaim
from kagent.api.base import parse_duration
from kagent.api.pricing import price_for
from kagent.runtime.budget import (
    BudgetRefused,
    Meter,
    UsageMeter,
    budget_enforcer,
    start_metering,
)
from kagent.runtime.caller import current_caller
from kagent.runtime.config import RuntimeConfig
from kagent.runtime.context import DEFAULT_AGENT_URL_TEMPLATE, RuntimeContext
from kagent.runtime.errors import RequestFailure, describe_failure
from kagent.runtime.fallback import answered_label, track_answers
from kagent.runtime.human import HumanTool, human_tools, human_toolset, pending_questions
from kagent.runtime.memory.base import (
    SessionStore,
    close_pending_calls,
    pending_tool_calls,
    usable_history,
)
from kagent.runtime.memory.compression import Compressor
from kagent.runtime.memory.factory import open_session_store
from kagent.runtime.memory.longterm import LongTermMemory, recall_instructions
from kagent.runtime.metering import ModelMetrics
from kagent.runtime.metrics import ACTIVE_SESSIONS, REQUEST_DURATION, REQUESTS, TOOL_CALLS
from kagent.runtime.models import build_model, model_label, model_settings
from kagent.runtime.plain import PlainAnswer, PlainModel, PrimedModel, continues_plainly

logger = logging.getLogger("kagent.runtime")

Protocol = Literal["a2a", "openai"]

INTERRUPTED_NOTE = "The request was interrupted before this tool returned; it did not run."
UNANSWERED_NOTE = "The person did not answer this question; the conversation moved on."
DEFAULT_MAX_TURNS = 50
DEFAULT_TIMEOUT_SECONDS = 600.0
"""A turn without ``limits.timeout`` still ends: every model and tool call runs inside it."""


@dataclass
class Turn:
    """One message from a caller."""

    conversation_id: str
    text: str | None
    protocol: Protocol
    history: list[ModelMessage] | None = None
    """History sent by a stateless caller; None means session memory holds it."""
    instructions: str | None = None
    """Extra instructions from the caller (an OpenAI client's system messages)."""
    answers_question: bool | None = None
    """True: the text answers the pending human question; False: it is a new request even if
    a question is pending; None: answer a pending question if there is one."""
    trace_context: Context | None = None
    workflow: WorkflowClaim | None = None
    """The Workflow the request is a step of (its Budgets by workflowSelector count it too)."""
    stream: bool = True
    """Whether the caller takes text and tool activity as they happen. A caller that takes only
    the answer lets the runtime ask the model for it whole (and an agent without tools skip
    the agent graph: :mod:`kagent.runtime.plain`)."""


@dataclass(frozen=True)
class TextDelta:
    text: str


TOOL_ACTIVITY_CHARS = 2_000
"""How much of a tool call's arguments or result a caller is shown as it happens (the model
gets the whole result; the caller gets the answer)."""


@dataclass(frozen=True)
class ToolActivity:
    """A tool call starting (``phase`` call) or finished (``phase`` result), for callers that
    show the agent's work as it happens (the dashboard's chat panel)."""

    phase: Literal["call", "result"]
    id: str
    name: str
    arguments: Any = None
    outcome: str | None = None
    content: str | None = None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"id": self.id, "name": self.name}
        if self.phase == "call":
            body["arguments"] = self.arguments
        else:
            body["outcome"] = self.outcome
            body["content"] = self.content
        return body


@dataclass
class TurnResult:
    text: str
    input_required: bool = False
    """The run paused on a human question; ``text`` is the question."""
    cost_micros: int = 0
    """What the turn's model calls cost, in millionths of a dollar (model.pricing)."""
    usage: RunUsage = field(default_factory=RunUsage)
    model: str | None = None
    """Which model answered (``provider/name``): ``spec.model`` or one of its fallbacks."""


class TurnFailed(Exception):
    def __init__(self, failure: RequestFailure) -> None:
        super().__init__(failure.message)
        self.failure = failure


class AgentRuntime:
    """One agent, ready to hold conversations."""

    def __init__(
        self,
        config: RuntimeConfig,
        *,
        ctx: RuntimeContext | None = None,
        tracer_provider: TracerProvider | None = None,
        store: SessionStore | None = None,
        agent_url_template: str | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        spec = config.agent.spec
        self.ctx = ctx or RuntimeContext(
            agent_name=self.name,
            namespace=config.namespace,
            secrets=config.secrets,
            agent_url_template=agent_url_template or DEFAULT_AGENT_URL_TEMPLATE,
            http=httpx.AsyncClient(timeout=60.0),
        )
        self.tracer_provider = tracer_provider
        self.tracer = (tracer_provider or trace.NoOpTracerProvider()).get_tracer("kagent.runtime")
        self.store = store or open_session_store(
            config.memory, namespace=config.namespace, agent_name=self.name,
            secrets=config.secrets,
        )
        self.human: dict[str, HumanTool] = human_tools(config.tools)
        self.limits = spec.limits
        self.model_label = model_label(spec.model)
        self.compressor: Compressor | None = None
        self.longterm: LongTermMemory | None = None
        self.agent: Agent[None, str | DeferredToolRequests] | None = None
        self.plain: PlainModel | None = None
        """Set when the agent has no tools: plain turns skip the agent graph."""
        self._handover: Agent[None, str | DeferredToolRequests] | None = None
        self._in_flight: dict[str, int] = {}
        self.budgets = budget_enforcer(config)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Build the model and tools and connect memory; errors here stop the runtime.

        Idempotent, so a caller can start it early to report configuration errors plainly."""
        if self.agent is not None:
            return
        spec = self.config.agent.spec
        model = build_model(spec.model, self.config.secrets, agent=self.name)
        metrics = ModelMetrics(agent_name=self.name, model_name=self.model_label)
        meter = UsageMeter(
            self.model_label,
            price_for(spec.model.provider, spec.model.name, spec.model.pricing),
            fallbacks={model_label(f): price_for(f.provider, f.name, f.pricing)
                       for f in spec.model.fallbacks or []},
            answered=answered_label)
        toolsets = await self._toolsets()

        def agent_for(instrument: InstrumentationSettings | None) -> Agent[None, Any]:
            built: Agent[None, Any] = Agent(
                model,
                instructions=spec.system_prompt or None,
                name=self.name,
                description=spec.description,
                toolsets=toolsets,
                output_type=[str, DeferredToolRequests],
                capabilities=[metrics, meter],
            )
            if instrument is not None:
                built.instrument = instrument
            return built

        instrumentation = None
        if self.tracer_provider is not None:
            instrumentation = InstrumentationSettings(tracer_provider=self.tracer_provider)
        agent = agent_for(instrumentation)
        if not toolsets:
            traced = model if instrumentation is None else instrument_model(model, instrumentation)
            self.plain = PlainModel(traced, self.name, spec.system_prompt or None, metrics,
                                    meter, traced=instrumentation is not None)
            # Takes over a plain turn whose answer needs the graph: its model (a PrimedModel
            # over ``traced``) is already traced, so this agent is not.
            self._handover = agent_for(None)
        memory = self.config.memory
        if memory and memory.compression and memory.compression.enabled:
            summary_spec = memory.compression.model or spec.model
            summary_model = (
                model if memory.compression.model is None
                else build_model(summary_spec, self.config.secrets, agent=self.name)
            )
            config = memory.config
            summary_meter = UsageMeter(f"{summary_spec.provider}/{summary_spec.name}", price_for(
                summary_spec.provider, summary_spec.name, summary_spec.pricing))
            self.compressor = Compressor(
                memory.compression, summary_model, model_settings(summary_spec),
                max_history=config.max_history if config else None,
                capabilities=[summary_meter, ModelMetrics(
                    agent_name=self.name,
                    model_name=model_label(summary_spec),
                )],
                instrument=instrumentation,
            )
        if memory and memory.long_term and memory.long_term.enabled:
            self.longterm = LongTermMemory(memory.long_term, self.ctx, agent_name=self.name)
        await self.store.start()
        self.agent = agent

    async def _toolsets(self) -> list[AbstractToolset[Any]]:
        from kagent.runtime.tools import agent_toolset, build_toolset

        toolsets: list[AbstractToolset[Any]] = []
        for tool in self.config.tools:
            built = await build_toolset(tool, self.ctx)
            if built is not None:
                toolsets.append(built)
        for ref in self.config.agent_tools:
            toolsets.append(agent_toolset(ref.name, None, self.ctx))
        human = human_toolset(self.human)
        if human is not None:
            toolsets.append(human)
        return toolsets

    async def ready(self) -> None:
        """Raise unless the memory backend answers."""
        await self.store.ping()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.store.close()
        await self.budgets.close()
        if self.longterm is not None:
            with contextlib.suppress(Exception):
                await self.longterm.close()
        await self.ctx.http.aclose()

    # -- one turn ----------------------------------------------------------------------------

    async def run(self, turn: Turn) -> TurnResult:
        result: TurnResult | None = None
        async for event in self.stream(turn):
            if isinstance(event, TurnResult):
                result = event
        assert result is not None
        return result

    async def stream(self, turn: Turn) -> AsyncIterator[TextDelta | ToolActivity | TurnResult]:
        """Text as the model writes it, then the :class:`TurnResult`; raises TurnFailed.

        The turn runs in its own task (so its span and context never leak into the caller);
        closing this iterator early cancels it.
        """
        queue: asyncio.Queue[TextDelta | ToolActivity | TurnResult | BaseException] = asyncio.Queue()
        task = asyncio.create_task(self._execute(turn, queue.put_nowait))
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if isinstance(item, TurnResult):
                    break
        finally:
            if not task.done():
                task.cancel()
            with contextlib.suppress(BaseException):
                await task

    async def _execute(self, turn: Turn, emit: Any) -> None:
        started = time.perf_counter()
        outcome = "error"
        caller = current_caller().identity
        meter = start_metering()  # this task's model calls add to it
        self._enter(turn.conversation_id)
        attributes = {
            "gen_ai.agent.name": self.name,
            "gen_ai.conversation.id": turn.conversation_id,
            "kagent.protocol": turn.protocol,
        }
        with self.tracer.start_as_current_span(
            f"kagent.request {self.name}", context=turn.trace_context, kind=SpanKind.SERVER,
            attributes=attributes, record_exception=False, set_status_on_exception=False,
        ) as span:
            try:
                result = await self._budgeted_turn(turn, emit, meter, caller)
                outcome = "success"
                if result.model:
                    span.set_attribute("kagent.model", result.model)
                span.set_attribute("kagent.input_required", result.input_required)
                emit(result)
            except asyncio.CancelledError:
                outcome = "cancelled"
                span.set_status(Status(StatusCode.ERROR, "cancelled"))
                emit(TurnFailed(describe_failure(asyncio.CancelledError(), provider="", model="")))
                raise
            except TurnFailed as failed:
                outcome = failed.failure.outcome
                span.set_status(Status(StatusCode.ERROR, failed.failure.message))
                emit(failed)
            except Exception as error:  # noqa: BLE001 - every failure becomes a clear answer
                failure = self._failure(error)
                outcome = failure.outcome
                span.set_status(Status(StatusCode.ERROR, failure.message))
                span.set_attribute("error.type", failure.code)
                logger.warning("request in conversation %s failed: %s", turn.conversation_id,
                               failure.message)
                emit(TurnFailed(failure))
            finally:
                self._leave(turn.conversation_id)
                # One step, no await: a scrape sees the request with its tokens and cost.
                REQUESTS.labels(agent=self.name, protocol=turn.protocol, outcome=outcome).inc()
                REQUEST_DURATION.labels(agent=self.name, protocol=turn.protocol).observe(
                    time.perf_counter() - started
                )
                self.budgets.count_usage(meter, caller)

    def _failure(self, error: BaseException) -> RequestFailure:
        model = self.config.agent.spec.model
        failure = describe_failure(error, provider=model.provider, model=model.name)
        if isinstance(error, RunTimedOut) and self.limits is not None and self.limits.timeout:
            failure = replace(failure, message=f"{failure.message} ({self.limits.timeout}, "
                              "limits.timeout)")
        return replace(failure, message=self.config.secrets.redact(failure.message))

    async def _turn(self, turn: Turn, emit: Any) -> TurnResult:
        assert self.agent is not None, "AgentRuntime.start() was not called"
        stateless = turn.history is not None
        if stateless:
            history = list(turn.history or [])
        else:
            history = usable_history(await self.store.load(turn.conversation_id))
        prefix: list[ModelMessage] = []
        """Messages the runtime itself adds to the history (closing dangling calls)."""
        deferred: DeferredToolResults | None = None
        prompt = turn.text
        pending = pending_tool_calls(history)
        questions = pending_questions(pending, history, self.human)
        if questions and turn.text is not None and turn.answers_question is not False:
            expired = [q for q in questions if q.expired()]
            if expired:
                note = f"The person did not answer within {expired[0].tool.timeout}."
                closing = close_pending_calls(history, note)[len(history):]
                if not stateless:
                    await self.store.append(turn.conversation_id, closing)
                raise TurnFailed(RequestFailure(
                    "question_timed_out",
                    f"the question was not answered within {expired[0].tool.timeout} "
                    "(the human tool's timeout)",
                    409, "error",
                ))
            answered = {q.call.tool_call_id for q in questions}
            deferred = DeferredToolResults(calls={cid: turn.text for cid in answered})
            for call in pending:
                if call.tool_call_id not in answered:
                    deferred.calls[call.tool_call_id] = INTERRUPTED_NOTE
            for question in questions:
                TOOL_CALLS.labels(agent=self.name, tool=question.tool.name,
                                  outcome="success").inc()
            prompt = None
        elif pending:
            note = UNANSWERED_NOTE if questions else INTERRUPTED_NOTE
            prefix = close_pending_calls(history, note)[len(history):]
            history = history + prefix

        instructions = [turn.instructions] if turn.instructions else []
        if self.longterm is not None and prompt:
            try:
                facts = await self.longterm.recall(prompt, turn.conversation_id)
            except Exception as error:  # noqa: BLE001 - recall is best effort
                logger.warning("long-term recall failed: %s", self.config.secrets.redact(str(error)))
                facts = []
            recalled = recall_instructions(facts)
            if recalled:
                instructions.append(recalled)

        async def relay(ctx: RunContext[None], events: AsyncIterable[AgentStreamEvent]) -> None:
            """Text and tool activity as they happen, for a caller that streams."""
            async for event in events:
                if isinstance(event, PartStartEvent) and isinstance(event.part, TextPart):
                    if event.part.content:
                        emit(TextDelta(event.part.content))
                elif isinstance(event, PartDeltaEvent) and isinstance(event.delta, TextPartDelta):
                    if event.delta.content_delta:
                        emit(TextDelta(event.delta.content_delta))
                elif isinstance(event, FunctionToolCallEvent):
                    emit(ToolActivity("call", event.part.tool_call_id, event.part.tool_name,
                                      arguments=self._shown_arguments(event.part)))
                elif isinstance(event, FunctionToolResultEvent):
                    part = event.part
                    emit(ToolActivity(
                        "result", part.tool_call_id, part.tool_name,
                        outcome=getattr(part, "outcome", None) or "success",
                        content=self._shown(str(part.content)),
                    ))

        answered = track_answers()
        joined = "\n\n".join(instructions) or None
        output: Any
        if (self.plain is not None and not turn.stream and prompt is not None
                and deferred is None and not prefix and continues_plainly(history)):
            output, model_messages, usage = await self._plain_turn(
                history, prompt, joined, turn.conversation_id)
        else:
            # run() with a handler, not run_stream_events(): the same streamed run without
            # another task and memory stream between the agent loop and us. Without one (the
            # caller does not stream) the model is asked for its answer whole.
            result = await self.agent.run(
                prompt,
                message_history=history,
                deferred_tool_results=deferred,
                conversation_id=turn.conversation_id,
                instructions=joined,
                usage_limits=self._usage_limits(),
                timeout=self._timeout(),
                event_stream_handler=relay if turn.stream else None,
            )
            output, model_messages, usage = result.output, result.new_messages(), result.usage

        answered_by = answered.label
        new_messages = [*prefix, *model_messages]
        if not stateless:
            count = await self.store.append(turn.conversation_id, new_messages)
            if self.compressor is not None and self.compressor.due(count):
                try:
                    await self.compressor.compress(self.store, turn.conversation_id)
                except Exception as error:  # noqa: BLE001 - the answer is already there
                    logger.warning("compression failed: %s",
                                   self.config.secrets.redact(str(error)))
        if self.longterm is not None and prompt:
            try:
                await self.longterm.remember(turn.conversation_id, [prompt])
            except Exception as error:  # noqa: BLE001 - remembering is best effort
                logger.warning("long-term memory write failed: %s",
                               self.config.secrets.redact(str(error)))

        if isinstance(output, DeferredToolRequests):
            asked = [
                str((output.metadata.get(call.tool_call_id) or {}).get("question", ""))
                or self.human[call.tool_name].question(call.args_as_dict())
                for call in output.calls
                if call.tool_name in self.human
            ]
            return TurnResult("\n\n".join(asked), input_required=True, usage=usage,
                              model=answered_by)
        return TurnResult(str(output), usage=usage, model=answered_by)

    async def _plain_turn(self, history: list[ModelMessage], prompt: str,
                          instructions: str | None,
                          conversation_id: str) -> tuple[Any, list[ModelMessage], RunUsage]:
        """The turn as one model call (:mod:`kagent.runtime.plain`), within the same limits; an
        answer that is not plain text is handed to the agent graph."""
        assert self.plain is not None and self._handover is not None
        limits = self._usage_limits()
        deadline = asyncio.timeout(self._timeout())
        try:
            async with deadline:
                outcome = await self.plain.answer(history, prompt, instructions=instructions,
                                                  conversation_id=conversation_id, limits=limits)
                if isinstance(outcome, PlainAnswer):
                    return outcome.text, outcome.new_messages, outcome.usage
                result = await self._handover.run(
                    prompt, message_history=history, conversation_id=conversation_id,
                    instructions=instructions, usage_limits=limits,
                    model=PrimedModel(self.plain.model, outcome.response),
                )
                return result.output, result.new_messages(), result.usage
        except TimeoutError:
            if deadline.expired():
                raise RunTimedOut("the turn did not finish within its time limit") from None
            raise

    def _shown(self, text: str) -> str:
        """Text a caller may see of a tool's work: secret values redacted, length bounded."""
        text = self.config.secrets.redact(text)
        if len(text) > TOOL_ACTIVITY_CHARS:
            return text[:TOOL_ACTIVITY_CHARS] + f"… ({len(text) - TOOL_ACTIVITY_CHARS} more characters)"
        return text

    def _shown_arguments(self, part: Any) -> Any:
        """The call's arguments as an object when they parse and are shown whole, else text."""
        try:
            args: Any = part.args_as_dict()
        except ValueError:  # arguments the model wrote as invalid JSON
            args = part.args
        text = args if isinstance(args, str) else json.dumps(args, default=str)
        shown = self._shown(text)
        return args if shown == text and not isinstance(args, str) else shown

    async def _budgeted_turn(self, turn: Turn, emit: Any, meter: Meter,
                             caller: str) -> TurnResult:
        """The turn, admitted by the Budgets covering the agent and counted against them
        afterwards, whether it answered or failed."""
        admission = None
        if self.budgets.enabled:
            try:
                admission = await self.budgets.admit(caller, workflow=turn.workflow)
            except BudgetRefused as refused:
                raise TurnFailed(refused.failure) from None
        try:
            result = await self._turn(turn, emit)
            result.cost_micros = meter.total().cost_micros
            return result
        finally:
            # Counted even when the request is cancelled: its model calls were paid for.
            settling = asyncio.ensure_future(self.budgets.settle(admission, meter, caller))
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(settling)

    def _usage_limits(self) -> UsageLimits:
        limits = self.limits
        if limits is None:
            return UsageLimits(request_limit=DEFAULT_MAX_TURNS)
        return UsageLimits(
            request_limit=limits.max_turns or DEFAULT_MAX_TURNS,
            tool_calls_limit=limits.max_tool_calls,
            total_tokens_limit=limits.max_tokens,
        )

    def _timeout(self) -> float:
        if self.limits is None or self.limits.timeout is None:
            return DEFAULT_TIMEOUT_SECONDS
        return parse_duration(self.limits.timeout).total_seconds()

    # -- active sessions ---------------------------------------------------------------------

    def _enter(self, conversation_id: str) -> None:
        self._in_flight[conversation_id] = self._in_flight.get(conversation_id, 0) + 1
        ACTIVE_SESSIONS.labels(agent=self.name).set(len(self._in_flight))

    def _leave(self, conversation_id: str) -> None:
        left = self._in_flight.get(conversation_id, 1) - 1
        if left <= 0:
            self._in_flight.pop(conversation_id, None)
        else:
            self._in_flight[conversation_id] = left
        ACTIVE_SESSIONS.labels(agent=self.name).set(len(self._in_flight))
