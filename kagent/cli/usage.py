"""``kagent usage``: model tokens, requests and cost of a namespace, by agent, caller or model —
for chargeback.

Source: the usage ledger the agent runtimes keep beside their Budget counters (hourly rows per
agent, model and caller, in the Redis or PostgreSQL each Budget of the namespace declares; kept
40 days). So the report covers the agents a Budget covers, and the machine running it must reach
those servers (in a cluster, e.g. through ``kubectl port-forward``, then ``--counter-url``).
The runtimes' Prometheus metrics (``agent_usage_tokens_total``, ``agent_usage_cost_dollars_total``)
carry the same numbers for dashboards.
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from kagent.cli.common import (
    EXIT_USAGE,
    KubeconfigOption,
    NamespaceOption,
    api_failure,
    client,
    console,
    err_console,
    fail,
    kagent_resource,
    resolve_namespace,
)
from kagent.cli.tables import print_stripped

MAX_SINCE = timedelta(days=40)
_SINCE = re.compile(r"^(\d+)(m|h|d)$")


class By(str, Enum):
    agent = "agent"
    caller = "caller"
    model = "model"


@dataclass
class UsageTotal:
    key: str
    input_tokens: int = 0
    output_tokens: int = 0
    requests: int = 0
    cost_micros: int = 0

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


def parse_since(text: str) -> timedelta:
    """``30m``, ``24h``, ``7d`` (at most 40 days: how long the ledger keeps rows)."""
    match = _SINCE.fullmatch(text.strip())
    if not match:
        raise ValueError(f"--since {text!r}: use a number and m, h or d, e.g. 24h or 7d")
    amount, unit = int(match.group(1)), match.group(2)
    span = {"m": timedelta(minutes=amount), "h": timedelta(hours=amount),
            "d": timedelta(days=amount)}[unit]
    if span <= timedelta(0) or span > MAX_SINCE:
        raise ValueError(f"--since {text!r}: must be more than 0 and at most 40d")
    return span


def merge_ledgers(ledgers: Iterable[Iterable[Any]]) -> list[Any]:
    """Rows from several counter stores: a request covered by Budgets in two stores is recorded
    in both, so each (hour, agent, model, caller) counts once — its largest record."""
    best: dict[tuple[Any, ...], Any] = {}
    for rows in ledgers:
        for row in rows:
            key = (row.hour, row.agent, row.model, row.caller)
            if key not in best or row.input_tokens + row.output_tokens + row.requests > \
                    best[key].input_tokens + best[key].output_tokens + best[key].requests:
                best[key] = row
    return list(best.values())


def usage_totals(rows: Iterable[Any], by: By) -> list[UsageTotal]:
    """Rows summed by agent, caller or model; most tokens first."""
    totals: dict[str, UsageTotal] = {}
    for row in rows:
        key = str(getattr(row, by.value))
        total = totals.setdefault(key, UsageTotal(key))
        total.input_tokens += row.input_tokens
        total.output_tokens += row.output_tokens
        total.requests += row.requests
        total.cost_micros += row.cost_micros
    return sorted(totals.values(), key=lambda t: (-t.tokens, t.key))


def _dollars(micros: int) -> str:
    """Cents and above to four decimals; below a cent to the micro-dollar the ledger keeps, so a
    cheap model's spend does not show as $0.0000."""
    dollars = micros / 1_000_000
    return f"${dollars:,.4f}" if micros == 0 or micros >= 10_000 else f"${dollars:.6f}"


