"""How any Kagent component calls an agent over A2A: the workflow engine, agent-as-tool, the CLI
and the benchmarks share this one client.

The agent's card is read from ``<url>/.well-known/agent-card.json`` (so the transport and URL it
advertises are honoured), the message is sent as a user message, and the call waits for the
final answer: a direct reply, or the task's artifacts (or its last status message) once the task
completes. The W3C trace context goes along as request headers.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from opentelemetry import propagate

DEFAULT_TIMEOUT = 300.0
USAGE_METADATA = "kagent.dev/usage"
"""Key of a Kagent runtime's answer metadata holding the turn's model usage, so a caller (the
workflow engine) accounts for tokens without guessing."""


class AgentCallError(Exception):
    """The agent could not be reached, failed the task, or sent no answer."""


def _text_of(parts: Any) -> str:
    return "\n".join(part.text for part in parts if part.HasField("text"))


def answer_text(agent_name: str, response: Any) -> str:
    """The final text of an A2A StreamResponse (a Message or a Task); failures raise."""
    from a2a.types import Role, TaskState

    if response.HasField("message"):
        return _text_of(response.message.parts)
    if not response.HasField("task"):
        raise AgentCallError(f"agent {agent_name} answered neither a message nor a task")
    task = response.task
    state = task.status.state
    status_text = _text_of(task.status.message.parts) if task.status.HasField("message") else ""
    if state == TaskState.TASK_STATE_COMPLETED:
        texts = [_text_of(artifact.parts) for artifact in task.artifacts]
        text = "\n".join(t for t in texts if t) or status_text
        if not text:
            agent_messages = [m for m in task.history if m.role == Role.ROLE_AGENT]
            text = _text_of(agent_messages[-1].parts) if agent_messages else ""
        return text
    if state in (TaskState.TASK_STATE_INPUT_REQUIRED, TaskState.TASK_STATE_AUTH_REQUIRED):
        return f"Agent {agent_name} needs more information: {status_text or '(no question given)'}"
    name = TaskState.Name(state).removeprefix("TASK_STATE_").lower()
    detail = f": {status_text}" if status_text else ""
    raise AgentCallError(f"agent {agent_name} {name} the task{detail}")


async def ask_agent_at(url: str, agent_name: str, message: str, *,
                       timeout: float = DEFAULT_TIMEOUT, message_id: str | None = None) -> str:
    """Send ``message`` to the agent served at ``url`` and return its final text."""
    text, _ = await ask_agent_with_usage(url, agent_name, message, timeout=timeout,
                                         message_id=message_id)
    return text


async def ask_agent_with_usage(url: str, agent_name: str, message: str, *,
                               timeout: float = DEFAULT_TIMEOUT, message_id: str | None = None
                               ) -> tuple[str, dict[str, int]]:
    """Send ``message`` to the agent served at ``url``; its final text and the model usage it
    reported (empty when the agent reports none).

    ``message_id`` is the A2A message id; a caller that may resend the same request (the
    workflow engine after a restart) passes a stable one as the idempotency key."""
    from a2a.client import ClientCallContext, ClientConfig, ClientFactory
    from a2a.client.errors import A2AClientError
    from a2a.types import Message, Part, Role, SendMessageRequest

    trace_headers: dict[str, str] = {}
    propagate.inject(trace_headers)
    async with httpx.AsyncClient(timeout=timeout, headers=trace_headers) as http:
        factory = ClientFactory(ClientConfig(streaming=False, httpx_client=http))
        try:
            client = await factory.create_from_url(url)
        except (A2AClientError, httpx.HTTPError, ValueError) as exc:
            raise AgentCallError(f"cannot reach agent {agent_name} at {url}: {exc}") from None
        request = SendMessageRequest(
            message=Message(role=Role.ROLE_USER, message_id=message_id or str(uuid.uuid4()),
                            parts=[Part(text=message)]),
        )
        call_context = ClientCallContext(timeout=timeout, service_parameters=dict(trace_headers))
        final = None
        try:
            async for response in client.send_message(request, context=call_context):
                final = response
        except (A2AClientError, httpx.HTTPError) as exc:
            raise AgentCallError(f"agent {agent_name} failed: {exc}") from None
        finally:
            await client.close()
    if final is None:
        raise AgentCallError(f"agent {agent_name} sent no answer")
    return answer_text(agent_name, final), reported_usage(final)


def reported_usage(response: Any) -> dict[str, int]:
    """The usage a Kagent runtime puts in its answer's metadata (``kagent.dev/usage``)."""
    from google.protobuf.json_format import MessageToDict

    if response.HasField("task") and response.task.status.HasField("message"):
        metadata = response.task.status.message.metadata
    elif response.HasField("message"):
        metadata = response.message.metadata
    else:
        return {}
    usage = MessageToDict(metadata).get(USAGE_METADATA) or {}
    return {key: int(value) for key, value in usage.items() if isinstance(value, int | float)}
