"""Planning a workflow's graph: implied dependencies, fan-out groups, and refusals."""

from __future__ import annotations

from typing import Any

import pytest

from kagent.api.workflow import WorkflowSpec
from kagent.workflow.plan import PlanError, plan, topological_order


def spec(*steps: dict[str, Any]) -> WorkflowSpec:
    return WorkflowSpec.model_validate({"steps": [{"agent": "a", **s} for s in steps]})


def test_sequential_pipeline() -> None:
    assert plan(spec({"name": "a"}, {"name": "b"}, {"name": "c"})) == {"a": [], "b": ["a"], "c": ["b"]}


def test_research_report_fan_out() -> None:
    deps = plan(spec(
        {"name": "research"},
        {"name": "market", "parallel": True},
        {"name": "tech", "parallel": True},
        {"name": "write"},
    ))
    assert deps == {"research": [], "market": ["research"], "tech": ["research"], "write": ["market", "tech"]}


def test_leading_parallel_group() -> None:
    deps = plan(spec({"name": "a", "parallel": True}, {"name": "b", "parallel": True}, {"name": "c"}))
    assert deps == {"a": [], "b": [], "c": ["a", "b"]}


def test_explicit_dag() -> None:
    deps = plan(spec(
        {"name": "a", "dependsOn": []},
        {"name": "b", "dependsOn": []},
        {"name": "c", "dependsOn": ["a", "b"]},
        {"name": "d"},
    ))
    assert deps == {"a": [], "b": [], "c": ["a", "b"], "d": ["c"]}
    assert topological_order(deps) == ["a", "b", "c", "d"]


@pytest.mark.parametrize(
    ("steps", "field", "message"),
    [
        (({"name": "a", "dependsOn": ["b"]}, {"name": "b", "dependsOn": ["a"]}),
         "spec.steps[0].dependsOn", "cycle: a -> b -> a"),
        (({"name": "a", "dependsOn": ["zzz"]},), "spec.steps[0].dependsOn[0]", "no step named 'zzz'"),
        (({"name": "a", "dependsOn": ["a"]},), "spec.steps[0].dependsOn[0]", "itself"),
        (({"name": "a"}, {"name": "a"}), "spec.steps[1].name", "duplicate"),
        (({"name": "a", "loop": {"until": "true", "repeatFrom": "b"}}, {"name": "b"}),
         "spec.steps[0].loop.repeatFrom", "comes after"),
    ],
)
def test_refusals_name_the_field(steps: tuple[dict[str, Any], ...], field: str, message: str) -> None:
    with pytest.raises(PlanError) as error:
        plan(spec(*steps))
    assert error.value.field == field
    assert message in error.value.message
