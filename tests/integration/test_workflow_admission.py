"""Workflow admission against the real API server and the controller's webhook: what a newcomer
writes wrong is refused naming the field, before any run pays for a model call."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from tests.helpers import wait_for

pytestmark = pytest.mark.integration

FREEZING = ("[1,2,3,4,5,6,7,8].all(a, [1,2,3,4,5,6,7,8].all(b, [1,2,3,4,5,6,7,8].all(c, "
            "[1,2,3,4,5,6,7,8].all(d, [1,2,3,4,5,6,7,8].all(e, a > -1)))))")


def workflow(namespace: str, spec: dict[str, Any], name: str = "trip") -> dict[str, Any]:
    return {"apiVersion": "kagent.dev/v1alpha1", "kind": "Workflow",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def refused(cp: Any, doc: dict[str, Any]) -> str:
    result = cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc), check=False)
    assert result.returncode != 0, f"accepted: {doc}"
    return result.stderr


def get(cp: Any, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
    result = cp.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def test_misspelt_references_bounds_and_missing_parts_are_refused_naming_the_field(
        kagent_controller: Any, namespace: str) -> None:
    cp = kagent_controller.plane
    inputs = [{"name": "city", "required": True}]
    cases = [
        ({"input": inputs, "steps": [{"name": "forecast", "agent": "a", "input": "{{ input.city }}"},
                                     {"name": "plan", "agent": "b", "input": "{{ steps.forcast.output }}"}]},
         "spec.steps[1].input: no step named 'forcast' (steps.forcast)"),
        ({"input": inputs, "steps": [{"name": "plan", "agent": "b", "input": "x",
                                      "when": "input.dayz > 1"}]},
         "spec.steps[0].when: no input named 'dayz'"),
        ({"input": inputs, "steps": [{"name": "plan", "agent": "b", "input": "x"}],
          "output": {"report": "{{ steps.writer.output }}"}},
         "spec.output.report: no step named 'writer'"),
        ({"input": inputs, "steps": [{"name": "plan", "agent": "b", "input": "x", "when": FREEZING}]},
         "spec.steps[0].when: the condition may evaluate about"),
        ({"input": inputs, "steps": [{"name": "plan", "agent": "b", "input": '{{ "ab" * 50000000 }}'}]},
         "spec.steps[0].input: the template would be too large"),
        ({"input": inputs, "steps": [{"name": "plan", "input": "x"}]},
         "give one of agent or route"),
        ({"steps": [{"name": "plan", "agent": "b"}]},
         "spec.steps[0].input: the step has nothing to send"),
    ]
    for spec, expected in cases:
        stderr = refused(cp, workflow(namespace, spec))
        assert expected in stderr, stderr
        assert get(cp, "workflow", "trip", namespace) is None


def test_a_run_missing_a_required_input_is_refused_naming_it(kagent_controller: Any, namespace: str) -> None:
    cp = kagent_controller.plane
    spec = {"input": [{"name": "city", "required": True}, {"name": "days", "type": "integer", "default": 1}],
            "steps": [{"name": "plan", "agent": "planner", "input": "{{ input.days }} in {{ input.city }}"}]}
    cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(workflow(namespace, spec)))
    run = {"apiVersion": "kagent.dev/v1alpha1", "kind": "WorkflowRun",
           "metadata": {"name": "r1", "namespace": namespace},
           "spec": {"workflowRef": {"name": "trip"}, "input": {"days": 3}}}
    stderr = refused(cp, run)
    assert "spec.input.city: Workflow trip requires input city" in stderr, stderr
    run["spec"]["input"] = {"city": "Oslo"}  # days has a default: not required of the run
    cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(run))


def test_a_workflow_whose_agent_does_not_exist_is_not_accepted_until_it_does(
        kagent_controller: Any, namespace: str) -> None:
    cp = kagent_controller.plane
    spec = {"input": [{"name": "city"}], "steps": [{"name": "plan", "agent": "planner"}]}
    result = cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(workflow(namespace, spec)))
    assert 'Agent "planner" does not exist yet' in result.stderr  # a warning: GitOps order

    def accepted() -> dict[str, Any]:
        found = get(cp, "workflow", "trip", namespace) or {}
        return next((c for c in (found.get("status") or {}).get("conditions") or []
                     if c["type"] == "Accepted"), {})

    wait_for(lambda: accepted().get("reason") == "AgentNotFound", what="Accepted False")
    assert accepted()["status"] == "False"
    assert accepted()["message"] == 'Agent "planner" does not exist; runs wait for it'
    cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(
        {"apiVersion": "kagent.dev/v1alpha1", "kind": "Agent",
         "metadata": {"name": "planner", "namespace": namespace},
         "spec": {"model": {"provider": "openai", "name": "gpt-4o-mini"}}}))
    wait_for(lambda: accepted().get("status") == "True", what="Accepted once the Agent exists")
