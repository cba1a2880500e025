"""Budgets in the agent runtime: admit a request only while every Budget covering it has room,
then count what the request used against a counter every replica shares.

The arithmetic is pure (windows, limits, shares, messages) and unit-tested; the counters live in
Redis or PostgreSQL (the Budget's ``counter``), behind a thin shell with two operations:

- **reserve**, before the model is called: atomically check every window's counter and count the
  request (``requests``), plus an estimate of its tokens and cost when the Agent caps them per
  request (``limits.maxTokens``). A window already at its limit refuses the request.
- **settle**, after the request (answered or failed): add the tokens and cost the models really
  reported and give the estimate back.

So a request is refused once the counted spend reaches the limit, and the spend can pass the
limit only by what requests admitted before that moment use: the requests in flight. With
``limits.maxTokens`` on the Agent, the estimate makes even that impossible for tokens.

The same shell records each request's usage per hour, agent, model and caller beside the
counters: the ledger ``kagent usage`` reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import json
import logging
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import Counter, Gauge
from pydantic_ai import RunContext
from pydantic_ai.capabilities import AbstractCapability
from pydantic_ai.messages import ModelResponse

from kagent.agentclient import WorkflowClaim
from kagent.api.budget import Budget, BudgetCounterStore, BudgetLimit, BudgetWindow, LabelSelector
from kagent.api.memory import MemoryConfig
from kagent.api.pricing import MICROS, ModelPricing, cost_micros
from kagent.runtime.errors import RequestFailure
from kagent.runtime.metrics import LLM_TOKENS
from kagent.runtime.secrets import SecretResolver

logger = logging.getLogger("kagent.runtime.budget")

RESERVE_ATTEMPTS = 50
"""Optimistic transactions retried at most this often under contention, then the request fails."""
LEDGER_RETENTION = timedelta(days=40)
"""How long hourly usage is kept for ``kagent usage`` (a month's report and some)."""
MAX_LEDGER_HOURS = 24 * 40
MAX_CALLER_LABELS = 500
"""Distinct callers a runtime labels its usage metrics with; later ones count as ``other``."""
WINDOW_GRACE = timedelta(hours=2)
"""Counters outlive their window this long, so the controller can report a window just ended."""

BUDGET_USED_RATIO = Gauge(
    "agent_budget_used_ratio",
    "Share of a Budget's limit used in the current window (the largest of tokens, cost, requests).",
    ["namespace", "budget", "window"],
)
BUDGET_WARNINGS = Counter(
    "agent_budget_warnings_total",
    "Times a request took a Budget window past its warning share.",
    ["namespace", "budget", "window"],
)
BUDGET_REFUSALS = Counter(
    "agent_budget_refusals_total", "Requests refused because a Budget window was used up.",
    ["namespace", "budget", "window"],
)
USAGE_TOKENS = Counter(
    "agent_usage_tokens_total", "Model tokens by namespace, agent, model, caller and direction.",
    ["namespace", "agent", "model", "caller", "direction"],
)
USAGE_COST = Counter(
    "agent_usage_cost_dollars_total", "Model cost in US dollars by namespace, agent, model, caller.",
    ["namespace", "agent", "model", "caller"],
)
_labelled_callers: set[str] = set()


# --- pure arithmetic ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Amount:
    """Quantities a Budget counts. Cost is in millionths of a dollar (exact integer sums)."""

    tokens: int = 0
    cost_micros: int = 0
    requests: int = 0

    def __add__(self, other: Amount) -> Amount:
        return Amount(self.tokens + other.tokens, self.cost_micros + other.cost_micros,
                      self.requests + other.requests)


def window_bounds(window: BudgetWindow, now: datetime) -> tuple[datetime, datetime]:
    """The calendar window (UTC) holding ``now``: its start and the moment it resets."""
    now = now.astimezone(UTC)
    if window == "hour":
        start = now.replace(minute=0, second=0, microsecond=0)
        return start, start + timedelta(hours=1)
    if window == "day":
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return start, start + timedelta(days=1)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = start.replace(year=start.year + 1, month=1) if start.month == 12 else \
        start.replace(month=start.month + 1)
    return start, end


def selector_matches(selector: LabelSelector | None, labels: Mapping[str, str]) -> bool:
    """Kubernetes label-selector semantics (an empty selector matches everything)."""
    if selector is None:
        return True
    for key, value in (selector.match_labels or {}).items():
        if labels.get(key) != value:
            return False
    for requirement in selector.match_expressions or []:
        present = requirement.key in labels
        values = set(requirement.values or [])
        if requirement.operator == "In" and not (present and labels[requirement.key] in values):
            return False
        if requirement.operator == "NotIn" and present and labels[requirement.key] in values:
            return False
        if requirement.operator == "Exists" and not present:
            return False
        if requirement.operator == "DoesNotExist" and present:
            return False
    return True


def budget_covers_agent(budget: Budget, agent_labels: Mapping[str, str]) -> bool:
    """Whether ``budget`` counts every request to an agent with these labels.

    No selector: the whole namespace. An agentSelector: the agents it matches. A Budget with only
    a workflowSelector covers no agent directly: it counts the requests workflow steps make
    (:func:`budget_applies`)."""
    spec = budget.spec
    if spec.agent_selector is None and spec.workflow_selector is None:
        return True
    return spec.agent_selector is not None and selector_matches(spec.agent_selector, agent_labels)


def budget_may_apply(budget: Budget, agent_labels: Mapping[str, str]) -> bool:
    """Whether an agent with these labels must know ``budget``: it covers the agent, or it has a
    workflowSelector (a step of any Workflow may call any agent of the namespace)."""
    return budget.spec.workflow_selector is not None or budget_covers_agent(budget, agent_labels)


def budget_applies(budget: Budget, agent_labels: Mapping[str, str],
                   workflow: WorkflowClaim | None) -> bool:
    """Whether one request counts against ``budget``: it covers the agent, or the request is a
    step of a Workflow its workflowSelector matches."""
    if budget_covers_agent(budget, agent_labels):
        return True
    selector = budget.spec.workflow_selector
    return selector is not None and workflow is not None and selector_matches(selector, workflow.labels)


def limit_micros(limit: BudgetLimit) -> int | None:
    return None if limit.cost is None else round(limit.cost * MICROS)


def exhausted(used: Amount, limit: BudgetLimit, estimate: Amount = Amount()) -> str | None:
    """Which capped quantity leaves no room for one more request (``used`` includes what requests
    in flight reserved), or None. Requests are counted when admitted, so their cap is exact;
    tokens and cost are refused once the counted spend (plus this request's estimate, if it has
    one) reaches the limit."""
    if limit.requests is not None and used.requests >= limit.requests:
        return "requests"
    checks = (("tokens", used.tokens, estimate.tokens, limit.tokens),
              ("cost", used.cost_micros, estimate.cost_micros, limit_micros(limit)))
    for name, spent, wanted, cap in checks:
        if cap is not None and (spent >= cap or spent + wanted > cap):
            return name
    return None


def used_share(used: Amount, limit: BudgetLimit) -> float:
    """The largest share of any capped quantity (1.0 = at the limit)."""
    shares = [0.0]
    if limit.tokens:
        shares.append(used.tokens / limit.tokens)
    cost_cap = limit_micros(limit)
    if cost_cap:
        shares.append(used.cost_micros / cost_cap)
    if limit.requests:
        shares.append(used.requests / limit.requests)
    return max(shares)


def format_wait(seconds: float) -> str:
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days}d" if days else "", f"{hours}h" if hours else "",
             f"{minutes}m" if minutes else ""]
    return "".join(parts) or f"{secs}s"


