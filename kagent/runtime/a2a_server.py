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
from collections.abc import Sequence
from typing import Any

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
from a2a.server.tasks import TaskUpdater
from a2a.types import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentProvider,
    AgentSkill,
    Part,
    TaskState,
)
from a2a.utils.constants import (
    AGENT_CARD_WELL_KNOWN_PATH,
    PROTOCOL_VERSION_0_3,
    PROTOCOL_VERSION_CURRENT,
)
from pydantic_ai import RunUsage
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from kagent.agentclient import (
    FAILURE_METADATA,
    MODEL_METADATA,
    TOOL_CALL_METADATA,
    TOOL_RESULT_METADATA,
    USAGE_METADATA,
    InvalidWorkflowClaim,
    parse_workflow_claim,
)
from kagent.runtime.agent import (
    AgentRuntime,
    TextDelta,
    ToolActivity,
    Turn,
    TurnFailed,
    TurnResult,
)
from kagent.runtime.auth import card_security
from kagent.runtime.config import RuntimeConfig
from kagent.runtime.errors import MEMORY_UNAVAILABLE, RequestFailure
from kagent.runtime.memory.tasks import (
    CLAIM_LEASE_SECONDS,
    DurableTaskStore,
    open_task_store,
    wait_for_settled,
)
from kagent.runtime.tracing import incoming_context

logger = logging.getLogger("kagent.runtime.a2a")

REST_PREFIX = "/rest"
ANSWER_ARTIFACT = "answer"
TEXT = "text/plain"
REPLAY_WAIT_SECONDS = 3600.0
"""Longest a re-sent message waits for the first run of it (on any replica) to finish."""
IDLE_TASK_SECONDS = 60.0
"""A task waiting for a human's answer is dropped from this process after this long; the
answer (to any replica) reloads it from the task store."""


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


def agent_card(config: RuntimeConfig, base_url: str, schemes: Sequence[str] = ()) -> AgentCard:
    """The card; ``schemes`` are the authentication schemes the agent accepts."""
    spec = config.agent.spec
    base_url = base_url.rstrip("/")
    return AgentCard(
        name=spec.display_name or config.name,
        description=spec.description or f"Kagent agent {config.name}",
        version="v1alpha1",
        provider=AgentProvider(organization="kagent", url="https://kagent.dev"),
        # Both protocol versions on the same endpoints: 1.0 clients pick the 1.0 interfaces
        # (and send ``A2A-Version: 1.0``); 0.3 clients read the card's 0.3 fields (``url``,
        # ``preferredTransport``) and send no version header.
        supported_interfaces=[
            AgentInterface(url=base_url, protocol_binding="JSONRPC",
                           protocol_version=PROTOCOL_VERSION_CURRENT),
            AgentInterface(url=base_url + REST_PREFIX, protocol_binding="HTTP+JSON",
                           protocol_version=PROTOCOL_VERSION_CURRENT),
            AgentInterface(url=base_url, protocol_binding="JSONRPC",
                           protocol_version=PROTOCOL_VERSION_0_3),
            AgentInterface(url=base_url + REST_PREFIX, protocol_binding="HTTP+JSON",
                           protocol_version=PROTOCOL_VERSION_0_3),
        ],
        capabilities=AgentCapabilities(streaming=True, push_notifications=False),
        default_input_modes=[TEXT],
        default_output_modes=[TEXT],
        skills=agent_skills(config),
        **card_security(schemes),
    )


