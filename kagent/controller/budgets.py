"""Budget reconcile: read the shared counters the agent runtimes keep, write consumption per
window into the Budget's status, and say (condition → Event) when a window passes its warning
share or its limit.

The runtimes enforce; the controller only reports. It polls the counter store every
:data:`POLL_SECONDS` (counters change with every request, not with any watch event) and writes the
status only when it changed. The status computation is pure (:func:`budget_status`).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from lightkube import AsyncClient
from lightkube.resources.core_v1 import Secret

from kagent.api import Budget
from kagent.api.budget import BudgetLimit, BudgetStatus, BudgetWindowStatus
from kagent.api.manifests import ManifestError
from kagent.api.pricing import MICROS
from kagent.controller.cache import ControllerCache
from kagent.controller.resolve import parse_cached
from kagent.controller.status import read_status, status_changed
from kagent.kube.conditions import now_rfc3339, set_condition, transitions
from kagent.kube.reconcile import ObjectKey, Result
from kagent.runtime.budget import (
    Amount,
    CounterStore,
    CounterStoreError,
    callers_key,
    counter_key,
    format_dollars,
    open_counter_store,
    store_identity,
    used_share,
    window_bounds,
)

log = logging.getLogger("kagent.controller.budgets")

POLL_SECONDS = 15.0
"""How often the counters are read into status (and the warning checked)."""
TOP_CALLERS = 10
"""Callers listed per window in a perCaller Budget's status (those using most)."""
MAX_CALLERS_READ = 1000
"""Callers read per window at most (a bound on one reconcile's work)."""
WITHIN = "WithinBudget"
REACHABLE = "CounterReachable"


@dataclass(frozen=True)
class Reading:
    """One window's counted spend (of one caller, for perCaller Budgets)."""

    limit: BudgetLimit
    start: datetime
    ends: datetime
    used: Amount
    caller: str | None = None


def _describe(reading: Reading) -> str:
    limit, used = reading.limit, reading.used
    parts = []
    if limit.tokens:
        parts.append(f"{used.tokens:,} of {limit.tokens:,} tokens")
    if limit.cost:
        parts.append(f"{format_dollars(used.cost_micros)} of "
                     f"{format_dollars(round(limit.cost * MICROS))}")
    if limit.requests:
        parts.append(f"{used.requests:,} of {limit.requests:,} requests")
    whom = f" by caller {reading.caller}" if reading.caller else ""
    return (f"{', '.join(parts)} used this {limit.window}{whom} "
            f"({int(used_share(used, limit) * 100)}%); resets at "
            f"{reading.ends.strftime('%Y-%m-%dT%H:%M:%SZ')}")


def budget_status(previous: BudgetStatus, budget: Budget, readings: list[Reading] | None,
                  error: str | None, now: str) -> BudgetStatus:
    """The status for these readings (None: the counter store could not be read)."""
    generation = budget.metadata.generation
    conditions = previous.conditions
    if readings is None:
        conditions = set_condition(conditions, REACHABLE, False, "CounterUnreachable",
                                   error or "the counter store did not answer", generation, now)
        return BudgetStatus(observed_generation=generation, conditions=conditions,
                            windows=previous.windows, updated_at=previous.updated_at)
    conditions = set_condition(conditions, REACHABLE, True, "CounterRead",
                               "the counter store answers", generation, now)
    ranked = sorted(readings, key=lambda r: used_share(r.used, r.limit), reverse=True)
    warning = budget.spec.warning_percent / 100
    worst = ranked[0] if ranked else None
    share = used_share(worst.used, worst.limit) if worst else 0.0
    if worst is not None and share >= 1.0:
        conditions = set_condition(conditions, WITHIN, False, "LimitReached",
                                   "limit reached, new requests are refused: " + _describe(worst),
                                   generation, now)
    elif worst is not None and share >= warning:
        conditions = set_condition(conditions, WITHIN, False, "WarningReached",
                                   f"past the warning share of {budget.spec.warning_percent}%: "
                                   + _describe(worst), generation, now)
    else:
        conditions = set_condition(conditions, WITHIN, True, "UnderWarning",
                                   f"every window is under {budget.spec.warning_percent}% of its "
                                   "limit", generation, now)
    windows = [
        BudgetWindowStatus(
            window=r.limit.window, caller=r.caller,
            start=r.start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            resets_at=r.ends.strftime("%Y-%m-%dT%H:%M:%SZ"),
            tokens=r.used.tokens, cost=round(r.used.cost_micros / MICROS, 6),
            requests=r.used.requests, used_percent=int(used_share(r.used, r.limit) * 100),
        )
        for r in readings
    ]
    status = BudgetStatus(observed_generation=generation, conditions=conditions, windows=windows,
                          updated_at=previous.updated_at)
    if status_changed(previous, status):
        status.updated_at = now
    return status