def usage(
    namespace: str = NamespaceOption,
    by: By = typer.Option(By.agent, "--by", help="Group by agent, caller or model."),
    since: str = typer.Option("24h", "--since", help="How far back: 30m, 24h, 7d (at most 40d)."),
    counter_url: str = typer.Option(
        None, "--counter-url",
        help="Read the ledger at this redis:// or postgresql:// URL instead of the servers the "
             "namespace's Budgets declare (e.g. through kubectl port-forward).",
    ),
    kubeconfig: Path = KubeconfigOption,
) -> None:
    """Model tokens, requests and cost of a namespace by agent, caller or model (chargeback)."""
    try:
        span = parse_since(since)
    except ValueError as error:
        fail(str(error), code=EXIT_USAGE)
    ns = resolve_namespace(namespace, kubeconfig)
    stores = _counter_stores(ns, kubeconfig, counter_url)
    if not stores:
        err_console.print(f"No Budget in namespace {ns!r}: usage is recorded beside Budget "
                          "counters, so there is nothing to report.", highlight=False)
        return
    until = datetime.now(UTC)
    rows, unread = asyncio.run(_read(stores, ns, until - span, until))
    if unread == len(stores):
        fail(f"no usage ledger of namespace {ns!r} could be read (see the warnings above)",
             "check the counter stores the Budgets declare (`kagent get budgets -o wide`), or "
             "read one through --counter-url")
    totals = usage_totals(rows, by)
    table = Table(box=None, header_style="bold", pad_edge=False)
    for header in (by.value.upper(), "REQUESTS", "INPUT", "OUTPUT", "TOKENS", "COST"):
        table.add_column(header, justify="left" if header == by.value.upper() else "right")
    for total in totals:
        table.add_row(total.key, f"{total.requests:,}", f"{total.input_tokens:,}",
                      f"{total.output_tokens:,}", f"{total.tokens:,}", _dollars(total.cost_micros))
    overall = usage_totals(rows, By.agent)
    table.add_row("TOTAL", f"{sum(t.requests for t in overall):,}",
                  f"{sum(t.input_tokens for t in overall):,}",
                  f"{sum(t.output_tokens for t in overall):,}",
                  f"{sum(t.tokens for t in overall):,}",
                  _dollars(sum(t.cost_micros for t in overall)), style="bold")
    print_stripped(console, table)
    if unread:
        fail(f"the totals above are incomplete: {unread} of {len(stores)} counter stores could "
             "not be read (see the warnings above)")


def _counter_stores(namespace: str, kubeconfig: Path | None,
                    counter_url: str | None) -> list[tuple[Any, str | None]]:
    """(counter store spec, password) of each distinct server the namespace's Budgets use."""
    from kagent.api.budget import BudgetCounterStore
    from kagent.runtime.budget import store_identity

    if counter_url:
        kind = "redis" if counter_url.startswith(("redis://", "rediss://")) else "postgres"
        return [(BudgetCounterStore(type=kind, url=counter_url), None)]
    from lightkube.resources.core_v1 import Secret

    from kagent.api import Budget

    kube = client(kubeconfig)
    try:
        budgets = [Budget.model_validate(o.to_dict() if hasattr(o, "to_dict") else dict(o))
                   for o in kube.list(kagent_resource("Budget"), namespace=namespace)]
    except Exception as error:  # noqa: BLE001 — turned into a message and exit code
        api_failure(error, f"Budgets in namespace {namespace!r}")
    found: dict[tuple[str, str], tuple[Any, str | None]] = {}
    for budget in budgets:
        counter = budget.spec.counter
        identity = store_identity(counter)
        if identity in found:
            continue
        password = None
        if counter.secret_ref is not None:
            try:
                secret = kube.get(Secret, counter.secret_ref.name, namespace=namespace)
            except Exception as error:  # noqa: BLE001
                api_failure(error, f"Secret {counter.secret_ref.name!r} (Budget "
                                   f"{budget.metadata.name} counter.secretRef)")
            data = (secret.data or {}).get(counter.secret_ref.key)
            password = base64.b64decode(data).decode() if data else None
        found[identity] = (counter, password)
    return list(found.values())


async def _read(stores: list[tuple[Any, str | None]], namespace: str, since: datetime,
                until: datetime) -> tuple[list[Any], int]:
    """The merged ledger rows, and how many stores could not be read."""
    from kagent.runtime.budget import CounterStoreError, connection_address, open_counter_store

    ledgers = []
    unread = 0
    for spec, password in stores:
        store = open_counter_store(spec, password)
        try:
            ledgers.append(await store.usage(namespace, since, until))
        except CounterStoreError as error:
            unread += 1
            err_console.print(f"[yellow]warning:[/] cannot read the usage ledger at "
                              f"{connection_address(spec)}: {error}", highlight=False)
        finally:
            await store.close()
    return merge_ledgers(ledgers), unread