class KagentExecutor(AgentExecutor):
    """Runs one A2A request through the :class:`AgentRuntime`.

    A message id is an idempotency key, kept in the agent's memory backend per caller: a
    re-sent message (a workflow step resumed by a new controller leader, on any replica,
    after any restart) gets the first answer instead of running the model again."""

    def __init__(self, runtime: AgentRuntime, tasks: DurableTaskStore) -> None:
        self.runtime = runtime
        self.tasks = tasks

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        assert context.task_id and context.context_id and context.message is not None
        task = context.current_task
        if task is None:
            await event_queue.enqueue_event(new_task_from_user_message(context.message))
        resuming = task is not None and task.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
        updater = TaskUpdater(event_queue, context.task_id, context.context_id)
        await updater.start_work()
        message_id = context.message.message_id
        if not message_id or resuming:
            await self._report(updater, await self._run(context, updater, resuming))
            return
        claim = await self.tasks.claim(message_id)
        if not claim.mine and claim.record is None:
            claim = await wait_for_settled(self.tasks, message_id, limit=REPLAY_WAIT_SECONDS)
        if claim.record is not None:
            await self._report(updater, outcome_from_record(claim.record))
            return
        keeper = asyncio.create_task(self._keep_claim(message_id))
        settled = False
        try:
            outcome = await self._run(context, updater, resuming)
            keeper.cancel()
            if outcome is not None and not unsettled(outcome):
                await self.tasks.settle(message_id, outcome_record(outcome))
                settled = True
            await self._report(updater, outcome)
        finally:
            keeper.cancel()
            if not settled:  # interrupted: a re-send runs again
                try:
                    await self.tasks.release(message_id)
                except Exception as error:  # noqa: BLE001 - the claim lapses on its own
                    logger.warning("could not release the claim on message %s (it lapses in "
                                   "%ss): %s", message_id, CLAIM_LEASE_SECONDS, error)

    async def _keep_claim(self, message_id: str) -> None:
        """Renew the claim while the turn runs, so only a dead process lets it lapse."""
        while True:
            await asyncio.sleep(CLAIM_LEASE_SECONDS / 3)
            try:
                await self.tasks.renew(message_id)
            except Exception as error:  # noqa: BLE001 - tried again at the next beat
                logger.warning("could not renew the claim on message %s: %s", message_id, error)

    async def _run(self, context: RequestContext, updater: TaskUpdater,
                   resuming: bool) -> TurnResult | TurnFailed | None:
        """The turn's result or failure (None when it was cancelled); streams the text."""
        headers = context.call_context.state.get("headers") or {}
        try:
            workflow = parse_workflow_claim(headers)
        except InvalidWorkflowClaim as error:
            return TurnFailed(RequestFailure("invalid_request", str(error), 400, "error"))
        turn = Turn(
            conversation_id=context.context_id,
            text=context.get_user_input(),
            protocol="a2a",
            answers_question=resuming,
            trace_context=incoming_context(headers),
            workflow=workflow,
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
                elif isinstance(event, ToolActivity):
                    key = TOOL_CALL_METADATA if event.phase == "call" else TOOL_RESULT_METADATA
                    await updater.update_status(
                        TaskState.TASK_STATE_WORKING,
                        message=updater.new_agent_message([], metadata={key: event.to_json()}),
                    )
                elif isinstance(event, TurnResult):
                    return event
        except TurnFailed as failed:
            if failed.failure.outcome == "cancelled":
                return None
            return failed
        return None

    async def _report(self, updater: TaskUpdater,
                      outcome: TurnResult | TurnFailed | None) -> None:
        if isinstance(outcome, TurnResult):
            await self._finish(updater, outcome)
        elif isinstance(outcome, TurnFailed):
            await self._fail(updater, outcome)

    async def _fail(self, updater: TaskUpdater, failed: TurnFailed) -> None:
        failure = failed.failure
        await updater.update_status(
            TaskState.TASK_STATE_FAILED,
            message=updater.new_agent_message([Part(text=failure.message)],
                                              metadata={FAILURE_METADATA: failure.code}),
            metadata={FAILURE_METADATA: failure.code},
        )

    async def _finish(self, updater: TaskUpdater, result: TurnResult) -> None:
        message = updater.new_agent_message([Part(text=result.text)],
                                            metadata={USAGE_METADATA: usage_metadata(result),
                                                      MODEL_METADATA: result.model or ""})
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


def unsettled(outcome: TurnResult | TurnFailed) -> bool:
    """A failure that a re-send should not repeat: the memory backend was down, so the turn
    never ran; once it is back, the re-send runs it."""
    return isinstance(outcome, TurnFailed) and outcome.failure.code == MEMORY_UNAVAILABLE


def outcome_record(outcome: TurnResult | TurnFailed) -> dict[str, Any]:
    """What the idempotency record keeps of a turn: enough to answer a re-send the same way."""
    if isinstance(outcome, TurnFailed):
        failure = outcome.failure
        return {"failure": {"code": failure.code, "message": failure.message,
                            "httpStatus": failure.http_status, "outcome": failure.outcome}}
    usage = outcome.usage
    return {"text": outcome.text, "inputRequired": outcome.input_required,
            "usage": {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
                      "requests": usage.requests}}


def outcome_from_record(record: dict[str, Any]) -> TurnResult | TurnFailed:
    failure = record.get("failure")
    if isinstance(failure, dict):
        return TurnFailed(RequestFailure(
            str(failure.get("code", "error")), str(failure.get("message", "")),
            int(failure.get("httpStatus", 500)), failure.get("outcome", "error"),
        ))
    usage = record.get("usage") or {}
    return TurnResult(str(record.get("text", "")), input_required=bool(record.get("inputRequired")),
                      usage=RunUsage(**{k: int(v) for k, v in usage.items()
                                        if k in ("input_tokens", "output_tokens", "requests")}))


def usage_metadata(result: TurnResult) -> dict[str, int]:
    usage = result.usage
    return {"inputTokens": usage.input_tokens, "outputTokens": usage.output_tokens,
            "requests": usage.requests, "costMicros": result.cost_micros}


_PREFIX = re.compile(r"(/[A-Za-z0-9._~-]+)+")


def forwarded_prefix(request: Request) -> str:
    """The path prefix a reverse proxy serves this agent under (``X-Forwarded-Prefix``), so the
    card's interface URLs are the ones clients can reach; ignored unless it is a plain path."""
    prefix = request.headers.get("x-forwarded-prefix", "").rstrip("/")
    return prefix if _PREFIX.fullmatch(prefix) else ""


def a2a_routes(runtime: AgentRuntime, schemes: Sequence[str] = ()
               ) -> tuple[list[BaseRoute], DefaultRequestHandler]:
    """Routes for the card, JSON-RPC and REST (A2A 1.0 and 0.3 on the same endpoints), and
    the handler (to close on shutdown). Tasks live in the agent's memory backend; ``schemes``
    are the authentication schemes the card lists."""
    placeholder = agent_card(runtime.config, "http://localhost")
    tasks = open_task_store(runtime.store)
    handler = DefaultRequestHandler(
        agent_executor=KagentExecutor(runtime, tasks),
        task_store=tasks,
        agent_card=placeholder,
        interrupted_task_timeout=IDLE_TASK_SECONDS,
    )

    async def card(request: Request) -> Response:
        base = str(request.base_url).rstrip("/") + forwarded_prefix(request)
        return JSONResponse(agent_card_to_dict(agent_card(runtime.config, base, schemes)))

    routes: list[BaseRoute] = [
        Route(AGENT_CARD_WELL_KNOWN_PATH, card, methods=["GET"]),
        *create_jsonrpc_routes(handler, rpc_url="/", enable_v0_3_compat=True),
        Mount(REST_PREFIX, routes=create_rest_routes(handler, enable_v0_3_compat=True)),
    ]
    return routes, handler

