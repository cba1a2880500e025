"""A2A tasks and idempotency records in the agent's memory backend, kept per caller.

Tasks (their status, history and artifacts — an ``input-required`` human question too) live
where the conversations live: Redis or PostgreSQL, so any replica answers ``GetTask``,
``ListTasks``, continues a task or takes a human's answer, and nothing is lost when a pod
restarts; in the process only for ``in-memory`` memory. Every record is keyed by the caller
(:func:`kagent.runtime.caller.current_caller`), so callers never see each other's tasks,
even when they pick the same ids.

a2a-sdk ships an in-memory store and a SQLAlchemy ``DatabaseTaskStore``. We implement the
SDK's own :class:`~a2a.server.tasks.TaskStore` interface instead of using the latter because
it needs SQLAlchemy beside the psycopg pool the session memory already holds, has no
expiry or per-caller bound, and there is nothing for Redis; the list semantics (filters,
newest first, cursor page tokens) follow the SDK's stores.

Idempotency: a message id is the key of a request; the first replica to *claim* it runs
the turn (renewing a short lease while it runs) and *settles* the record with the answer.
A re-sent message — a workflow step resent by a new controller leader, to any replica —
gets that answer; while the first run is still going it waits for it; if the process that
claimed it died, the lease runs out and the re-send runs the turn.

Bounds: a task is forgotten ``TASK_TTL_SECONDS`` after its last update, a caller keeps at
most ``MAX_TASKS_PER_CALLER`` tasks (the oldest go first), a stored task is at most
``MAX_TASK_BYTES`` (its oldest history is dropped to fit, then its texts are cut), and
idempotency records expire. ``ListTasks`` filters and pages a small index (id, context, state,
time) and reads only the page's tasks.
"""

from __future__ import annotations

import abc
import asyncio
import json
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from a2a.server.context import ServerCallContext
from a2a.server.tasks import TaskStore
from a2a.types import ListTasksRequest, ListTasksResponse, Task, TaskState
from a2a.utils.constants import DEFAULT_LIST_TASKS_PAGE_SIZE
from a2a.utils.errors import InvalidParamsError
from a2a.utils.task import ListTasksCursor, decode_list_tasks_cursor, encode_list_tasks_cursor

from kagent.runtime.caller import current_caller
from kagent.runtime.memory.base import BackendHealth, SessionStore

if TYPE_CHECKING:
    from kagent.runtime.memory.postgres import PostgresSessionStore
    from kagent.runtime.memory.redis import RedisSessionStore

TASK_TTL_SECONDS = 7 * 24 * 3600
MAX_TASKS_PER_CALLER = 1000
MAX_TASK_BYTES = 256 << 10
CUT_NOTE = " … (cut: the stored task exceeded its size bound)"
IDEMPOTENCY_TTL_SECONDS = 24 * 3600
CLAIM_LEASE_SECONDS = 30.0
"""How long a claim on a message id lasts without renewal: a re-send waits at most this long
after the process running it died."""
MAX_IDEMPOTENCY_RECORDS = 10_000
"""In-process records kept (the in-memory backend); the others expire in the backend."""
MAX_IN_PROCESS_TASKS = 10_000
WORKING_SAVE_INTERVAL = 1.0
"""While a task is working, its streamed answer chunks are written at most this often (every
state change is written at once): one write per chunk would be a backend round trip per token."""


@dataclass(frozen=True)
class Claim:
    """The outcome of claiming a message id: ``mine`` (run it), or the ``record`` another
    request settled, or neither (another request is running it now)."""

    mine: bool
    record: dict[str, Any] | None = None


def owner() -> str:
    """The record owner: the caller's identity, percent-encoded (no ``:`` or ``/`` in it)."""
    return quote(current_caller().identity, safe="")


