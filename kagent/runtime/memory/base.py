"""Session memory: the contract every backend keeps, and the history rules shared by all.

A conversation is stored as a list of pydantic-ai messages (one element per model request or
response, JSON-encoded) plus an optional summary of older turns. The *backend* enforces the
policy: ``maxHistory`` trims the list on every append (Redis ``LTRIM``, a Postgres ``DELETE`` of
the oldest rows) and ``ttl`` expires the conversation after its last message (Redis
``EXPIRE``, a Postgres ``expires_at`` column). Trimming by count can cut a tool exchange in
half, so :func:`usable_history` drops any leading messages until the history starts at a user
turn again — models reject a tool result whose call they never saw.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pydantic
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    SystemPromptPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)

_MESSAGE = pydantic.TypeAdapter(
    ModelMessage, config=pydantic.ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")
)

SUMMARY_HEADING = "Summary of the earlier part of this conversation:"


def encode_message(message: ModelMessage) -> str:
    return _MESSAGE.dump_json(message).decode()


def decode_message(data: str | bytes) -> ModelMessage:
    return _MESSAGE.validate_json(data)


@dataclass
class Session:
    """A stored conversation as a backend returns it."""

    messages: list[ModelMessage] = field(default_factory=list)
    summary: str | None = None

    def __len__(self) -> int:
        return len(self.messages)


class SessionStore(abc.ABC):
    """Where conversations live. Implementations enforce ``ttl`` and ``max_history``."""

    kind: str = "abstract"

    def __init__(self, *, namespace: str, ttl: int, max_history: int) -> None:
        self.namespace = namespace
        """Keeps agents sharing one Redis or database apart (``<namespace>/<agent>``)."""
        self.ttl = ttl
        """Seconds a conversation lives after its last message; 0 means forever."""
        self.max_history = max_history

    @abc.abstractmethod
    async def load(self, conversation_id: str) -> Session:
        """The conversation, or an empty one if it never existed or has expired."""

    @abc.abstractmethod
    async def append(self, conversation_id: str, messages: Sequence[ModelMessage]) -> int:
        """Add messages, trim to ``max_history``, restart the TTL; returns the stored count."""

    @abc.abstractmethod
    async def compact(self, conversation_id: str, summary: str, drop_oldest: int) -> None:
        """Replace the ``drop_oldest`` oldest messages by ``summary`` (compression).

        Dropping a count from the front, rather than rewriting the list, keeps messages that
        another request appended meanwhile.
        """

    @abc.abstractmethod
    async def delete(self, conversation_id: str) -> None:
        """Forget the conversation."""

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise unless the backend answers (the readiness probe)."""

    async def start(self) -> None:
        """Connect and create what the backend needs (tables); called once before use."""

    async def close(self) -> None:
        """Release connections."""


def usable_history(session: Session) -> list[ModelMessage]:
    """The stored messages as a model can take them: starting at a user turn, with the summary
    of older turns, if any, in front as a system prompt."""
    messages = list(session.messages)
    start = 0
    while start < len(messages) and not _starts_user_turn(messages[start]):
        start += 1
    messages = messages[start:]
    if session.summary:
        summary = SystemPromptPart(content=f"{SUMMARY_HEADING}\n{session.summary}")
        if messages and isinstance(messages[0], ModelRequest):
            first = messages[0]
            messages[0] = ModelRequest(
                parts=[summary, *first.parts],
                timestamp=first.timestamp,
                instructions=first.instructions,
            )
        else:
            messages.insert(0, ModelRequest(parts=[summary]))
    return messages


def _starts_user_turn(message: ModelMessage) -> bool:
    return isinstance(message, ModelRequest) and any(
        isinstance(part, UserPromptPart) for part in message.parts
    )


def turn_start_at_or_after(messages: Sequence[ModelMessage], index: int) -> int:
    """The first index ≥ ``index`` where a user turn starts (``len(messages)`` if none)."""
    for position in range(max(index, 0), len(messages)):
        if _starts_user_turn(messages[position]):
            return position
    return len(messages)


def pending_tool_calls(messages: Sequence[ModelMessage]) -> list[ToolCallPart]:
    """Tool calls of the last response that no later request answers.

    A conversation paused on a human question ends like this; so does one whose request was
    stopped between a model's tool call and the tool's result.
    """
    for position in range(len(messages) - 1, -1, -1):
        message = messages[position]
        if isinstance(message, ModelResponse):
            calls = [p for p in message.parts if isinstance(p, ToolCallPart)]
            answered = {
                part.tool_call_id
                for later in messages[position + 1 :]
                if isinstance(later, ModelRequest)
                for part in later.parts
                if isinstance(part, ToolReturnPart)
            }
            return [c for c in calls if c.tool_call_id not in answered]
    return []


def close_pending_calls(messages: list[ModelMessage], note: str) -> list[ModelMessage]:
    """History with every dangling tool call answered by ``note``, so a new turn can follow."""
    pending = pending_tool_calls(messages)
    if not pending:
        return messages
    returns = [
        ToolReturnPart(tool_name=c.tool_name, content=note, tool_call_id=c.tool_call_id)
        for c in pending
    ]
    return [*messages, ModelRequest(parts=returns, timestamp=datetime.now(UTC))]
