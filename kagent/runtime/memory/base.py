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
import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import quote

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
from starlette.exceptions import HTTPException

_MESSAGE = pydantic.TypeAdapter(
    ModelMessage, config=pydantic.ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")
)

SUMMARY_HEADING = "Summary of the earlier part of this conversation:"
RETRY_AFTER_SECONDS = 5
PROBE_INTERVAL = 1.0
"""While the backend is down, at most one probe per this many seconds; other requests are
refused at once."""
PROBE_TIMEOUT = 2.0

logger = logging.getLogger("kagent.runtime.memory")


def caller_scoped(conversation_id: str) -> str:
    """The storage key of a conversation: the caller's identity, then the id the caller chose,
    so two callers who pick the same id never share a conversation (or a pending question).

    The identity is percent-encoded, so it holds no ``/`` and the split is unambiguous."""
    from kagent.runtime.caller import current_caller

    return f"{quote(current_caller().identity, safe='')}/{conversation_id}"


class BackendUnavailable(HTTPException):
    """The memory backend (Redis or PostgreSQL) cannot be reached: the request is refused with
    503 and a Retry-After, never answered without its history or half-written.

    An HTTPException so it passes through the A2A SDK's handlers to the HTTP layer unchanged."""

    def __init__(self, kind: str, cause: BaseException | str) -> None:
        reason = cause if isinstance(cause, str) else f"{type(cause).__name__}: {cause}"
        self.kind = kind
        self.reason = reason
        message = (f"the agent's {kind} memory backend is unavailable ({reason}); "
                   f"retry in a few seconds")
        super().__init__(503, detail=message, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})

    def __str__(self) -> str:
        return str(self.detail)


def is_backend_error(error: BaseException) -> bool:
    """Whether ``error`` means the backend is unreachable (as opposed to a bug or bad data)."""
    if isinstance(error, (BackendUnavailable, ConnectionError, TimeoutError, OSError)):
        return True
    try:
        import redis.exceptions as redis_errors

        if isinstance(error, (redis_errors.ConnectionError, redis_errors.TimeoutError,
                              redis_errors.BusyLoadingError)):
            return True
    except ImportError:  # pragma: no cover - redis is a dependency
        pass
    try:
        import psycopg

        if isinstance(error, psycopg.OperationalError):
            return True
    except ImportError:  # pragma: no cover - psycopg is a dependency
        pass
    return False


class BackendHealth:
    """Whether the memory backend answered last time, shared by every store on it.

    An error that means "unreachable" marks it down (a metric, one log line); while it is
    down, requests are refused fast with 503 and at most one probe per second checks whether
    it is back — it recovers on its own, no restart. Readiness does not depend on it: a shared
    backend's blip must not empty every agent's Service at once."""

    def __init__(self, kind: str, agent: str = "") -> None:
        self.kind = kind
        self.agent = agent
        self.down_since: float | None = None
        self.reason = ""
        self._last_probe = 0.0
        self._probing: asyncio.Future[bool] | None = None
        self._reported_up = False

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def mark_down(self, error: BaseException) -> BackendUnavailable:
        unavailable = (error if isinstance(error, BackendUnavailable)
                       else BackendUnavailable(self.kind, error))
        if self.down_since is None:
            self.down_since = time.monotonic()
            self._last_probe = self.down_since
            logger.warning("%s memory backend unavailable: %s; answering 503 until it returns",
                           self.kind, unavailable.reason)
            self._gauge(0)
        self.reason = unavailable.reason
        return unavailable

    def mark_up(self) -> None:
        if self.down_since is not None:
            logger.info("%s memory backend is back after %.1f s", self.kind,
                        time.monotonic() - self.down_since)
            self.down_since = None
            self.reason = ""
        self._gauge(1)

    def _gauge(self, value: int) -> None:
        from kagent.runtime.metrics import MEMORY_BACKEND_UP

        MEMORY_BACKEND_UP.labels(agent=self.agent, backend=self.kind).set(value)

    @contextlib.asynccontextmanager
    async def guard(self) -> AsyncIterator[None]:
        """Run one backend operation: an unreachable backend becomes BackendUnavailable."""
        try:
            yield
        except BackendUnavailable as error:
            raise self.mark_down(error) from None
        except Exception as error:
            if is_backend_error(error):
                raise self.mark_down(error) from None
            raise
        if not self._reported_up:  # the gauge says 1 from the first answer on
            self._reported_up = True
            self._gauge(1)

    async def available(self, ping: Callable[[], Awaitable[None]]) -> bool:
        """True unless the backend is down and a probe (at most one per PROBE_INTERVAL,
        shared by concurrent callers) still finds it down."""
        if not self.down:
            return True
        if self._probing is not None:
            return await asyncio.shield(self._probing)
        if time.monotonic() - self._last_probe < PROBE_INTERVAL:
            return False
        self._last_probe = time.monotonic()
        probing = self._probing = asyncio.get_running_loop().create_future()
        result = False
        try:
            async with asyncio.timeout(PROBE_TIMEOUT):
                await ping()
        except Exception as error:  # noqa: BLE001 - any failure means still down
            self.reason = getattr(error, "reason", f"{type(error).__name__}: {error}")
        else:
            self.mark_up()
            result = True
        finally:  # waiters are released even if this request was cancelled mid-probe
            probing.set_result(result)
            self._probing = None
        return result


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
        self.health = BackendHealth(self.kind, namespace.rsplit("/", 1)[-1])
        self.namespace = namespace
        """Keeps agents sharing one Redis or database apart (``<namespace>/<agent>``)."""
        self.ttl = ttl
        """Seconds a conversation lives after its last message; 0 means forever."""
        self.max_history = max_history

    @abc.abstractmethod
    async def load(self, conversation_id: str) -> Session:
        """The conversation, or an empty one if it never existed or has expired.

        Every method keys the conversation by the current caller too (:func:`caller_scoped`);
        an unreachable backend raises :class:`BackendUnavailable`."""

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