@dataclass(frozen=True)
class TaskEntry:
    """What listing needs of a stored task, kept beside it so a list reads no task bodies."""

    task_id: str
    context_id: str
    state: int
    updated_ns: int
    """The status timestamp (0 when the task has none)."""

    def sort_key(self) -> tuple[bool, int, str]:
        return self.updated_ns > 0, self.updated_ns, self.task_id

    def encode(self) -> str:
        return json.dumps([self.context_id, self.state, self.updated_ns])

    @classmethod
    def decode(cls, task_id: str, data: str | bytes) -> TaskEntry:
        context_id, state, updated = json.loads(data)
        return cls(task_id, str(context_id), int(state), int(updated))


def entry_of(task: Task) -> TaskEntry:
    has = task.HasField("status") and task.status.HasField("timestamp")
    return TaskEntry(task.id, task.context_id, int(task.status.state),
                     task.status.timestamp.ToNanoseconds() if has else 0)


@dataclass(frozen=True)
class TaskPage:
    entries: list[TaskEntry]
    total: int
    size: int
    next_token: str | None


def page_of_tasks(entries: Sequence[TaskEntry], params: ListTasksRequest) -> TaskPage:
    """ListTasks over one caller's tasks: filters, newest first, a cursor page token (the
    a2a-sdk stores' semantics)."""
    found = list(entries)
    if params.context_id:
        found = [e for e in found if e.context_id == params.context_id]
    if params.status:
        found = [e for e in found if e.state == params.status]
    if params.HasField("status_timestamp_after"):
        after = params.status_timestamp_after.ToNanoseconds()
        found = [e for e in found if e.updated_ns and e.updated_ns >= after]
    found.sort(key=TaskEntry.sort_key, reverse=True)
    start = 0
    if params.page_token:
        cursor = decode_list_tasks_cursor(params.page_token)
        if cursor is None:
            raise InvalidParamsError(f"Invalid page token: {params.page_token}")
        limit = cursor.sort_key()
        start = next((i for i, e in enumerate(found) if e.sort_key() < limit), len(found))
    size = params.page_size or DEFAULT_LIST_TASKS_PAGE_SIZE
    page = found[start:start + size]
    next_token = None
    if start + size < len(found) and page:
        last = page[-1]
        next_token = encode_list_tasks_cursor(ListTasksCursor(
            timestamp_ns=last.updated_ns or None, task_id=last.task_id))
    return TaskPage(page, len(found), size, next_token)