class BudgetReconciler:
    """Reports Budgets; holds one counter-store connection per store (and password)."""

    def __init__(self, client: AsyncClient, cache: ControllerCache) -> None:
        self.client = client
        self.cache = cache
        self._stores: dict[tuple[str, str, str], CounterStore] = {}

    async def reconcile(self, key: ObjectKey) -> Result:
        _, namespace, name = key
        raw = self.cache.get("Budget", namespace, name)
        if raw is None or raw["metadata"].get("deletionTimestamp"):
            return Result.forget()
        try:
            budget = parse_cached(raw)
        except ManifestError as error:
            log.warning("Budget %s/%s does not parse: %s", namespace, name, error)
            return Result(dependencies=frozenset())
        assert isinstance(budget, Budget)
        previous = read_status(BudgetStatus, raw.get("status"))
        readings: list[Reading] | None
        error = None
        try:
            store = await self._store(budget)
            readings = await read_windows(store, budget, datetime.now(UTC))
        except (CounterStoreError, OSError) as problem:
            readings, error = None, f"the counter store did not answer: {problem}"
        except LookupError as problem:
            readings, error = None, str(problem)
        status = budget_status(previous, budget, readings, error, now_rfc3339())
        if status_changed(previous, status):
            await self.cache.write_status(self.client, raw, status)
        dependencies = frozenset()
        secret = budget.spec.counter.secret_ref
        if secret is not None:
            dependencies = frozenset({("Secret", namespace, secret.name)})
        return Result(requeue_after=POLL_SECONDS, dependencies=dependencies,
                      transitions=transitions(previous.conditions, status.conditions))

    async def _store(self, budget: Budget) -> CounterStore:
        counter = budget.spec.counter
        password = None
        if counter.secret_ref is not None:
            secret = await self.client.get(Secret, counter.secret_ref.name,
                                           namespace=budget.metadata.namespace)
            data = (secret.data or {}).get(counter.secret_ref.key)
            if data is None:
                raise LookupError(f'key "{counter.secret_ref.key}" not found in Secret '
                                  f'"{counter.secret_ref.name}" (counter.secretRef)')
            import base64

            password = base64.b64decode(data).decode()
        kind, address = store_identity(counter)
        digest = hashlib.sha256((password or "").encode()).hexdigest()
        key = (kind, address, digest)
        if key not in self._stores:
            self._stores[key] = open_counter_store(counter, password)
        return self._stores[key]

    async def close(self) -> None:
        for store in self._stores.values():
            await store.close()
        self._stores.clear()


async def read_windows(store: CounterStore, budget: Budget, now: datetime) -> list[Reading]:
    """The current window of every limit (per caller, the top users, for perCaller Budgets)."""
    namespace, name = str(budget.metadata.namespace), str(budget.metadata.name)
    readings: list[Reading] = []
    for limit in budget.spec.limits:
        start, ends = window_bounds(limit.window, now)
        if not budget.spec.per_caller:
            [used] = await store.read([counter_key(namespace, name, limit.window, start)])
            readings.append(Reading(limit, start, ends, used))
            continue
        callers = (await store.callers(callers_key(namespace, name, limit.window, start)))
        callers = callers[:MAX_CALLERS_READ]
        amounts = await store.read([counter_key(namespace, name, limit.window, start, c)
                                    for c in callers])
        per_caller = sorted(zip(callers, amounts, strict=True),
                            key=lambda pair: used_share(pair[1], limit), reverse=True)
        readings.extend(Reading(limit, start, ends, used, caller)
                        for caller, used in per_caller[:TOP_CALLERS])
    return readings
