"""Session memory inside the process: for one pod, or a laptop. Lost on restart and not shared
between replicas — use redis or postgres when the agent scales out."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pydantic_ai.messages import ModelMessage

from kagent.runtime.memory.base import (
    Session,
    SessionStore,
    caller_scoped,
    decode_message,
    encode_message,
)

MAX_CONVERSATIONS = 10_000
"""Conversations kept in the process; the least recently used is forgotten beyond this."""


@dataclass
class _Entry:
    messages: list[str] = field(default_factory=list)
    summary: str | None = None
    expires_at: float | None = None


class InMemorySessionStore(SessionStore):
    """A dict of conversations with the same TTL and trimming rules as the real backends.

    Messages are kept encoded, exactly as Redis and Postgres keep them, so a history that
    works here works there.
    """

    kind = "in-memory"

    def __init__(
        self,
        *,
        namespace: str,
        ttl: int,
        max_history: int,
        clock: Callable[[], float] = time.monotonic,
        max_conversations: int = MAX_CONVERSATIONS,
    ) -> None:
        super().__init__(namespace=namespace, ttl=ttl, max_history=max_history)
        self._clock = clock
        self.max_conversations = max_conversations
        self._entries: dict[str, _Entry] = {}
        self._lock = asyncio.Lock()

    def _live(self, conversation_id: str) -> _Entry | None:
        entry = self._entries.get(conversation_id)
        if entry is not None and entry.expires_at is not None and entry.expires_at <= self._clock():
            del self._entries[conversation_id]
            return None
        return entry

    def _sweep(self) -> None:
        now = self._clock()
        expired = [k for k, e in self._entries.items() if e.expires_at is not None and e.expires_at <= now]
        for key in expired:
            del self._entries[key]

    async def load(self, conversation_id: str) -> Session:
        conversation_id = caller_scoped(conversation_id)
        entry = self._live(conversation_id)
        if entry is None:
            return Session()
        return Session([decode_message(m) for m in entry.messages], entry.summary)

    async def append(self, conversation_id: str, messages: Sequence[ModelMessage]) -> int:
        conversation_id = caller_scoped(conversation_id)
        async with self._lock:
            self._sweep()
            entry = self._live(conversation_id) or _Entry()
            self._entries.pop(conversation_id, None)
            self._entries[conversation_id] = entry  # the most recently used is last
            while len(self._entries) > self.max_conversations:
                del self._entries[next(iter(self._entries))]
            entry.messages.extend(encode_message(m) for m in messages)
            del entry.messages[: max(0, len(entry.messages) - self.max_history)]
            entry.expires_at = self._clock() + self.ttl if self.ttl > 0 else None
            return len(entry.messages)

    async def compact(self, conversation_id: str, summary: str, drop_oldest: int) -> None:
        conversation_id = caller_scoped(conversation_id)
        async with self._lock:
            entry = self._live(conversation_id)
            if entry is None:
                return
            del entry.messages[:drop_oldest]
            entry.summary = summary

    async def delete(self, conversation_id: str) -> None:
        conversation_id = caller_scoped(conversation_id)
        self._entries.pop(conversation_id, None)

    async def ping(self) -> None:
        return None

    def __len__(self) -> int:
        self._sweep()
        return len(self._entries)
