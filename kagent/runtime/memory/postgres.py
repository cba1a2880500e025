"""Session memory in PostgreSQL, shared by every replica of the agent.

Two tables: ``kagent_sessions`` (one row per conversation: summary and ``expires_at``) and
``kagent_session_messages`` (one row per message, deleted with their conversation). Every
append runs in one transaction that deletes expired conversations, restarts this one's
``expires_at`` and deletes its messages beyond ``maxHistory`` — so the database never holds
more than the policy allows, and a conversation past its TTL is gone for every replica.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from pydantic_ai.messages import ModelMessage

from kagent.runtime.memory.base import Session, SessionStore, decode_message, encode_message

DEFAULT_PORT = 5432
DEFAULT_USER = "postgres"
POOL_SIZE = 4

SCHEMA = """
CREATE TABLE IF NOT EXISTS kagent_sessions (
    namespace text NOT NULL,
    conversation_id text NOT NULL,
    summary text,
    expires_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (namespace, conversation_id)
);
CREATE INDEX IF NOT EXISTS kagent_sessions_expires_at
    ON kagent_sessions (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS kagent_session_messages (
    id bigserial PRIMARY KEY,
    namespace text NOT NULL,
    conversation_id text NOT NULL,
    body text NOT NULL,
    FOREIGN KEY (namespace, conversation_id)
        REFERENCES kagent_sessions (namespace, conversation_id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS kagent_session_messages_conversation
    ON kagent_session_messages (namespace, conversation_id, id);
"""

_EXPIRES = "CASE WHEN %(ttl)s::int > 0 THEN now() + make_interval(secs => %(ttl)s::int) END"


class PostgresSessionStore(SessionStore):
    kind = "postgres"

    def __init__(
        self,
        conninfo: str,
        *,
        namespace: str,
        ttl: int,
        max_history: int,
        password: str | None = None,
    ) -> None:
        super().__init__(namespace=namespace, ttl=ttl, max_history=max_history)
        self._conninfo = conninfo
        self._password = password
        self._idle: asyncio.Queue[Any] = asyncio.Queue()
        self._open = 0
        self._slots = asyncio.Semaphore(POOL_SIZE)
        self._schema_ready = False

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        """A pooled autocommit connection (tables created on first use); a broken one is
        dropped, not put back."""
        async with self._raw_connection() as connection:
            if not self._schema_ready:
                async with connection.transaction():
                    await connection.execute(
                        "SELECT pg_advisory_xact_lock(hashtext('kagent_sessions'))"
                    )
                    await connection.execute(SCHEMA)
                self._schema_ready = True
            yield connection

    @asynccontextmanager
    async def _raw_connection(self) -> AsyncIterator[Any]:
        import psycopg

        async with self._slots:
            try:
                connection = self._idle.get_nowait()
            except asyncio.QueueEmpty:
                kwargs: dict[str, Any] = {"autocommit": True, "connect_timeout": 5}
                if self._password is not None:
                    kwargs["password"] = self._password
                connection = await psycopg.AsyncConnection.connect(self._conninfo, **kwargs)
            try:
                yield connection
            except BaseException:
                await connection.close()
                raise
            if connection.closed:
                return
            self._idle.put_nowait(connection)

    async def start(self) -> None:
        """Nothing to do up front: a database that is down makes the pod unready (the probe
        pings), not crash; the tables are created by the first use that reaches it."""

    async def load(self, conversation_id: str) -> Session:
        key = {"ns": self.namespace, "id": conversation_id}
        # Both queries leave in one round trip (pipeline mode); the messages count only if the
        # conversation is there and not expired.
        async with self._connection() as connection, connection.pipeline():
            session = await connection.execute(
                "SELECT summary FROM kagent_sessions WHERE namespace = %(ns)s AND "
                "conversation_id = %(id)s AND (expires_at IS NULL OR expires_at > now())",
                key,
            )
            messages = await connection.execute(
                "SELECT body FROM kagent_session_messages WHERE namespace = %(ns)s AND "
                "conversation_id = %(id)s ORDER BY id",
                key,
            )
            row = await session.fetchone()
            bodies = [body for (body,) in await messages.fetchall()]
        if row is None:
            return Session()
        return Session([decode_message(b) for b in bodies], row[0])

    async def append(self, conversation_id: str, messages: Sequence[ModelMessage]) -> int:
        key = {"ns": self.namespace, "id": conversation_id, "ttl": self.ttl, "max": self.max_history}
        # One transaction of five statements, sent together (pipeline mode): one round trip to
        # the database instead of one per statement.
        async with (self._connection() as connection, connection.pipeline(),
                    connection.transaction()):
            await connection.execute("DELETE FROM kagent_sessions WHERE expires_at <= now()")
            await connection.execute(
                "INSERT INTO kagent_sessions (namespace, conversation_id, expires_at) "
                f"VALUES (%(ns)s, %(id)s, {_EXPIRES}) ON CONFLICT (namespace, conversation_id) "
                "DO UPDATE SET expires_at = EXCLUDED.expires_at, updated_at = now()",
                key,
            )
            if messages:
                async with connection.cursor() as cursor:
                    await cursor.executemany(
                        "INSERT INTO kagent_session_messages (namespace, conversation_id, body) "
                        "VALUES (%s, %s, %s)",
                        [(self.namespace, conversation_id, encode_message(m)) for m in messages],
                    )
            await connection.execute(
                "DELETE FROM kagent_session_messages WHERE namespace = %(ns)s AND "
                "conversation_id = %(id)s AND id < (SELECT min(id) FROM (SELECT id FROM "
                "kagent_session_messages WHERE namespace = %(ns)s AND conversation_id = %(id)s "
                "ORDER BY id DESC LIMIT %(max)s) AS kept)",
                key,
            )
            cursor = await connection.execute(
                "SELECT count(*) FROM kagent_session_messages WHERE namespace = %(ns)s AND "
                "conversation_id = %(id)s",
                key,
            )
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def compact(self, conversation_id: str, summary: str, drop_oldest: int) -> None:
        key = {"ns": self.namespace, "id": conversation_id, "n": drop_oldest, "summary": summary}
        async with self._connection() as connection, connection.transaction():
            await connection.execute(
                "DELETE FROM kagent_session_messages WHERE id IN (SELECT id FROM "
                "kagent_session_messages WHERE namespace = %(ns)s AND conversation_id = %(id)s "
                "ORDER BY id LIMIT %(n)s)",
                key,
            )
            await connection.execute(
                "UPDATE kagent_sessions SET summary = %(summary)s, updated_at = now() "
                "WHERE namespace = %(ns)s AND conversation_id = %(id)s",
                key,
            )

    async def delete(self, conversation_id: str) -> None:
        async with self._connection() as connection:
            await connection.execute(
                "DELETE FROM kagent_sessions WHERE namespace = %s AND conversation_id = %s",
                (self.namespace, conversation_id),
            )

    async def ping(self) -> None:
        async with self._connection() as connection:
            await connection.execute("SELECT 1")

    async def close(self) -> None:
        while not self._idle.empty():
            await self._idle.get_nowait().close()