def format_dollars(micros: int) -> str:
    return f"${micros / MICROS:,.4f}".rstrip("0").rstrip(".")


def refusal_message(budget: str, limit: BudgetLimit, dimension: str, used: Amount,
                    caller: str | None, resets_at: datetime, now: datetime) -> str:
    """What a refused caller reads: which Budget, which cap, how much is used, when it resets."""
    if dimension == "tokens":
        cap, spent = f"{limit.tokens:,} tokens", f"{used.tokens:,}"
    elif dimension == "cost":
        cap, spent = format_dollars(limit_micros(limit) or 0), format_dollars(used.cost_micros)
    else:
        cap, spent = f"{limit.requests:,} requests", f"{used.requests:,}"
    whom = f" for caller {caller}" if caller else ""
    return (f'Budget "{budget}" is used up: it allows {cap} per {limit.window}{whom} and '
            f"{spent} are used. It resets at {resets_at.strftime('%Y-%m-%dT%H:%M:%SZ')} "
            f"(in {format_wait((resets_at - now).total_seconds())}).")


def counter_key(namespace: str, budget: str, window: BudgetWindow, start: datetime,
                caller: str | None = None) -> str:
    """The counter of one window of one Budget (of one caller: hashed, so any identity fits)."""
    key = f"kagent:budget:{namespace}/{budget}:{window}:{start.strftime('%Y%m%dT%H')}"
    if caller is not None:
        key += ":caller:" + hashlib.sha256(caller.encode()).hexdigest()[:24]
    return key


