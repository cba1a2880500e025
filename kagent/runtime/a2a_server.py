"""The agent over A2A (spec 1.0, through the official a2a-sdk).

Each A2A message becomes a task in the message's context; the context id is the conversation
id of session memory, so a client that keeps its context id holds a multi-turn conversation.
The answer streams as chunks of one artifact (``append``), which the final event replaces by
the whole text; the task then completes with the answer as its status message. A human question
leaves the task ``input-required`` with the question as its status message; the next message on
that task is the answer and resumes the run.

Served: JSON-RPC at ``/``, HTTP+JSON (REST) under ``/rest``, and the agent card at
``/.well-known/agent-card.json`` with interface URLs built from the address the client used.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections import OrderedDict

A2A_SDK_TRACING = "OTEL_INSTRUMENTATION_A2A_SDK_ENABLED"
# a2a-sdk wraps every internal method in a span for the *global* tracer provider, which the
# runtime never sets (the agent's spans go to its own provider, see server.py): entering those
# no-op spans cost 2-4 ms of CPU per A2A request (benchmarks/runtime_overhead.py) for spans nobody
# records. The SDK reads the variable when first imported, so this comes before the imports
# below; an operator who sets it keeps the SDK's spans.
os.environ.setdefault(A2A_SDK_TRACING, "false")

from a2a.helpers.proto_helpers import new_task_from_user_message
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.request_handlers.response_helpers import agent_card_to_dict
from a2a.server.routes import create_jsonrpc_routes, create_rest_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentProvider,
    AgentSkill,
    Part,
    TaskState,
)
from a2a.utils.constants import AGENT_CARD_WELL_KNOWN_PATH, PROTOCOL_VERSION_CURRENT
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from kagent.runtime.agent import AgentRuntime, TextDelta, Turn, TurnFailed, TurnResult
from kagent.runtime.config import RuntimeConfig
from kagent.agentclient import USAGE_METADATA
from kagent.runtime.tracing import incoming_context

logger = logging.getLogger("kagent.runtime.a2a")

REST_PREFIX = "/rest"
ANSWER_ARTIFACT = "answer"
IDEMPOTENCY_ENTRIES = 10_000
TEXT = "text/plain"


def agent_skills(config: RuntimeConfig) -> list[AgentSkill]:
    """One skill per tool (what the agent can do for a caller); one general skill without."""
    skills = [
        AgentSkill(
            id=tool.metadata.name, name=tool.metadata.name,
            description=tool.spec.description or f"{tool.spec.type} tool {tool.metadata.name}",
            tags=[tool.spec.type],
        )
        for tool in config.tools
    ]
    skills += [
        AgentSkill(id=ref.name, name=ref.name, description=f"Delegates to the agent {ref.name}",
                   tags=["agent"])
        for ref in config.agent_tools
    ]
    if not skills:
        spec = config.agent.spec
        skills.append(AgentSkill(
            id="chat", name=spec.display_name or config.name,
            description=spec.description or "Answers messages", tags=["chat"],
        ))
    return skills


def agent_card(config: RuntimeConfig, base_url: str) -> AgentCard:
    spec = config.agent.spec
    base_url = base_url.rstrip("/")
    return AgentCard(
        name=spec.display_name or config.name,
        description=spec.description or f"Kagent agent {config.name}",
        version="v1alpha1",
        provider=AgentProvider(organization="kagent", url="https://kagent.dev"),
        supported_interfaces=[
            AgentInterface(url=base_url, protocol_binding="JSONRPC",
                           protocol_version=PROTOCOL_VERSION_CURRENT),
            AgentInterface(url=base_url + REST_PREFIX, protocol_binding="HTTP+JSON",
                           protocol_version=PROTOCOL_VERSION_CURRENT),
        ],
        capabilities=AgentCapabilities(streaming=True, push_notifications=False),
        default_input_modes=[TEXT],
        default_output_modes=[TEXT],
        skills=agent_skills(config),
    )


class KagentExecutor(AgentExecutor):
    """Runs one A2A request through the :class:`AgentRuntime`."""

    def __init__(self, runtime: AgentRuntime) -> None:
        self.runtime = runtime
        self._by_message_id: OrderedDict[str, asyncio.Future[TurnResult]] = OrderedDict()

    def _remember(self, message_id: str) -> asyncio.Future[TurnResult]:
        """A message id is an idempotency key: a re-sent message (a workflow step resumed by a
        new controller leader) gets the first answer instead of running the model again."""
        future: asyncio.Future[TurnResult] = asyncio.get_running_loop().create_future()
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._by_message_id[message_id] = future
        while len(self._by_message_id) > IDEMPOTENCY_ENTRIES:
            self._by_message_id.popitem(last=False)
        return future

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        assert context.task_id and context.context_id and context.message is not None
        task = context.current_task
        if task is None:
            await event_queue.enqueue_event(new_task_from_user_message(context.message))
        resuming = task is not None and task.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
        updater = TaskUpdater(event_queue, context.task_id, context.context_id)
        await updater.start_work()
        message_id = context.message.message_id
        if message_id and not resuming:
            earlier = self._by_message_id.get(message_id)
            if earlier is not None:
                try:
                    await self._finish(updater, await asyncio.shield(earlier))
                except TurnFailed as failed:
                    await self._fail(updater, failed)
                return
            outcome = self._remember(message_id)
        else:
            outcome = None
        try:
            await self._run(context, updater, resuming, outcome)
        finally:
            if outcome is not None and not outcome.done():
                outcome.cancel()
                self._by_message_id.pop(message_id, None)  # interrupted: a re-send runs again

    async def _run(self, context: RequestContext, updater: TaskUpdater, resuming: bool,
                   outcome: asyncio.Future[TurnResult] | None) -> None:
        headers = context.call_context.state.get("headers") or {}
        turn = Turn(
            conversation_id=context.context_id,
            text=context.get_user_input(),
            protocol="a2a",
            answers_question=resuming,
            trace_context=incoming_context(headers),
        )
        started_artifact = False
        try:
            async for event in self.runtime.stream(turn):
                if isinstance(event, TextDelta):
                    await updater.add_artifact(
                        [Part(text=event.text)], artifact_id=ANSWER_ARTIFACT, name="answer",
                        append=started_artifact, last_chunk=False,
                    )
                    started_artifact = True
                elif isinstance(event, TurnResult):
                    if outcome is not None:
                        outcome.set_result(event)
                    await self._finish(updater, event)
        except TurnFailed as failed:
            if failed.failure.outcome == "cancelled":
                return
            if outcome is not None:
                outcome.set_exception(failed)
            await self._fail(updater, failed)

    async def _fail(self, updater: TaskUpdater, failed: TurnFailed) -> None:
        failure = failed.failure
        await updater.update_status(
            TaskState.TASK_STATE_FAILED,
            message=updater.new_agent_message([Part(text=failure.message)]),
            metadata={"kagent.error": failure.code},
        )

    async def _finish(self, updater: TaskUpdater, result: TurnResult) -> None:
        message = updater.new_agent_message([Part(text=result.text)],
                                            metadata={USAGE_METADATA: usage_metadata(result)})
        if result.input_required:
            await updater.requires_input(message=message)
            return
        await updater.add_artifact(
            [Part(text=result.text)], artifact_id=ANSWER_ARTIFACT, name="answer",
            append=False, last_chunk=True,
        )
        await updater.complete(message=message)

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        assert context.task_id and context.context_id
        updater = TaskUpdater(event_queue, context.task_id, context.context_id)
        await updater.cancel(
            message=updater.new_agent_message([Part(text="The task was cancelled.")])
        )


def usage_metadata(result: TurnResult) -> dict[str, int]:
    usage = result.usage
    return {"inputTokens": usage.input_tokens, "outputTokens": usage.output_tokens,
            "requests": usage.requests}


_PREFIX = re.compile(r"(/[A-Za-z0-9._~-]+)+")


def forwarded_prefix(request: Request) -> str:
    """The path prefix a reverse proxy serves this agent under (``X-Forwarded-Prefix``), so the
    card's interface URLs are the ones clients can reach; ignored unless it is a plain path."""
    prefix = request.headers.get("x-forwarded-prefix", "").rstrip("/")
    return prefix if _PREFIX.fullmatch(prefix) else ""


def a2a_routes(runtime: AgentRuntime) -> tuple[list[BaseRoute], DefaultRequestHandler]:
    """Routes for the card, JSON-RPC and REST, and the handler (to close on shutdown)."""
    placeholder = agent_card(runtime.config, "http://localhost")
    handler = DefaultRequestHandler(
        agent_executor=KagentExecutor(runtime),
        task_store=InMemoryTaskStore(),
        agent_card=placeholder,
    )

    async def card(request: Request) -> Response:
        base = str(request.base_url).rstrip("/") + forwarded_prefix(request)
        return JSONResponse(agent_card_to_dict(agent_card(runtime.config, base)))

    routes: list[BaseRoute] = [
        Route(AGENT_CARD_WELL_KNOWN_PATH, card, methods=["GET"]),
        *create_jsonrpc_routes(handler, rpc_url="/"),
        Mount(REST_PREFIX, routes=create_rest_routes(handler)),
    ]
    return routes, handler

