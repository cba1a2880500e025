"""Talking to an agent from the browser: one A2A streaming turn, relayed as simple events.

The dashboard speaks A2A (the runtime's streaming protocol, through the official a2a-sdk) and
turns each stream response into one of a few events the chat panel draws (pure):

- ``task``: the turn's task and conversation (context) ids, to answer a question on that task;
- ``text``: answer text as it streams (``replace``: the whole answer so far, else a piece);
- ``tool``: a tool call starting or finishing, when the runtime reports it (status updates whose
  message metadata holds ``kagent.dev/toolCall`` or ``kagent.dev/toolResult``);
- ``question``: the agent waits for a person (``input-required``); the panel answers in place by
  sending the reply on the same task;
- ``done`` with the final text and the model usage; ``error`` with why the turn failed.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx

from kagent.agentclient import USAGE_METADATA

TOOL_CALL_METADATA = "kagent.dev/toolCall"
TOOL_RESULT_METADATA = "kagent.dev/toolResult"
MAX_MESSAGE_CHARS = 32_768
CHAT_TIMEOUT = 600.0


def _text(parts: Any) -> str:
    return "".join(part.text for part in parts if part.HasField("text"))


def _metadata(message: Any) -> dict[str, Any]:
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(message.metadata) if message.HasField("metadata") else {}


def chat_events(response: Any) -> list[dict[str, Any]]:
    """The chat panel's events for one A2A StreamResponse."""
    from a2a.types import TaskState

    if response.HasField("message"):
        return [{"type": "done", "text": _text(response.message.parts),
                 "usage": _metadata(response.message).get(USAGE_METADATA) or {}}]
    if response.HasField("task"):
        task = response.task
        events: list[dict[str, Any]] = [{"type": "task", "taskId": task.id,
                                         "contextId": task.context_id}]
        if task.status.state != TaskState.TASK_STATE_UNSPECIFIED:
            events += _status_events(task.id, task.status)
        return events
    if response.HasField("artifact_update"):
        update = response.artifact_update
        text = _text(update.artifact.parts)
        if not text:
            return []
        return [{"type": "text", "text": text, "replace": not update.append}]
    if response.HasField("status_update"):
        update = response.status_update
        return _status_events(update.task_id, update.status)
    return []


def _status_events(task_id: str, status: Any) -> list[dict[str, Any]]:
    from a2a.types import TaskState

    state = status.state
    message = status.message if status.HasField("message") else None
    text = _text(message.parts) if message is not None else ""
    metadata = _metadata(message) if message is not None else {}
    if state == TaskState.TASK_STATE_WORKING:
        events = []
        if TOOL_CALL_METADATA in metadata:
            call = metadata[TOOL_CALL_METADATA]
            events.append({"type": "tool", "phase": "call", "id": call.get("id"),
                           "name": call.get("name"), "arguments": call.get("arguments")})
        if TOOL_RESULT_METADATA in metadata:
            result = metadata[TOOL_RESULT_METADATA]
            events.append({"type": "tool", "phase": "result", "id": result.get("id"),
                           "name": result.get("name"), "outcome": result.get("outcome"),
                           "content": result.get("content")})
        return events
    if state in (TaskState.TASK_STATE_INPUT_REQUIRED, TaskState.TASK_STATE_AUTH_REQUIRED):
        return [{"type": "question", "text": text, "taskId": task_id}]
    if state == TaskState.TASK_STATE_COMPLETED:
        return [{"type": "done", "text": text, "usage": metadata.get(USAGE_METADATA) or {}}]
    if state in (TaskState.TASK_STATE_FAILED, TaskState.TASK_STATE_REJECTED,
                 TaskState.TASK_STATE_CANCELED):
        name = TaskState.Name(state).removeprefix("TASK_STATE_").lower()
        return [{"type": "error", "message": text or f"the agent {name} the task",
                 "code": metadata.get("kagent.error")}]
    return []


def check_message(body: Any) -> tuple[str, str | None, str | None]:
    """(text, context id, task id) from the panel's request; ValueError naming the field."""
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    text = body.get("message")
    if not isinstance(text, str) or not text.strip():
        raise ValueError("message: write something to send")
    if len(text) > MAX_MESSAGE_CHARS:
        raise ValueError(f"message: at most {MAX_MESSAGE_CHARS} characters")
    ids = []
    for name in ("contextId", "taskId"):
        value = body.get(name)
        if value is not None and (not isinstance(value, str) or len(value) > 200):
            raise ValueError(f"{name}: must be a short string")
        ids.append(value or None)
    return text, ids[0], ids[1]


async def stream_turn(http: httpx.AsyncClient, base_url: str, agent: str, text: str, *,
                      context_id: str | None, task_id: str | None
                      ) -> AsyncIterator[dict[str, Any]]:
    """Send one message to the agent at ``base_url`` (A2A JSON-RPC, streaming) and yield the
    panel's events. With ``task_id`` the message answers that task's question."""
    from a2a.client import A2ACardResolver, ClientConfig, ClientFactory
    from a2a.client.errors import A2AClientError
    from a2a.types import AgentInterface, Message, Part, Role, SendMessageRequest

    try:
        card = await A2ACardResolver(http, base_url).get_agent_card()
    except (A2AClientError, httpx.HTTPError, ValueError) as error:
        yield {"type": "error", "message": f"cannot reach agent {agent}: {error}"}
        return
    # The card names the address the agent saw; the dashboard may reach it by another (the API
    # server's proxy), so it talks JSON-RPC at the address it used for the card.
    version = next((i.protocol_version for i in card.supported_interfaces
                    if i.protocol_binding == "JSONRPC"), "")
    del card.supported_interfaces[:]
    card.supported_interfaces.append(AgentInterface(
        url=base_url, protocol_binding="JSONRPC", protocol_version=version))
    client = ClientFactory(ClientConfig(streaming=True, httpx_client=http)).create(card)
    message = Message(role=Role.ROLE_USER, message_id=str(uuid.uuid4()), parts=[Part(text=text)])
    if context_id:
        message.context_id = context_id
    if task_id:
        message.task_id = task_id
    try:
        async for response in client.send_message(SendMessageRequest(message=message)):
            for event in chat_events(response):
                yield event
    except (A2AClientError, httpx.HTTPError) as error:
        yield {"type": "error", "message": f"agent {agent} failed: {error}"}
    finally:
        await client.close()
