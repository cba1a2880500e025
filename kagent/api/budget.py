"""Budget: caps on model tokens, cost and requests per hour, day or month, for a namespace, for
agents or workflows chosen by labels, optionally per caller.

Agent runtimes enforce a Budget on every request (reserve before the model call, settle after)
against a counter shared by all their replicas in Redis or PostgreSQL, so the cap holds across
replicas and restarts; the controller copies the counters into the Budget's status and posts an
Event when the warning share is reached.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from kagent.api.base import (
    AGE_COLUMN,
    Condition,
    KagentModel,
    PrinterColumn,
    Resource,
    cel,
)
from kagent.api.memory import BackendConnection

BudgetWindow = Literal["hour", "day", "month"]
"""Calendar windows in UTC: an hour starts at minute 0, a day at 00:00, a month on the 1st."""

LabelValue = Annotated[str, Field(max_length=63)]


class LabelSelectorRequirement(KagentModel):
    """One requirement of a label selector, as in Kubernetes."""

    key: Annotated[str, Field(min_length=1, max_length=317)]
    """The label key."""
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    """How the label's value relates to values."""
    values: Annotated[list[LabelValue], Field(max_length=64)] | None = None
    """Values for In and NotIn."""


class LabelSelector(KagentModel):
    """Chooses objects by their labels (both parts must match; empty matches everything)."""

    match_labels: dict[str, LabelValue] | None = None
    """Labels the object must carry with exactly these values."""
    match_expressions: Annotated[list[LabelSelectorRequirement], Field(max_length=32)] | None = None
    """Further requirements on the object's labels."""


class BudgetLimit(KagentModel):
    """The most one window may use; at least one of tokens, cost and requests."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "has(self.tokens) || has(self.cost) || has(self.requests)",
                    "a limit needs at least one of tokens, cost and requests",
                )
            ]
        }
    }

    window: BudgetWindow
    """hour, day or month (calendar windows in UTC)."""
    tokens: Annotated[int, Field(ge=1, le=10**15)] | None = None
    """Most model tokens (input plus output) in one window."""
    cost: Annotated[float, Field(gt=0.0, le=10**9)] | None = None
    """Most cost in US dollars in one window, priced with each model's pricing (or the default
    price table)."""
    requests: Annotated[int, Field(ge=1, le=10**12)] | None = None
    """Most requests to agents in one window."""


class BudgetCounterStore(BackendConnection):
    """Where the shared counters live: the same Redis or PostgreSQL servers session memory uses."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "has(self.host) || has(self.url)",
                    "counter.host or counter.url is required",
                    ".host",
                )
            ]
        }
    }

    type: Literal["redis", "postgres"]
    """redis or postgres."""


class BudgetSpec(KagentModel):
    """What is capped, for whom, and where the counters are kept."""

    limits: Annotated[
        list[BudgetLimit],
        Field(min_length=1, max_length=3, json_schema_extra={
            "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["window"]}),
    ]
    """One limit per window (hour, day, month); each is enforced on its own."""
    agent_selector: LabelSelector | None = None
    """The Agents the Budget covers: every request to them counts. Unset (and no
    workflowSelector): every Agent of the namespace."""
    workflow_selector: LabelSelector | None = None
    """The Workflows (by their labels) whose runs the Budget covers: every request a step of a
    matching Workflow makes to any agent of the namespace counts, and a step refused by it fails
    naming the Budget. With agentSelector too, both sets of requests count."""
    per_caller: bool = False
    """Count and cap each caller (the authenticated identity) separately."""
    warning_percent: Annotated[int, Field(ge=1, le=100)] = 80
    """At this share of a limit the controller posts a Warning Event and the runtime's
    agent_budget_used_ratio metric crosses it."""
    counter: BudgetCounterStore
    """The Redis or PostgreSQL server holding the shared counters."""


class BudgetWindowStatus(KagentModel):
    """Consumption of the current window of one limit."""

    window: BudgetWindow
    """hour, day or month."""
    caller: str | None = None
    """For a perCaller Budget: whose consumption this is (the callers using most are listed)."""
    start: str
    """When the window began (RFC 3339, UTC)."""
    resets_at: str
    """When the window ends and the counters start again from zero."""
    tokens: int = 0
    """Model tokens used in the window."""
    cost: float = 0.0
    """Dollars spent in the window."""
    requests: int = 0
    """Requests admitted in the window."""
    used_percent: int = 0
    """The largest share of any capped quantity, in percent."""


class BudgetStatus(KagentModel):
    """Observed state of a Budget."""

    observed_generation: int | None = None
    """The .metadata.generation this status describes."""
    conditions: list[Condition] | None = None
    """WithinBudget: False (WarningReached or LimitReached) once a window passes its warning
    share or its limit; CounterReachable: whether the counter store answers."""
    windows: list[BudgetWindowStatus] | None = None
    """Consumption per window (per caller, the top users, for perCaller Budgets)."""
    updated_at: str | None = None
    """When the controller last read the counters."""


class Budget(Resource):
    """Caps model tokens, cost and requests per hour, day or month for a namespace, agents or workflows (optionally per caller); refuses requests past the limit with HTTP 429."""

    kind_name: ClassVar[str] = "Budget"
    plural: ClassVar[str] = "budgets"
    short_names: ClassVar[tuple[str, ...]] = ("bud",)
    printer_columns: ClassVar[tuple[PrinterColumn, ...]] = (
        PrinterColumn(name="Window", json_path=".status.windows[0].window"),
        PrinterColumn(name="Used", json_path=".status.windows[0].usedPercent", type="integer",
                      description="Largest share of a limit used in the first window, percent"),
        PrinterColumn(name="Within",
                      json_path='.status.conditions[?(@.type=="WithinBudget")].status'),
        AGE_COLUMN,
    )

    kind: Literal["Budget"] = "Budget"
    """Always Budget."""
    spec: BudgetSpec
    """Desired caps."""
    status: BudgetStatus | None = None
    """Observed consumption, written by the controller."""
