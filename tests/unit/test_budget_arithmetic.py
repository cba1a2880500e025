"""The pure parts of Budgets: calendar windows, label selectors, when a window is used up, the
refusal message, prices, and what the controller renders into an agent's config."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import yaml

from kagent.api import Agent, Budget
from kagent.api.budget import BudgetLimit, LabelSelector
from kagent.api.pricing import ModelPricing, cost_micros, price_for
from kagent.runtime.budget import (
    Amount,
    Meter,
    budget_covers_agent,
    counter_key,
    exhausted,
    ledger_hours,
    refusal_message,
    selector_matches,
    used_share,
    window_bounds,
)

NOW = datetime(2026, 12, 31, 22, 15, 7, tzinfo=UTC)


def test_windows_are_utc_calendar_windows() -> None:
    assert window_bounds("hour", NOW) == (datetime(2026, 12, 31, 22, tzinfo=UTC),
                                          datetime(2026, 12, 31, 23, tzinfo=UTC))
    assert window_bounds("day", NOW) == (datetime(2026, 12, 31, tzinfo=UTC),
                                         datetime(2027, 1, 1, tzinfo=UTC))
    assert window_bounds("month", NOW) == (datetime(2026, 12, 1, tzinfo=UTC),
                                           datetime(2027, 1, 1, tzinfo=UTC))
    assert window_bounds("month", datetime(2026, 2, 10, tzinfo=UTC))[1] == datetime(2026, 3, 1, tzinfo=UTC)


def test_label_selectors_follow_kubernetes() -> None:
    labels = {"team": "a", "tier": "gold"}
    assert selector_matches(None, labels)
    assert selector_matches(LabelSelector(), labels)
    assert selector_matches(LabelSelector(match_labels={"team": "a"}), labels)
    assert not selector_matches(LabelSelector(match_labels={"team": "b"}), labels)
    expr = lambda op, *values: LabelSelector.model_validate(  # noqa: E731
        {"matchExpressions": [{"key": "tier", "operator": op, "values": list(values) or None}]})
    assert selector_matches(expr("In", "gold", "silver"), labels)
    assert not selector_matches(expr("NotIn", "gold"), labels)
    assert selector_matches(expr("Exists"), labels)
    assert not selector_matches(expr("DoesNotExist"), labels)


def _budget(**spec: object) -> Budget:
    return Budget.model_validate({"metadata": {"name": "b", "namespace": "ns"}, "spec": {
        "limits": [{"window": "day", "tokens": 10}], "counter": {"type": "redis", "host": "r"},
        **spec}})


def test_which_agents_a_budget_covers() -> None:
    assert budget_covers_agent(_budget(), {})
    assert budget_covers_agent(_budget(agentSelector={"matchLabels": {"team": "a"}}), {"team": "a"})
    assert not budget_covers_agent(_budget(agentSelector={"matchLabels": {"team": "a"}}), {})
    assert not budget_covers_agent(_budget(workflowSelector={"matchLabels": {"x": "y"}}), {})


def test_a_window_is_used_up_at_its_limit() -> None:
    tokens = BudgetLimit(window="day", tokens=1000)
    assert exhausted(Amount(tokens=999), tokens) is None
    assert exhausted(Amount(tokens=1000), tokens) == "tokens"
    # With a per-request estimate (limits.maxTokens) a request that might pass the cap waits.
    assert exhausted(Amount(tokens=900), tokens, Amount(tokens=100)) is None
    assert exhausted(Amount(tokens=901), tokens, Amount(tokens=100)) == "tokens"
    requests = BudgetLimit(window="hour", requests=3)
    assert exhausted(Amount(requests=2), requests) is None
    assert exhausted(Amount(requests=3), requests) == "requests"
    cost = BudgetLimit(window="month", cost=1.5)
    assert exhausted(Amount(cost_micros=1_499_999), cost) is None
    assert exhausted(Amount(cost_micros=1_500_000), cost) == "cost"
    assert used_share(Amount(tokens=500, requests=3), BudgetLimit(window="day", tokens=1000,
                                                                  requests=4)) == 0.75


def test_a_limit_needs_something_to_cap() -> None:
    # The CRD's rule says it to the API server; the type accepts it, so test the rule's text.
    from kagent.api.crd import openapi_schema

    limits = openapi_schema(Budget)["properties"]["spec"]["properties"]["limits"]
    assert limits["x-kubernetes-list-map-keys"] == ["window"]
    assert "at least one of tokens, cost and requests" in str(limits["items"])


def test_the_refusal_names_the_budget_the_cap_and_the_reset() -> None:
    message = refusal_message("team-a", BudgetLimit(window="day", tokens=1000), "tokens",
                              Amount(tokens=1050), "user:alice", datetime(2027, 1, 1, tzinfo=UTC),
                              NOW)
    assert message == ('Budget "team-a" is used up: it allows 1,000 tokens per day for caller '
                       "user:alice and 1,050 are used. It resets at 2027-01-01T00:00:00Z "
                       "(in 1h44m).")
    cost = refusal_message("c", BudgetLimit(window="month", cost=2.5), "cost",
                           Amount(cost_micros=2_600_000), None, datetime(2027, 1, 1, tzinfo=UTC),
                           NOW)
    assert "allows $2.5 per month and $2.6 are used" in cost


def test_counters_are_per_window_and_per_caller() -> None:
    start = window_bounds("day", NOW)[0]
    shared = counter_key("ns", "b", "day", start)
    assert shared == "kagent:budget:ns/b:day:20261231T00"
    alice = counter_key("ns", "b", "day", start, "user:alice")
    assert alice.startswith(shared + ":caller:") and alice != counter_key("ns", "b", "day", start, "user:bob")


def test_prices_come_from_the_model_or_the_default_table() -> None:
    assert price_for("openai", "gpt-4o") == ModelPricing(input_per_million=2.5, output_per_million=10)
    assert price_for("anthropic", "claude-sonnet-4-5") == price_for("anthropic", "claude-sonnet-4")
    assert price_for("vllm", "llama") is None
    own = ModelPricing(input_per_million=1, output_per_million=2)
    assert price_for("openai", "gpt-4o", own) is own
    assert cost_micros(own, 1_000, 500) == 2_000  # $0.002
    meter = Meter()
    meter.add("openai/gpt-4o", price_for("openai", "gpt-4o"), 100, 50)
    meter.add("openai/gpt-4o", price_for("openai", "gpt-4o"), 100, 50)
    assert meter.total() == Amount(tokens=300, cost_micros=1_500)


def test_ledger_hours_are_bounded() -> None:
    hours = ledger_hours(datetime(2026, 12, 31, 20, 30, tzinfo=UTC), NOW)
    assert [h.hour for h in hours] == [20, 21, 22]
    assert len(ledger_hours(datetime(2000, 1, 1, tzinfo=UTC), NOW)) == 24 * 40


@pytest.mark.parametrize("window", ["hour", "day", "month"])
def test_now_is_inside_its_window(window: str) -> None:
    start, end = window_bounds(window, NOW)  # type: ignore[arg-type]
    assert start <= NOW < end


def test_the_controller_renders_covering_budgets_into_the_agent_config() -> None:
    from kagent.api.secrets import secret_env_name
    from kagent.api.base import SecretKeySelector
    from kagent.controller.render import AgentInputs, render_agent
    from kagent.runtime.config import build_runtime_config
    from tests.helpers import seed_documents

    seed = seed_documents()[0]
    seed["spec"].pop("tools", None)
    seed["spec"].pop("memory", None)
    agent = Agent.model_validate(seed)
    budget = _budget(agentSelector={"matchLabels": {"team": "a"}},
                     counter={"type": "postgres", "host": "pg",
                              "secretRef": {"name": "pg", "key": "password"}})
    plain = render_agent(AgentInputs(agent=agent))
    rendered = render_agent(AgentInputs(agent=agent, budgets=[budget]))
    assert rendered.config_hash != plain.config_hash  # a new Budget rolls the pods
    config_map = next(o for o in rendered.objects if o["kind"] == "ConfigMap")
    documents = list(yaml.safe_load_all(config_map["data"]["agent.yaml"]))
    [rendered_budget] = [d for d in documents if d["kind"] == "Budget"]
    assert "agentSelector" not in rendered_budget["spec"]  # chosen by the controller already
    deployment = next(o for o in rendered.objects if o["kind"] == "Deployment")
    env = {e["name"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert secret_env_name(SecretKeySelector(name="pg", key="password")) in env
    # The runtime reads it back as one Budget covering the (unlabelled in its config) agent.
    config = build_runtime_config(documents, environ={})
    assert [b.metadata.name for b in config.budgets] == ["b"]


def test_budget_status_says_when_a_window_passes_its_warning_and_its_limit() -> None:
    from kagent.api.budget import BudgetStatus
    from kagent.controller.budgets import Reading, budget_status
    from kagent.kube.conditions import transitions

    budget = _budget(limits=[{"window": "day", "tokens": 1000}], warningPercent=50)
    start, ends = window_bounds("day", NOW)
    limit = budget.spec.limits[0]

    def status(tokens: int, previous: BudgetStatus) -> BudgetStatus:
        return budget_status(previous, budget, [Reading(limit, start, ends, Amount(tokens=tokens))],
                             None, "2026-12-31T22:15:07Z")

    calm = status(100, BudgetStatus())
    assert [(c.type, c.status) for c in calm.conditions or []] == [
        ("CounterReachable", "True"), ("WithinBudget", "True")]
    assert not transitions(None, calm.conditions)
    warned = status(600, calm)
    [event] = transitions(calm.conditions, warned.conditions)
    assert (event.reason, event.event_type) == ("WarningReached", "Warning")
    assert "600 of 1,000 tokens used this day (60%); resets at 2027-01-01T00:00:00Z" in event.message
    assert warned.windows and warned.windows[0].used_percent == 60
    full = status(1050, warned)
    [event] = transitions(warned.conditions, full.conditions)
    assert event.reason == "LimitReached" and "refused" in event.message
    down = budget_status(full, budget, None, "the counter store did not answer: refused", "t")
    assert down.windows == full.windows  # the last reading stays
    assert [c.reason for c in down.conditions or [] if c.type == "CounterReachable"] == [
        "CounterUnreachable"]


def test_workflow_step_and_run_usage_gain_cost() -> None:
    from kagent.api.workflow import StepStatus
    from kagent.workflow.state import add_usage, sum_usage

    first = add_usage(None, {"inputTokens": 700, "outputTokens": 350, "requests": 1,
                             "costMicros": 5250})
    second = add_usage(first, {"inputTokens": 1, "outputTokens": 1, "costMicros": 1})
    assert second is not None and second.cost == 0.005251
    run = sum_usage([StepStatus(name="a", usage=second), StepStatus(name="b", usage=first)])
    assert run.cost == 0.010501 and run.input_tokens == 1401


def test_usage_costs_below_a_cent_keep_their_micro_dollars() -> None:
    from kagent.cli.usage import _dollars

    assert _dollars(0) == "$0.0000"
    assert _dollars(46) == "$0.000046"  # a cheap model's few calls: not $0.0000
    assert _dollars(5_250) == "$0.005250"
    assert _dollars(1_234_567) == "$1.2346"
