"""Session memory in Redis, shared by every replica of the agent.

A conversation is two keys: a list of encoded messages and a string with the summary. Every
append runs one MULTI/EXEC: ``RPUSH``, ``LTRIM`` to ``maxHistory``, ``EXPIRE`` both keys to
``ttl`` — so Redis itself forgets idle conversations and never holds more than the limit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic_ai.messages import ModelMessage

from kagent.runtime.memory.base import (
    Session,
    SessionStore,
    caller_scoped,
    decode_message,
    encode_message,
)

DEFAULT_PORT = 6379
CONNECT_TIMEOUT = 3
COMMAND_TIMEOUT = 10


class RedisSessionStore(SessionStore):
    kind = "redis"

    def __init__(
        self,
        url: str,
        *,
        namespace: str,
        ttl: int,
        max_history: int,
        password: str | None = None,
    ) -> None:
        super().__init__(namespace=namespace, ttl=ttl, max_history=max_history)
        import redis.asyncio as redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        # One immediate retry: a pooled connection that died with a restarted server is
        # replaced at once; a server that is down fails the request fast instead of after
        # the client's default backoff.
        self.client: Any = redis.Redis.from_url(
            url, password=password, socket_connect_timeout=CONNECT_TIMEOUT,
            socket_timeout=COMMAND_TIMEOUT, retry=Retry(NoBackoff(), 1),
        )
        self._client = self.client

    def key(self, conversation_id: str, what: str) -> str:
        """``kagent:<namespace>/<agent>:<caller>/<conversation>:<messages|summary>``."""
        return f"kagent:{self.namespace}:{caller_scoped(conversation_id)}:{what}"

    async def load(self, conversation_id: str) -> Session:
        async with self.health.guard():
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.lrange(self.key(conversation_id, "messages"), 0, -1)
                pipe.get(self.key(conversation_id, "summary"))
                raw_messages, raw_summary = await pipe.execute()
            summary = raw_summary.decode() if isinstance(raw_summary, bytes) else raw_summary
            return Session([decode_message(m) for m in raw_messages], summary)

    async def append(self, conversation_id: str, messages: Sequence[ModelMessage]) -> int:
        async with self.health.guard():
            messages_key = self.key(conversation_id, "messages")
            async with self._client.pipeline(transaction=True) as pipe:
                if messages:
                    pipe.rpush(messages_key, *[encode_message(m) for m in messages])
                pipe.ltrim(messages_key, -self.max_history, -1)
                self._expire(pipe, conversation_id)
                pipe.llen(messages_key)
                results = await pipe.execute()
            return int(results[-1])

    def _expire(self, pipe: Any, conversation_id: str) -> None:
        for what in ("messages", "summary"):
            if self.ttl > 0:
                pipe.expire(self.key(conversation_id, what), self.ttl)
            else:
                pipe.persist(self.key(conversation_id, what))

    async def compact(self, conversation_id: str, summary: str, drop_oldest: int) -> None:
        async with self.health.guard(), self._client.pipeline(transaction=True) as pipe:
            pipe.ltrim(self.key(conversation_id, "messages"), drop_oldest, -1)
            pipe.set(self.key(conversation_id, "summary"), summary)
            self._expire(pipe, conversation_id)
            await pipe.execute()

    async def delete(self, conversation_id: str) -> None:
        async with self.health.guard():
            await self._client.delete(
                self.key(conversation_id, "messages"), self.key(conversation_id, "summary")
            )

    async def ping(self) -> None:
        async with self.health.guard():
            await self._client.ping()

    async def close(self) -> None:
        await self._client.aclose()
