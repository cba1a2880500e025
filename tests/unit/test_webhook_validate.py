"""Admission checks beyond the CRD schema (pure): refusals name the field; advice warns."""

from __future__ import annotations

import copy
from typing import Any

from kagent.webhook.validate import advice, validate
from tests.helpers import seed_documents


def seed_agent() -> dict[str, Any]:
    return copy.deepcopy(next(d for d in seed_documents() if d["kind"] == "Agent"))


def test_the_seed_agent_is_valid_but_warned_about_its_tracing_keys() -> None:
    agent = seed_agent()
    assert validate(agent) == []
    (warning,) = advice(agent)
    assert warning.startswith("spec.observability.tracing.secretRef: langfuse needs a Secret")
    agent["spec"]["observability"]["tracing"]["secretRef"] = {"name": "langfuse-keys"}
    assert advice(agent) == []


def test_workflow_refusals_name_the_field() -> None:
    workflow = {"apiVersion": "kagent.dev/v1alpha1", "kind": "Workflow",
                "metadata": {"name": "w", "namespace": "n"},
                "spec": {"steps": [{"name": "a", "agent": "x", "when": "input.topic ==",
                                    "input": "{{ input.topic "}]}}
    fields = {e.field for e in validate(workflow)}
    assert {"spec.steps[0].when", "spec.steps[0].input"} <= fields


def test_a_run_cannot_change_its_input_or_be_uncancelled() -> None:
    run = {"apiVersion": "kagent.dev/v1alpha1", "kind": "WorkflowRun",
           "metadata": {"name": "r", "namespace": "n"},
           "spec": {"workflowRef": {"name": "w"}, "input": {"topic": "a"}, "cancel": True}}
    changed = copy.deepcopy(run)
    changed["spec"]["input"] = {"topic": "b"}
    changed["spec"]["cancel"] = False
    assert {e.field for e in validate(changed, run)} == {"spec.input", "spec.cancel"}
    cancelled = copy.deepcopy(run)
    assert validate(cancelled, {**run, "spec": {**run["spec"], "cancel": False}}) == []


def test_bedrock_takes_an_api_key_or_the_pods_aws_credentials() -> None:
    agent = seed_agent()
    agent["spec"]["model"] = {"provider": "bedrock", "name": "anthropic.claude-sonnet-4-5",
                              "region": "eu-central-1",
                              "apiKeySecretRef": {"name": "bedrock", "key": "api-key"}}
    assert validate(agent) == []  # a Bedrock API key, as the runtime supports
    del agent["spec"]["model"]["apiKeySecretRef"]
    assert validate(agent) == []  # IRSA / instance role
    agent["spec"]["model"]["endpoint"] = "bedrock.internal"
    assert [e.field for e in validate(agent)] == ["spec.model.endpoint"]


def test_weaker_code_isolation_is_warned() -> None:
    tool = {"apiVersion": "kagent.dev/v1alpha1", "kind": "Tool",
            "metadata": {"name": "python", "namespace": "n"},
            "spec": {"type": "code", "description": "Run Python.", "code": {}}}
    assert validate(tool) == [] and advice(tool) == []
    tool["spec"]["code"]["isolation"] = "best-effort"
    (warning,) = advice(tool)
    assert warning.startswith("spec.code.isolation: best-effort runs model-written code")