def bounded_body(task: Task, limit: int = MAX_TASK_BYTES) -> bytes:
    """The task serialised within ``limit`` bytes: its oldest history is dropped first, then
    every text is cut (saying so) — a stored task never exceeds the bound."""
    body = task.SerializeToString()
    if len(body) <= limit:
        return body
    trimmed = Task()
    trimmed.CopyFrom(task)
    while len(body) > limit and trimmed.history:
        del trimmed.history[: max(1, len(trimmed.history) // 4)]
        body = trimmed.SerializeToString()
    share = max(64, limit // 8)
    while len(body) > limit and share >= 64:
        for parts in _text_parts(trimmed):
            for part in parts:
                if part.HasField("text") and len(part.text) > share:
                    part.text = part.text[:share] + CUT_NOTE
        body = trimmed.SerializeToString()
        share //= 2
    return body


def _text_parts(task: Task) -> list[Any]:
    parts = [artifact.parts for artifact in task.artifacts]
    if task.status.HasField("message"):
        parts.append(task.status.message.parts)
    return parts


class TaskRecords(abc.ABC):
    """What a backend keeps for tasks and idempotency, by owner (see module docstring)."""

    kind = "abstract"

    def __init__(self, health: BackendHealth) -> None:
        self.health = health

    @abc.abstractmethod
    async def put_task(self, owner: str, entry: TaskEntry, body: bytes) -> None:
        """Store the task; expire and trim the owner's tasks to the bounds."""

    @abc.abstractmethod
    async def get_task(self, owner: str, task_id: str) -> bytes | None: ...

    @abc.abstractmethod
    async def task_index(self, owner: str) -> list[TaskEntry]:
        """The owner's live tasks, without their bodies (at most MAX_TASKS_PER_CALLER)."""

    @abc.abstractmethod
    async def get_tasks(self, owner: str, task_ids: Sequence[str]) -> list[bytes]:
        """The bodies of these tasks, in this order, skipping any that are gone."""

    @abc.abstractmethod
    async def delete_task(self, owner: str, task_id: str) -> None: ...

    @abc.abstractmethod
    async def claim(self, owner: str, key: str, lease: float) -> Claim: ...

    @abc.abstractmethod
    async def renew(self, owner: str, key: str, lease: float) -> None: ...

    @abc.abstractmethod
    async def settle(self, owner: str, key: str, record: dict[str, Any]) -> None: ...

    @abc.abstractmethod
    async def release(self, owner: str, key: str) -> None:
        """Drop an unsettled claim (the run was interrupted: a re-send runs again)."""


class DurableTaskStore(TaskStore):
    """The a2a-sdk TaskStore over :class:`TaskRecords`, keyed by the current caller, plus the
    idempotency records of :mod:`kagent.runtime.a2a_server`."""

    def __init__(self, records: TaskRecords, *, clock: Any = time.monotonic) -> None:
        self.records = records
        self.kind = records.kind
        self._clock = clock
        self._working_saved: dict[tuple[str, str], float] = {}
        """When each working task was last written by this process."""

    async def save(self, task: Task, context: ServerCallContext | None = None) -> None:
        who = owner()
        if self._skip_working_update(who, task):
            return
        async with self.records.health.guard():
            await self.records.put_task(who, entry_of(task), bounded_body(task))

    def _skip_working_update(self, who: str, task: Task) -> bool:
        """Whether this save only adds answer chunks to a working task written moments ago."""
        key = (who, task.id)
        if task.status.state != TaskState.TASK_STATE_WORKING:
            self._working_saved.pop(key, None)
            return False
        now = self._clock()
        last = self._working_saved.get(key)
        if last is not None and now - last < WORKING_SAVE_INTERVAL and task.artifacts:
            return True
        if len(self._working_saved) >= MAX_IN_PROCESS_TASKS:
            self._working_saved.clear()
        self._working_saved[key] = now
        return False

    async def get(self, task_id: str, context: ServerCallContext | None = None) -> Task | None:
        async with self.records.health.guard():
            body = await self.records.get_task(owner(), task_id)
        if body is None:
            return None
        task = Task()
        task.ParseFromString(body)
        return task

    async def list(self, params: ListTasksRequest,
                   context: ServerCallContext | None = None) -> ListTasksResponse:
        who = owner()
        async with self.records.health.guard():
            page = page_of_tasks(await self.records.task_index(who), params)
            bodies = await self.records.get_tasks(who, [e.task_id for e in page.entries])
        tasks = []
        for body in bodies:
            task = Task()
            task.ParseFromString(body)
            tasks.append(task)
        return ListTasksResponse(tasks=tasks, total_size=page.total, page_size=page.size,
                                 next_page_token=page.next_token)

    async def delete(self, task_id: str, context: ServerCallContext | None = None) -> None:
        async with self.records.health.guard():
            await self.records.delete_task(owner(), task_id)

    async def claim(self, message_id: str, lease: float = CLAIM_LEASE_SECONDS) -> Claim:
        async with self.records.health.guard():
            return await self.records.claim(owner(), message_id, lease)

    async def renew(self, message_id: str, lease: float = CLAIM_LEASE_SECONDS) -> None:
        async with self.records.health.guard():
            await self.records.renew(owner(), message_id, lease)

    async def settle(self, message_id: str, record: dict[str, Any]) -> None:
        async with self.records.health.guard():
            await self.records.settle(owner(), message_id, record)

    async def release(self, message_id: str) -> None:
        async with self.records.health.guard():
            await self.records.release(owner(), message_id)


# -- in the process -----------------------------------------------------------------------------


class InMemoryTaskRecords(TaskRecords):
    """Tasks in the process (``in-memory`` memory): the same bounds, plus at most
    ``MAX_IN_PROCESS_TASKS`` over all callers (the least recently updated go first)."""

    kind = "in-memory"

    def __init__(self, health: BackendHealth, *, max_tasks: int = MAX_TASKS_PER_CALLER,
                 max_total: int = MAX_IN_PROCESS_TASKS, ttl: float = TASK_TTL_SECONDS,
                 clock: Any = time.monotonic) -> None:
        super().__init__(health)
        self.max_tasks = max_tasks
        self.max_total = max_total
        self.ttl = ttl
        self._clock = clock
        self._by_owner: dict[str, OrderedDict[str, tuple[float, TaskEntry, bytes]]] = {}
        self._order: OrderedDict[tuple[str, str], None] = OrderedDict()
        """Every stored task, least recently updated first (for the total bound)."""
        self._claims: OrderedDict[tuple[str, str], tuple[float, dict[str, Any] | None]] = (
            OrderedDict())

    def _drop(self, owner: str, task_id: str) -> None:
        tasks = self._by_owner.get(owner)
        if tasks is not None:
            tasks.pop(task_id, None)
            if not tasks:
                del self._by_owner[owner]
        self._order.pop((owner, task_id), None)

    async def put_task(self, owner: str, entry: TaskEntry, body: bytes) -> None:
        """O(1): expired tasks are skipped when read and pushed out by the bounds."""
        self._drop(owner, entry.task_id)
        tasks = self._by_owner.setdefault(owner, OrderedDict())
        tasks[entry.task_id] = (self._clock() + self.ttl, entry, body)
        self._order[(owner, entry.task_id)] = None
        while len(tasks) > self.max_tasks:
            self._drop(owner, next(iter(tasks)))
        while len(self._order) > self.max_total:
            self._drop(*next(iter(self._order)))

    async def get_task(self, owner: str, task_id: str) -> bytes | None:
        found = self._by_owner.get(owner, {}).get(task_id)
        return found[2] if found is not None and found[0] > self._clock() else None

    async def task_index(self, owner: str) -> list[TaskEntry]:
        now = self._clock()
        return [entry for expires, entry, _ in self._by_owner.get(owner, {}).values()
                if expires > now]

    async def get_tasks(self, owner: str, task_ids: Sequence[str]) -> list[bytes]:
        bodies = [await self.get_task(owner, task_id) for task_id in task_ids]
        return [body for body in bodies if body is not None]

    async def delete_task(self, owner: str, task_id: str) -> None:
        self._drop(owner, task_id)

    async def claim(self, owner: str, key: str, lease: float) -> Claim:
        entry = self._claims.get((owner, key))
        if entry is not None and entry[0] > self._clock():
            return Claim(False, entry[1])
        self._claims[(owner, key)] = (self._clock() + lease, None)
        self._claims.move_to_end((owner, key))
        while len(self._claims) > MAX_IDEMPOTENCY_RECORDS:
            self._claims.popitem(last=False)
        return Claim(True)

    async def renew(self, owner: str, key: str, lease: float) -> None:
        entry = self._claims.get((owner, key))
        if entry is not None and entry[1] is None:
            self._claims[(owner, key)] = (self._clock() + lease, None)

    async def settle(self, owner: str, key: str, record: dict[str, Any]) -> None:
        self._claims[(owner, key)] = (self._clock() + IDEMPOTENCY_TTL_SECONDS, record)

    async def release(self, owner: str, key: str) -> None:
        entry = self._claims.get((owner, key))
        if entry is not None and entry[1] is None:
            del self._claims[(owner, key)]


# -- Redis ----------------------------------------------------------------------------------------


class RedisTaskRecords(TaskRecords):
    """``kagent:<ns>/<agent>:task:<owner>:<id>`` (the task), ``…:tasks:<owner>`` (a sorted set
    of the owner's task ids by update time), ``…:taskmeta:<owner>`` (a hash: id → context,
    state, time, for listing) and ``…:idem:<owner>:<message id>``; every key expires in Redis
    itself."""

    kind = "redis"

    def __init__(self, store: RedisSessionStore) -> None:
        super().__init__(store.health)
        self.client = store.client
        self.prefix = f"kagent:{store.namespace}"

    def _task(self, owner: str, task_id: str) -> str:
        return f"{self.prefix}:task:{owner}:{task_id}"

    def _index(self, owner: str) -> str:
        return f"{self.prefix}:tasks:{owner}"

    def _meta(self, owner: str) -> str:
        return f"{self.prefix}:taskmeta:{owner}"

    def _idem(self, owner: str, key: str) -> str:
        return f"{self.prefix}:idem:{owner}:{key}"

    async def put_task(self, owner: str, entry: TaskEntry, body: bytes) -> None:
        index, meta = self._index(owner), self._meta(owner)
        now_ms = time.time() * 1000
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.set(self._task(owner, entry.task_id), body, ex=TASK_TTL_SECONDS)
            pipe.zadd(index, {entry.task_id: now_ms})
            pipe.hset(meta, entry.task_id, entry.encode())
            pipe.zrangebyscore(index, "-inf", now_ms - TASK_TTL_SECONDS * 1000)
            pipe.zremrangebyscore(index, "-inf", now_ms - TASK_TTL_SECONDS * 1000)
            pipe.expire(index, TASK_TTL_SECONDS)
            pipe.expire(meta, TASK_TTL_SECONDS)
            pipe.zcard(index)
            results = await pipe.execute()
        stale = [m.decode() for m in results[3]]
        count = results[-1]
        if count > MAX_TASKS_PER_CALLER:
            stale += [m.decode() for m, _ in
                      await self.client.zpopmin(index, count - MAX_TASKS_PER_CALLER)]
        if stale:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.delete(*[self._task(owner, task_id) for task_id in stale])
                pipe.hdel(meta, *stale)
                await pipe.execute()

    async def get_task(self, owner: str, task_id: str) -> bytes | None:
        body = await self.client.get(self._task(owner, task_id))
        return bytes(body) if body is not None else None

    async def task_index(self, owner: str) -> list[TaskEntry]:
        ids = [i.decode() for i in
               await self.client.zrevrange(self._index(owner), 0, MAX_TASKS_PER_CALLER - 1)]
        if not ids:
            return []
        metas = await self.client.hmget(self._meta(owner), ids)
        return [TaskEntry.decode(task_id, meta) for task_id, meta in zip(ids, metas, strict=True)
                if meta is not None]

    async def get_tasks(self, owner: str, task_ids: Sequence[str]) -> list[bytes]:
        if not task_ids:
            return []
        bodies = await self.client.mget([self._task(owner, i) for i in task_ids])
        return [bytes(b) for b in bodies if b is not None]

    async def delete_task(self, owner: str, task_id: str) -> None:
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.delete(self._task(owner, task_id))
            pipe.zrem(self._index(owner), task_id)
            pipe.hdel(self._meta(owner), task_id)
            await pipe.execute()

    async def claim(self, owner: str, key: str, lease: float) -> Claim:
        name = self._idem(owner, key)
        if await self.client.set(name, b"", nx=True, px=int(lease * 1000)):
            return Claim(True)
        value = await self.client.get(name)
        return Claim(False, json.loads(value) if value else None)

    async def renew(self, owner: str, key: str, lease: float) -> None:
        await self.client.set(self._idem(owner, key), b"", xx=True, px=int(lease * 1000))

    async def settle(self, owner: str, key: str, record: dict[str, Any]) -> None:
        await self.client.set(self._idem(owner, key), json.dumps(record),
                              ex=IDEMPOTENCY_TTL_SECONDS)

    async def release(self, owner: str, key: str) -> None:
        name = self._idem(owner, key)
        if await self.client.get(name) == b"":
            await self.client.delete(name)


# -- PostgreSQL -----------------------------------------------------------------------------------


class PostgresTaskRecords(TaskRecords):
    """Tables ``kagent_tasks`` and ``kagent_idempotency`` (created with the session tables),
    on the session store's connection pool and statement timeout."""

    kind = "postgres"

    def __init__(self, store: PostgresSessionStore) -> None:
        super().__init__(store.health)
        self.store = store
        self.namespace = store.namespace

    async def put_task(self, owner: str, entry: TaskEntry, body: bytes) -> None:
        key = {"ns": self.namespace, "owner": owner, "id": entry.task_id, "body": body,
               "context": entry.context_id, "state": entry.state, "updated": entry.updated_ns,
               "ttl": TASK_TTL_SECONDS, "max": MAX_TASKS_PER_CALLER}
        async with self.store.connection() as connection, connection.transaction():
            await connection.execute(
                "DELETE FROM kagent_tasks WHERE namespace = %(ns)s AND owner = %(owner)s AND "
                "expires_at <= now()", key)
            await connection.execute(
                "INSERT INTO kagent_tasks (namespace, owner, task_id, context_id, state, "
                "status_ns, body, updated_at, expires_at) VALUES (%(ns)s, %(owner)s, %(id)s, "
                "%(context)s, %(state)s, %(updated)s, %(body)s, clock_timestamp(), "
                "now() + make_interval(secs => %(ttl)s)) ON CONFLICT (namespace, owner, task_id) "
                "DO UPDATE SET context_id = EXCLUDED.context_id, state = EXCLUDED.state, "
                "status_ns = EXCLUDED.status_ns, body = EXCLUDED.body, "
                "updated_at = EXCLUDED.updated_at, expires_at = EXCLUDED.expires_at", key)
            await connection.execute(
                "DELETE FROM kagent_tasks WHERE namespace = %(ns)s AND owner = %(owner)s AND "
                "task_id IN (SELECT task_id FROM kagent_tasks WHERE namespace = %(ns)s AND "
                "owner = %(owner)s ORDER BY updated_at DESC OFFSET %(max)s)", key)

    async def get_task(self, owner: str, task_id: str) -> bytes | None:
        bodies = await self.get_tasks(owner, [task_id])
        return bodies[0] if bodies else None

    async def task_index(self, owner: str) -> list[TaskEntry]:
        async with self.store.connection() as connection:
            cursor = await connection.execute(
                "SELECT task_id, context_id, state, status_ns FROM kagent_tasks WHERE "
                "namespace = %s AND owner = %s AND expires_at > now() "
                "ORDER BY updated_at DESC LIMIT %s", (self.namespace, owner, MAX_TASKS_PER_CALLER))
            rows = await cursor.fetchall()
        return [TaskEntry(task_id, context_id, int(state), int(status_ns))
                for task_id, context_id, state, status_ns in rows]

    async def get_tasks(self, owner: str, task_ids: Sequence[str]) -> list[bytes]:
        if not task_ids:
            return []
        async with self.store.connection() as connection:
            cursor = await connection.execute(
                "SELECT task_id, body FROM kagent_tasks WHERE namespace = %s AND owner = %s AND "
                "task_id = ANY(%s) AND expires_at > now()", (self.namespace, owner, list(task_ids)))
            found = {task_id: bytes(body) for task_id, body in await cursor.fetchall()}
        return [found[i] for i in task_ids if i in found]

    async def delete_task(self, owner: str, task_id: str) -> None:
        async with self.store.connection() as connection:
            await connection.execute(
                "DELETE FROM kagent_tasks WHERE namespace = %s AND owner = %s AND task_id = %s",
                (self.namespace, owner, task_id))

    async def claim(self, owner: str, key: str, lease: float) -> Claim:
        params = {"ns": self.namespace, "owner": owner, "key": key, "lease": lease}
        async with self.store.connection() as connection, connection.transaction():
            await connection.execute(
                "DELETE FROM kagent_idempotency WHERE namespace = %(ns)s AND owner = %(owner)s "
                "AND key = %(key)s AND expires_at <= now()", params)
            cursor = await connection.execute(
                "INSERT INTO kagent_idempotency (namespace, owner, key, expires_at) VALUES "
                "(%(ns)s, %(owner)s, %(key)s, now() + make_interval(secs => %(lease)s)) "
                "ON CONFLICT DO NOTHING RETURNING 1", params)
            if await cursor.fetchone():
                return Claim(True)
            cursor = await connection.execute(
                "SELECT record FROM kagent_idempotency WHERE namespace = %(ns)s AND "
                "owner = %(owner)s AND key = %(key)s", params)
            row = await cursor.fetchone()
        return Claim(False, json.loads(row[0]) if row and row[0] else None)

    async def renew(self, owner: str, key: str, lease: float) -> None:
        async with self.store.connection() as connection:
            await connection.execute(
                "UPDATE kagent_idempotency SET expires_at = now() + make_interval(secs => %s) "
                "WHERE namespace = %s AND owner = %s AND key = %s AND record IS NULL",
                (lease, self.namespace, owner, key))

    async def settle(self, owner: str, key: str, record: dict[str, Any]) -> None:
        async with self.store.connection() as connection:
            await connection.execute(
                "INSERT INTO kagent_idempotency (namespace, owner, key, record, expires_at) "
                "VALUES (%s, %s, %s, %s, now() + make_interval(secs => %s)) ON CONFLICT "
                "(namespace, owner, key) DO UPDATE SET record = EXCLUDED.record, "
                "expires_at = EXCLUDED.expires_at",
                (self.namespace, owner, key, json.dumps(record), IDEMPOTENCY_TTL_SECONDS))
            # Expired records of anyone go with the writes, as expired conversations do.
            await connection.execute("DELETE FROM kagent_idempotency WHERE expires_at <= now()")

    async def release(self, owner: str, key: str) -> None:
        async with self.store.connection() as connection:
            await connection.execute(
                "DELETE FROM kagent_idempotency WHERE namespace = %s AND owner = %s AND "
                "key = %s AND record IS NULL", (self.namespace, owner, key))


TASK_SCHEMA = """
CREATE TABLE IF NOT EXISTS kagent_tasks (
    namespace text NOT NULL,
    owner text NOT NULL,
    task_id text NOT NULL,
    context_id text NOT NULL,
    state integer NOT NULL,
    status_ns bigint NOT NULL,
    body bytea NOT NULL,
    updated_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (namespace, owner, task_id)
);
CREATE INDEX IF NOT EXISTS kagent_tasks_owner_updated
    ON kagent_tasks (namespace, owner, updated_at DESC);
CREATE TABLE IF NOT EXISTS kagent_idempotency (
    namespace text NOT NULL,
    owner text NOT NULL,
    key text NOT NULL,
    record text,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (namespace, owner, key)
);
CREATE INDEX IF NOT EXISTS kagent_idempotency_expires_at ON kagent_idempotency (expires_at);
"""


def open_task_store(sessions: SessionStore) -> DurableTaskStore:
    """The task store on the same backend (and connections) as the session memory."""
    from kagent.runtime.memory.postgres import PostgresSessionStore
    from kagent.runtime.memory.redis import RedisSessionStore

    if isinstance(sessions, RedisSessionStore):
        return DurableTaskStore(RedisTaskRecords(sessions))
    if isinstance(sessions, PostgresSessionStore):
        return DurableTaskStore(PostgresTaskRecords(sessions))
    return DurableTaskStore(InMemoryTaskRecords(sessions.health))


async def wait_for_settled(store: DurableTaskStore, message_id: str, *, poll: float = 0.25,
                           limit: float = 3600.0) -> Claim:
    """Wait until the record of ``message_id`` is settled, or its claim lapsed and is now
    ours; raises TimeoutError after ``limit`` seconds."""
    async with asyncio.timeout(limit):
        while True:
            claim = await store.claim(message_id)
            if claim.mine or claim.record is not None:
                return claim
            await asyncio.sleep(poll)