def callers_key(namespace: str, budget: str, window: BudgetWindow, start: datetime) -> str:
    """The set of callers counted in one window of a perCaller Budget (for its status)."""
    return counter_key(namespace, budget, window, start) + ":callers"


def hour_start(moment: datetime) -> datetime:
    return window_bounds("hour", moment)[0]


def ledger_hours(since: datetime, until: datetime) -> list[datetime]:
    """The hour buckets from ``since`` to ``until`` (bounded to :data:`MAX_LEDGER_HOURS`)."""
    first, last = hour_start(since), hour_start(until)
    count = min(int((last - first).total_seconds() // 3600) + 1, MAX_LEDGER_HOURS)
    return [last - timedelta(hours=i) for i in reversed(range(max(count, 0)))]


@dataclass(frozen=True)
class UsageRow:
    """One ledger entry: an hour's usage of one agent, model and caller."""

    namespace: str
    hour: datetime
    agent: str
    model: str
    caller: str
    input_tokens: int = 0
    output_tokens: int = 0
    cost_micros: int = 0
    requests: int = 0


# --- the counter stores ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """One window of one Budget a request is counted against."""

    budget: str
    limit: BudgetLimit
    key: str
    ends: datetime
    caller: str | None = None
    callers_key: str | None = None

    @property
    def ttl(self) -> int:
        return max(60, int((self.ends - datetime.now(UTC) + WINDOW_GRACE).total_seconds()))


@dataclass(frozen=True)
class Refusal:
    claim: Claim
    dimension: str
    used: Amount


class CounterStoreError(Exception):
    """The counter store cannot be reached or did not answer in time."""


class CounterStore(ABC):
    """The shared counters of Budgets in one Redis or PostgreSQL server."""

    @abstractmethod
    async def reserve(self, claims: Sequence[Claim], estimate: Amount) -> Refusal | None:
        """Atomically: refuse if any claim's window is used up, else count one request (and the
        estimate as reserved) in every claim's window."""

    @abstractmethod
    async def settle(self, claims: Sequence[Claim], estimate: Amount, spent: Amount) -> list[Amount]:
        """Add ``spent`` (tokens and cost), release ``estimate``; the windows' totals after."""

    @abstractmethod
    async def read(self, keys: Sequence[str]) -> list[Amount]:
        """Counted spend (reservations included) of each key; zero for unknown keys."""

    @abstractmethod
    async def callers(self, key: str) -> list[str]:
        """Identities counted in one window of a perCaller Budget."""

    @abstractmethod
    async def record_usage(self, rows: Sequence[UsageRow]) -> None:
        """Add rows to the hourly ledger."""

    @abstractmethod
    async def usage(self, namespace: str, since: datetime, until: datetime) -> list[UsageRow]:
        """Ledger rows of ``namespace`` in the hours from ``since`` to ``until``."""

    @abstractmethod
    async def close(self) -> None: ...


def _amount(raw: Mapping[Any, Any]) -> Amount:
    """Spend counted in a Redis hash (reserved amounts included)."""
    def get(name: str) -> int:
        value = raw.get(name.encode(), raw.get(name, 0))
        return int(value or 0)

    return Amount(get("tokens") + get("rtokens"), get("cost") + get("rcost"), get("requests"))


def _ledger_key(namespace: str, hour: datetime) -> str:
    return f"kagent:usage:{namespace}:{hour.strftime('%Y%m%dT%H')}"


LEDGER_FIELDS = ("input_tokens", "output_tokens", "cost_micros", "requests")


class RedisCounterStore(CounterStore):
    """Counters as Redis hashes (``tokens``, ``cost``, ``requests``, reserved ``rtokens`` and
    ``rcost``) that expire after their window; reserve is an optimistic WATCH/MULTI transaction."""

    def __init__(self, url: str, password: str | None = None) -> None:
        import redis.asyncio as redis

        self._client: Any = redis.Redis.from_url(
            url, password=password, socket_connect_timeout=5, socket_timeout=10
        )

    @contextlib.asynccontextmanager
    async def _errors(self) -> AsyncIterator[None]:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        try:
            yield
        except (RedisConnectionError, RedisTimeoutError, OSError) as error:
            raise CounterStoreError(f"redis: {error}") from None

    async def reserve(self, claims: Sequence[Claim], estimate: Amount) -> Refusal | None:
        from redis.exceptions import WatchError

        keys = [c.key for c in claims]
        async with self._errors():
            for _ in range(RESERVE_ATTEMPTS):
                async with self._client.pipeline(transaction=True) as pipe:
                    await pipe.watch(*keys)
                    for claim in claims:
                        used = _amount(await pipe.hgetall(claim.key))
                        dimension = exhausted(used, claim.limit, estimate)
                        if dimension is not None:
                            await pipe.unwatch()
                            return Refusal(claim, dimension, used)
                    pipe.multi()
                    for claim in claims:
                        pipe.hincrby(claim.key, "requests", 1)
                        if estimate.tokens:
                            pipe.hincrby(claim.key, "rtokens", estimate.tokens)
                        if estimate.cost_micros:
                            pipe.hincrby(claim.key, "rcost", estimate.cost_micros)
                        pipe.expire(claim.key, claim.ttl)
                        if claim.callers_key and claim.caller:
                            pipe.sadd(claim.callers_key, claim.caller)
                            pipe.expire(claim.callers_key, claim.ttl)
                    try:
                        await pipe.execute()
                    except WatchError:
                        await asyncio.sleep(0.001)
                        continue
                    return None
        raise CounterStoreError(f"redis: counters too contended ({RESERVE_ATTEMPTS} attempts)")

    async def settle(self, claims: Sequence[Claim], estimate: Amount, spent: Amount) -> list[Amount]:
        async with self._errors(), self._client.pipeline(transaction=True) as pipe:
            for claim in claims:
                pipe.hincrby(claim.key, "tokens", spent.tokens)
                pipe.hincrby(claim.key, "cost", spent.cost_micros)
                if estimate.tokens:
                    pipe.hincrby(claim.key, "rtokens", -estimate.tokens)
                if estimate.cost_micros:
                    pipe.hincrby(claim.key, "rcost", -estimate.cost_micros)
                pipe.expire(claim.key, claim.ttl)
                pipe.hgetall(claim.key)
            results = await pipe.execute()
        per_claim = len(results) // max(len(claims), 1)
        return [_amount(results[(i + 1) * per_claim - 1]) for i in range(len(claims))]

    async def read(self, keys: Sequence[str]) -> list[Amount]:
        async with self._errors(), self._client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hgetall(key)
            return [_amount(raw) for raw in await pipe.execute()]

    async def callers(self, key: str) -> list[str]:
        async with self._errors():
            members = await self._client.smembers(key)
        return sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members)

    async def record_usage(self, rows: Sequence[UsageRow]) -> None:
        ttl = int(LEDGER_RETENTION.total_seconds())
        async with self._errors(), self._client.pipeline(transaction=True) as pipe:
            for row in rows:
                key = _ledger_key(row.namespace, row.hour)
                for name in LEDGER_FIELDS:
                    value = getattr(row, name)
                    if value:
                        pipe.hincrby(key, json.dumps([row.agent, row.model, row.caller, name]),
                                      value)
                pipe.expire(key, ttl)
            await pipe.execute()

    async def usage(self, namespace: str, since: datetime, until: datetime) -> list[UsageRow]:
        hours = ledger_hours(since, until)
        async with self._errors(), self._client.pipeline(transaction=False) as pipe:
            for hour in hours:
                pipe.hgetall(_ledger_key(namespace, hour))
            answers = await pipe.execute()
        rows: dict[tuple[datetime, str, str, str], dict[str, int]] = {}
        for hour, raw in zip(hours, answers, strict=True):
            for field_name, value in raw.items():
                agent, model, caller, name = json.loads(field_name)
                rows.setdefault((hour, agent, model, caller), {})[name] = int(value)
        return [UsageRow(namespace, hour, agent, model, caller, **values)
                for (hour, agent, model, caller), values in rows.items()]

    async def close(self) -> None:
        await self._client.aclose()


POSTGRES_SCHEMA = """
CREATE TABLE IF NOT EXISTS kagent_budget_counters (
    key text PRIMARY KEY,
    tokens bigint NOT NULL DEFAULT 0,
    cost bigint NOT NULL DEFAULT 0,
    requests bigint NOT NULL DEFAULT 0,
    rtokens bigint NOT NULL DEFAULT 0,
    rcost bigint NOT NULL DEFAULT 0,
    expires_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS kagent_budget_callers (
    key text NOT NULL,
    caller text NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (key, caller)
);
CREATE TABLE IF NOT EXISTS kagent_usage (
    namespace text NOT NULL,
    hour timestamptz NOT NULL,
    agent text NOT NULL,
    model text NOT NULL,
    caller text NOT NULL,
    input_tokens bigint NOT NULL DEFAULT 0,
    output_tokens bigint NOT NULL DEFAULT 0,
    cost_micros bigint NOT NULL DEFAULT 0,
    requests bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (namespace, hour, agent, model, caller)
);
"""


class PostgresCounterStore(CounterStore):
    """Counters as rows locked for the reserve transaction (``SELECT … FOR UPDATE`` in key
    order, so two replicas never deadlock); connections pooled by the session store's code."""

    def __init__(self, conninfo: str, password: str | None = None) -> None:
        from kagent.runtime.memory.postgres import PostgresSessionStore

        # Only its connection pool is used (the memory backends' connection code, one home).
        self._pool = PostgresSessionStore(conninfo, namespace="kagent-budgets", ttl=0,
                                          max_history=1, password=password)
        self._schema_ready = False

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        import psycopg

        try:
            async with self._pool._raw_connection() as connection:
                if not self._schema_ready:
                    async with connection.transaction():
                        await connection.execute(
                            "SELECT pg_advisory_xact_lock(hashtext('kagent_budget_counters'))")
                        await connection.execute(POSTGRES_SCHEMA)
                    self._schema_ready = True
                yield connection
        except (psycopg.OperationalError, OSError) as error:
            raise CounterStoreError(f"postgres: {error}") from None

    async def reserve(self, claims: Sequence[Claim], estimate: Amount) -> Refusal | None:
        ordered = sorted(claims, key=lambda c: c.key)
        async with self._connection() as connection, connection.transaction():
            for claim in ordered:
                await connection.execute(
                    "INSERT INTO kagent_budget_counters (key, expires_at) VALUES (%s, %s) "
                    "ON CONFLICT (key) DO NOTHING", (claim.key, claim.ends + WINDOW_GRACE))
            cursor = await connection.execute(
                "SELECT key, tokens + rtokens, cost + rcost, requests FROM kagent_budget_counters "
                "WHERE key = ANY(%s) ORDER BY key FOR UPDATE", ([c.key for c in ordered],))
            used = {row[0]: Amount(int(row[1]), int(row[2]), int(row[3]))
                    for row in await cursor.fetchall()}
            for claim in claims:
                dimension = exhausted(used.get(claim.key, Amount()), claim.limit, estimate)
                if dimension is not None:
                    return Refusal(claim, dimension, used.get(claim.key, Amount()))
            await connection.execute(
                "UPDATE kagent_budget_counters SET requests = requests + 1, "
                "rtokens = rtokens + %s, rcost = rcost + %s WHERE key = ANY(%s)",
                (estimate.tokens, estimate.cost_micros, [c.key for c in ordered]))
            for claim in ordered:
                if claim.callers_key and claim.caller:
                    await connection.execute(
                        "INSERT INTO kagent_budget_callers (key, caller, expires_at) "
                        "VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                        (claim.callers_key, claim.caller, claim.ends + WINDOW_GRACE))
            await connection.execute("DELETE FROM kagent_budget_counters WHERE expires_at < now()")
            await connection.execute("DELETE FROM kagent_budget_callers WHERE expires_at < now()")
        return None

    async def settle(self, claims: Sequence[Claim], estimate: Amount, spent: Amount) -> list[Amount]:
        keys = sorted(c.key for c in claims)
        async with self._connection() as connection, connection.transaction():
            cursor = await connection.execute(
                "UPDATE kagent_budget_counters SET tokens = tokens + %s, cost = cost + %s, "
                "rtokens = rtokens - %s, rcost = rcost - %s WHERE key = ANY(%s) "
                "RETURNING key, tokens + rtokens, cost + rcost, requests",
                (spent.tokens, spent.cost_micros, estimate.tokens, estimate.cost_micros, keys))
            after = {row[0]: Amount(int(row[1]), int(row[2]), int(row[3]))
                     for row in await cursor.fetchall()}
        return [after.get(c.key, Amount()) for c in claims]

    async def read(self, keys: Sequence[str]) -> list[Amount]:
        async with self._connection() as connection:
            cursor = await connection.execute(
                "SELECT key, tokens + rtokens, cost + rcost, requests FROM kagent_budget_counters "
                "WHERE key = ANY(%s)", (list(keys),))
            found = {row[0]: Amount(int(row[1]), int(row[2]), int(row[3]))
                     for row in await cursor.fetchall()}
        return [found.get(k, Amount()) for k in keys]

    async def callers(self, key: str) -> list[str]:
        async with self._connection() as connection:
            cursor = await connection.execute(
                "SELECT caller FROM kagent_budget_callers WHERE key = %s ORDER BY caller", (key,))
            return [row[0] for row in await cursor.fetchall()]

    async def record_usage(self, rows: Sequence[UsageRow]) -> None:
        async with self._connection() as connection, connection.transaction():
            for row in rows:
                await connection.execute(
                    "INSERT INTO kagent_usage (namespace, hour, agent, model, caller, input_tokens,"
                    " output_tokens, cost_micros, requests) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s) "
                    "ON CONFLICT (namespace, hour, agent, model, caller) DO UPDATE SET "
                    "input_tokens = kagent_usage.input_tokens + EXCLUDED.input_tokens, "
                    "output_tokens = kagent_usage.output_tokens + EXCLUDED.output_tokens, "
                    "cost_micros = kagent_usage.cost_micros + EXCLUDED.cost_micros, "
                    "requests = kagent_usage.requests + EXCLUDED.requests",
                    (row.namespace, row.hour, row.agent, row.model, row.caller, row.input_tokens,
                     row.output_tokens, row.cost_micros, row.requests))
            await connection.execute("DELETE FROM kagent_usage WHERE hour < %s",
                                     (datetime.now(UTC) - LEDGER_RETENTION,))

    async def usage(self, namespace: str, since: datetime, until: datetime) -> list[UsageRow]:
        async with self._connection() as connection:
            cursor = await connection.execute(
                "SELECT hour, agent, model, caller, input_tokens, output_tokens, cost_micros, "
                "requests FROM kagent_usage WHERE namespace = %s AND hour >= %s AND hour <= %s",
                (namespace, hour_start(since), until))
            return [UsageRow(namespace, *row) for row in await cursor.fetchall()]

    async def close(self) -> None:
        await self._pool.close()


def store_identity(counter: BudgetCounterStore) -> tuple[str, str]:
    """(type, address): Budgets naming the same server share one connection."""
    return counter.type, connection_address(counter)


def connection_address(counter: BudgetCounterStore) -> str:
    from kagent.runtime.memory.factory import postgres_conninfo, redis_url

    config = MemoryConfig(host=counter.host, port=counter.port, url=counter.url,
                          database=counter.database)
    return redis_url(config) if counter.type == "redis" else postgres_conninfo(config)


def open_counter_store(counter: BudgetCounterStore, password: str | None) -> CounterStore:
    """The counter store a Budget declares (not yet connected; connections open on first use)."""
    address = connection_address(counter)
    if counter.type == "redis":
        return RedisCounterStore(address, password)
    return PostgresCounterStore(address, password)


# --- metering model responses ---------------------------------------------------------------------


@dataclass
class ModelUsage:
    input_tokens: int = 0
    output_tokens: int = 0
    cost_micros: int = 0


@dataclass
class Meter:
    """What one request's model calls used, by model (``provider/name``)."""

    by_model: dict[str, ModelUsage] = field(default_factory=dict)

    def add(self, model: str, price: ModelPricing | None, input_tokens: int,
            output_tokens: int) -> None:
        entry = self.by_model.setdefault(model, ModelUsage())
        entry.input_tokens += input_tokens
        entry.output_tokens += output_tokens
        entry.cost_micros += cost_micros(price, input_tokens, output_tokens)

    def total(self) -> Amount:
        return Amount(
            tokens=sum(u.input_tokens + u.output_tokens for u in self.by_model.values()),
            cost_micros=sum(u.cost_micros for u in self.by_model.values()),
        )


_meter: contextvars.ContextVar[Meter | None] = contextvars.ContextVar("kagent_meter", default=None)


def start_metering() -> Meter:
    """A fresh meter for the request running in this task (its model calls add to it)."""
    meter = Meter()
    _meter.set(meter)
    return meter


@dataclass
class UsageMeter(AbstractCapability[Any]):
    """Adds every model response's tokens (and their price) to the current request's meter,
    under the model that answered: ``model_name`` unless ``answered`` names one of the
    ``fallbacks`` (``provider/name`` -> its price), whose own price then applies."""

    model_name: str
    price: ModelPricing | None
    fallbacks: dict[str, ModelPricing | None] = field(default_factory=dict)
    answered: Callable[[], str | None] = lambda: None

    def record(self, response: ModelResponse) -> None:
        """Add one model response (the plain turn calls this without the agent graph)."""
        meter = _meter.get()
        if meter is not None:
            usage = response.usage
            label = self.answered()
            model, price = ((label, self.fallbacks[label]) if label in self.fallbacks
                            else (self.model_name, self.price))
            meter.add(model, price, usage.input_tokens or 0, usage.output_tokens or 0)

    async def after_model_request(
        self, ctx: RunContext[Any], *, request_context: Any, response: ModelResponse
    ) -> ModelResponse:
        self.record(response)
        return response


# --- enforcement ----------------------------------------------------------------------------------


class BudgetRefused(Exception):
    """A request the Budgets do not admit; ``failure`` is what the caller is told."""

    def __init__(self, failure: RequestFailure) -> None:
        super().__init__(failure.message)
        self.failure = failure


@dataclass
class Admission:
    """The windows one admitted request was counted against, per store."""

    caller: str
    estimate: Amount
    claims: dict[tuple[str, str], list[Claim]]
    started: datetime


def _caller_label(caller: str) -> str:
    if caller in _labelled_callers:
        return caller
    if len(_labelled_callers) >= MAX_CALLER_LABELS:
        return "other"
    _labelled_callers.add(caller)
    return caller


class BudgetEnforcer:
    """The Budgets covering one agent, enforced on each of its requests."""

    def __init__(self, budgets: Iterable[Budget], *, namespace: str, agent: str,
                 secrets: SecretResolver, estimate: Amount = Amount(),
                 agent_labels: Mapping[str, str] | None = None) -> None:
        self.namespace = namespace
        self.agent = agent
        self.agent_labels = dict(agent_labels or {})
        self.budgets = list(budgets)
        self.estimate = estimate
        self.secrets = secrets
        self._stores: dict[tuple[str, str], CounterStore] = {}
        for budget in self.budgets:
            identity = store_identity(budget.spec.counter)
            if identity not in self._stores:
                password = secrets.get_optional(budget.spec.counter.secret_ref)
                self._stores[identity] = open_counter_store(budget.spec.counter, password)

    @property
    def enabled(self) -> bool:
        return bool(self.budgets)

    def claims(self, caller: str, now: datetime,
               workflow: WorkflowClaim | None = None) -> dict[tuple[str, str], list[Claim]]:
        """The windows one request counts against: every Budget covering the agent, and those
        whose workflowSelector matches the Workflow the request is a step of."""
        grouped: dict[tuple[str, str], list[Claim]] = {}
        for budget in self.budgets:
            if not budget_applies(budget, self.agent_labels, workflow):
                continue
            name = str(budget.metadata.name)
            per_caller = budget.spec.per_caller
            for limit in budget.spec.limits:
                start, end = window_bounds(limit.window, now)
                claim = Claim(
                    budget=name, limit=limit, ends=end,
                    key=counter_key(self.namespace, name, limit.window, start,
                                    caller if per_caller else None),
                    caller=caller if per_caller else None,
                    callers_key=(callers_key(self.namespace, name, limit.window, start)
                                 if per_caller else None),
                )
                grouped.setdefault(store_identity(budget.spec.counter), []).append(claim)
        return grouped

    async def admit(self, caller: str, now: datetime | None = None,
                    workflow: WorkflowClaim | None = None) -> Admission:
        """Reserve the request in every covering window, or raise :class:`BudgetRefused`."""
        now = now or datetime.now(UTC)
        grouped = self.claims(caller, now, workflow)
        reserved: list[tuple[tuple[str, str], list[Claim]]] = []
        for identity, claims in grouped.items():
            try:
                refusal = await self._stores[identity].reserve(claims, self.estimate)
            except CounterStoreError as error:
                await self._release(reserved)
                raise BudgetRefused(RequestFailure(
                    "budget_unavailable",
                    self.secrets.redact(
                        f"the counter store of Budget \"{claims[0].budget}\" did not answer, so "
                        f"the request was not admitted: {error}"),
                    503, "error", retryable=True,
                )) from None
            if refusal is not None:
                await self._release(reserved)
                claim = refusal.claim
                BUDGET_REFUSALS.labels(self.namespace, claim.budget, claim.limit.window).inc()
                message = refusal_message(claim.budget, claim.limit, refusal.dimension,
                                          refusal.used, claim.caller, claim.ends, now)
                raise BudgetRefused(RequestFailure(
                    "budget_exceeded", message, 429, "limit",
                    retry_after=(claim.ends - now).total_seconds(),
                ))
            reserved.append((identity, claims))
        return Admission(caller=caller, estimate=self.estimate, claims=grouped, started=now)

    async def _release(self, reserved: list[tuple[tuple[str, str], list[Claim]]]) -> None:
        """Give back what a refused request had already reserved in other stores: its request
        count stays (it was attempted), its estimate does not."""
        for identity, claims in reserved:
            with contextlib.suppress(CounterStoreError):
                await self._stores[identity].settle(claims, self.estimate, Amount())

    def count_usage(self, meter: Meter, caller: str) -> None:
        """The request's tokens and cost in the usage metrics and the model token metric.

        Synchronous, and called in the same step as the request counter: a scrape sees a
        request together with what it used, or neither (a canary's tokens and cost per request
        are ratios of these counters over a window)."""
        caller_label = _caller_label(caller)
        for model, used in meter.by_model.items():
            for direction, tokens in (("input", used.input_tokens), ("output", used.output_tokens)):
                if tokens:
                    USAGE_TOKENS.labels(self.namespace, self.agent, model, caller_label,
                                        direction).inc(tokens)
                    LLM_TOKENS.labels(agent=self.agent, model=model, direction=direction).inc(tokens)
            if used.cost_micros:
                USAGE_COST.labels(self.namespace, self.agent, model, caller_label).inc(
                    used.cost_micros / MICROS)

    async def settle(self, admission: Admission | None, meter: Meter, caller: str) -> None:
        """Count what the request used in its budgets and the ledger."""
        if admission is None:
            return
        spent = meter.total()
        hour = hour_start(admission.started)
        rows = [UsageRow(self.namespace, hour, self.agent, model, caller, u.input_tokens,
                         u.output_tokens, u.cost_micros, 0) for model, u in meter.by_model.items()]
        if rows:
            rows[0] = UsageRow(**{**rows[0].__dict__, "requests": 1})
        else:
            rows = [UsageRow(self.namespace, hour, self.agent, "-", caller, requests=1)]
        by_budget = {str(b.metadata.name): b for b in self.budgets}
        for identity, claims in admission.claims.items():
            store = self._stores[identity]
            try:
                after = await store.settle(claims, admission.estimate, spent)
                await store.record_usage(rows)
            except CounterStoreError as error:
                logger.warning("could not count a request's usage: %s",
                               self.secrets.redact(str(error)))
                continue
            for claim, total in zip(claims, after, strict=True):
                share = used_share(total, claim.limit)
                before = used_share(Amount(max(0, total.tokens - spent.tokens),
                                           max(0, total.cost_micros - spent.cost_micros),
                                           total.requests), claim.limit)
                BUDGET_USED_RATIO.labels(self.namespace, claim.budget, claim.limit.window).set(share)
                warn = by_budget[claim.budget].spec.warning_percent / 100
                if before < warn <= share:
                    BUDGET_WARNINGS.labels(self.namespace, claim.budget, claim.limit.window).inc()
                    logger.warning('Budget "%s" passed %d%% of its %s limit', claim.budget,
                                   round(warn * 100), claim.limit.window)

    async def close(self) -> None:
        for store in self._stores.values():
            try:
                await store.close()
            except Exception as error:  # noqa: BLE001 - shutting down: the rest still close
                logger.warning("closing a Budget counter store failed: %s", error)


def budget_enforcer(config: Any) -> BudgetEnforcer:
    """The enforcer for a :class:`~kagent.runtime.config.RuntimeConfig`: its Budgets, and a
    per-request estimate when the Agent caps tokens per request (``limits.maxTokens``)."""
    from kagent.api.pricing import price_for

    spec = config.agent.spec
    max_tokens = spec.limits.max_tokens if spec.limits is not None else None
    estimate = Amount()
    if max_tokens:
        price = price_for(spec.model.provider, spec.model.name, spec.model.pricing)
        dearest = max(price.input_per_million, price.output_per_million) if price else 0.0
        estimate = Amount(tokens=max_tokens, cost_micros=round(dearest * max_tokens))
    return BudgetEnforcer(config.budgets, namespace=config.namespace, agent=config.name,
                          secrets=config.secrets, estimate=estimate,
                          agent_labels=config.agent.metadata.labels or {})
