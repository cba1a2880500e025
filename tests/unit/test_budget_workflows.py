"""Budgets by workflowSelector: which requests they count (steps of the Workflows they select,
named by the kagent-workflow header the engine sends), which agents must know them, and the
header's bounds."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from kagent.agentclient import (
    WORKFLOW_HEADER,
    WORKFLOW_HEADER_MAX,
    InvalidWorkflowClaim,
    WorkflowClaim,
    parse_workflow_claim,
)
from kagent.api import Budget
from kagent.runtime.budget import BudgetEnforcer, budget_applies, budget_may_apply
from kagent.runtime.secrets import SecretResolver
from tests.unit.test_workflow_engine import Agents, MemoryStore, engine_of, run_of, workflow_of

NIGHTLY = WorkflowClaim("nightly", {"schedule": "nightly", "team": "a"})
ADHOC = WorkflowClaim("adhoc", {"team": "b"})


def _budget(name: str = "b", **spec: object) -> Budget:
    return Budget.model_validate({"metadata": {"name": name, "namespace": "ns"}, "spec": {
        "limits": [{"window": "day", "tokens": 10}], "counter": {"type": "redis", "host": "r"},
        **spec}})


WORKFLOWS_ONLY = _budget("nightly-runs", workflowSelector={"matchLabels": {"schedule": "nightly"}})
BOTH = _budget("team-a", agentSelector={"matchLabels": {"team": "a"}},
               workflowSelector={"matchLabels": {"team": "b"}})


def test_a_workflow_budget_counts_only_steps_of_the_workflows_it_selects() -> None:
    assert budget_applies(WORKFLOWS_ONLY, {}, NIGHTLY)
    assert not budget_applies(WORKFLOWS_ONLY, {}, ADHOC)
    assert not budget_applies(WORKFLOWS_ONLY, {}, None)  # a request that is no workflow step


def test_with_both_selectors_a_budget_counts_its_agents_and_its_workflows_steps() -> None:
    assert budget_applies(BOTH, {"team": "a"}, None)
    assert budget_applies(BOTH, {}, ADHOC)
    assert not budget_applies(BOTH, {}, NIGHTLY)


def test_every_agent_knows_the_workflow_budgets_but_only_its_own_agent_budgets() -> None:
    assert budget_may_apply(WORKFLOWS_ONLY, {})
    assert not budget_may_apply(_budget(agentSelector={"matchLabels": {"team": "a"}}), {})


def test_the_enforcer_claims_the_windows_of_the_budgets_that_apply() -> None:
    enforcer = BudgetEnforcer([WORKFLOWS_ONLY, _budget("everything")], namespace="ns", agent="w",
                              secrets=SecretResolver(environ={}), agent_labels={})
    now = datetime(2026, 11, 30, 10, tzinfo=UTC)

    def budgets(claim: WorkflowClaim | None) -> set[str]:
        return {c.budget for claims in enforcer.claims("caller", now, claim).values() for c in claims}

    assert budgets(NIGHTLY) == {"nightly-runs", "everything"}
    assert budgets(ADHOC) == budgets(None) == {"everything"}


def test_the_header_round_trips_and_bad_ones_are_refused() -> None:
    assert parse_workflow_claim({"Kagent-Workflow": NIGHTLY.header()}) == NIGHTLY
    assert parse_workflow_claim({}) is None
    for bad in ("not json", json.dumps({"labels": {}}), json.dumps({"name": "x", "labels": {"a": 1}}),
                json.dumps({"name": "x", "labels": {"k": "v" * WORKFLOW_HEADER_MAX}})):
        with pytest.raises(InvalidWorkflowClaim, match=WORKFLOW_HEADER):
            parse_workflow_claim({WORKFLOW_HEADER: bad})


async def test_every_step_call_names_its_workflow_and_labels() -> None:
    workflow = workflow_of({"steps": [{"name": "a", "agent": "w", "input": "go"}]}, name="nightly")
    workflow["metadata"]["labels"] = dict(NIGHTLY.labels)
    store = MemoryStore([run_of(None, workflow="nightly")], [workflow])
    agents = Agents({"w": lambda m: "ok"})
    engine = engine_of(store, agents)
    await engine.reconcile_run("ns", "r")
    runner = engine.runs.executors[("ns", "r")]
    assert runner.task is not None
    await runner.task
    [call] = agents.calls
    assert parse_workflow_claim(call["headers"]) == NIGHTLY


class Listing:
    """The controller's cache as covering_budgets reads it."""

    def __init__(self, budgets: list[Budget]) -> None:
        self.budgets = [b.to_wire() if hasattr(b, "to_wire") else b for b in budgets]

    def list(self, kind: str, namespace: str) -> list[dict[str, object]]:
        return [{"apiVersion": "kagent.dev/v1alpha1", "kind": "Budget", **b} for b in self.budgets]

    def get(self, kind: str, namespace: str, name: str) -> None:
        return None


def test_the_controller_renders_workflow_budgets_into_every_agent_of_the_namespace() -> None:
    from kagent.api import Agent
    from kagent.controller.resolve import covering_budgets

    other_team = _budget("team-b", agentSelector={"matchLabels": {"team": "b"}})
    agent = Agent.model_validate({"metadata": {"name": "w", "namespace": "ns", "labels": {"team": "a"}},
                                  "spec": {"model": {"provider": "openai", "name": "m"}}})
    found = covering_budgets(Listing([WORKFLOWS_ONLY, other_team]), agent)  # type: ignore[arg-type]
    assert [b.metadata.name for b in found] == ["nightly-runs"]


def test_kagent_get_budgets_wide_shows_the_workflows_a_budget_selects() -> None:
    from kagent.cli.resources import _wide_columns

    def scope(**spec: object) -> str:
        return _wide_columns("Budget", {"spec": spec, "status": {}})[0]

    assert scope() == "namespace"
    assert scope(workflowSelector={"matchLabels": {"schedule": "nightly"}}) == "workflows schedule=nightly"
    assert scope(agentSelector={"matchLabels": {"team": "a"}}, workflowSelector={"matchLabels": {"x": "y"}},
                 perCaller=True) == "team=a + workflows x=y per caller"
