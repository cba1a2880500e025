"""Admission of canary and blue-green rollouts: accepted when well formed, refused naming the
field when not (issue: an API field the webhook always refused was a defect)."""

from __future__ import annotations

from typing import Any

import pytest

from kagent.webhook.validate import validate


def agent(rollout: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "kagent.dev/v1alpha1", "kind": "Agent",
            "metadata": {"name": "helper", "namespace": "n"},
            "spec": {"model": {"provider": "openai", "name": "gpt-4o-mini"}, "replicas": 4,
                     "rollout": rollout, **spec}}


def fields(obj: dict[str, Any]) -> list[str]:
    return [e.field for e in validate(obj)]


def test_canary_and_blue_green_are_accepted() -> None:
    canary = {"strategy": "Canary", "canary": {
        "steps": [{"setWeight": 25}, {"pause": {"duration": "30s"}}, {"setWeight": 50},
                  {"pause": {}}],
        "analysis": {"minRequests": 10, "maxErrorRate": 0.05, "maxP99Latency": "5s",
                     "maxToolFailureRate": 0.2, "maxErrorRateIncrease": 0.01}}}
    assert validate(agent(canary)) == []
    assert validate(agent({"strategy": "Canary"})) == []  # the default steps
    blue_green = {"strategy": "BlueGreen", "blueGreen": {
        "autoPromote": False, "scaleDownDelay": "2m", "analysis": {"maxErrorRate": 0.1}}}
    assert validate(agent(blue_green)) == []
    assert validate(agent({"strategy": "RollingUpdate", "maxSurge": 1})) == []
    usage = {"strategy": "Canary", "canary": {"analysis": {
        "maxTokensPerRequest": 4000, "maxTokensPerRequestIncrease": 0.2,
        "maxCostPerRequest": 0.01, "maxCostPerRequestIncrease": 0.5}}}
    assert validate(agent(usage)) == []


def test_an_evaluation_with_checks_and_a_judge_is_accepted() -> None:
    evaluation = {"strategy": "Canary", "canary": {"analysis": {"evaluation": {
        "dataset": [{"prompt": "capital of France?", "criteria": "Paris",
                     "checks": {"contains": ["Paris"], "cel": "answer.size() < 200",
                                "jsonSchema": {"type": "object"}}},
                    {"prompt": "say hi"}],
        "judge": {"agent": "judge", "minScore": 0.6}, "minPassRate": 0.5,
        "answerTimeout": "30s"}}}}
    assert validate(agent(evaluation)) == []


def test_a_cost_threshold_needs_a_priced_model() -> None:
    usage = {"strategy": "Canary", "canary": {"analysis": {"maxCostPerRequestIncrease": 0.5}}}
    unpriced = agent(usage, model={"provider": "vllm", "name": "local", "endpoint": "http://m"})
    errors = validate(unpriced)
    assert [e.field for e in errors] == ["spec.rollout.canary.analysis.maxCostPerRequestIncrease"]
    assert "vllm/local has no price" in errors[0].message
    priced = agent(usage, model={"provider": "vllm", "name": "local", "endpoint": "http://m",
                                 "pricing": {"inputPerMillion": 0.1}})
    assert validate(priced) == []


@pytest.mark.parametrize(("rollout", "field", "words"), [
    ({"strategy": "Canary", "canary": {"steps": [{"setWeight": 50}, {"setWeight": 20}]}},
     "spec.rollout.canary.steps[1].setWeight", "only grow"),
    ({"strategy": "Canary", "canary": {"steps": [{"setWeight": 50, "pause": {}}]}},
     "spec.rollout.canary.steps[0]", "exactly one"),
    ({"strategy": "Canary", "canary": {"steps": [{}]}},
     "spec.rollout.canary.steps[0]", "exactly one"),
    ({"strategy": "Canary", "canary": {"steps": [{"setWeight": 150}]}},
     "spec.rollout.canary.steps[0].setWeight", "100"),
    ({"strategy": "Canary", "canary": {"steps": [{"pause": {"duration": "soon"}}]}},
     "spec.rollout.canary.steps[0].pause.duration", ""),
    ({"strategy": "Canary", "canary": {"steps": [{"pause": {"duration": "0s"}}]}},
     "spec.rollout.canary.steps[0].pause.duration", "longer than zero"),
    ({"strategy": "Canary", "canary": {"analysis": {"maxErrorRate": 1.5}}},
     "spec.rollout.canary.analysis.maxErrorRate", "1"),
    ({"strategy": "Canary", "canary": {"analysis": {"maxToolFailureRate": -0.1}}},
     "spec.rollout.canary.analysis.maxToolFailureRate", "0"),
    ({"strategy": "Canary", "canary": {"analysis": {"maxP99Latency": "0ms"}}},
     "spec.rollout.canary.analysis.maxP99Latency", "longer than zero"),
    ({"strategy": "Canary", "canary": {"analysis": {"minRequests": 3}}},
     "spec.rollout.canary.analysis", "no threshold"),
    ({"strategy": "BlueGreen", "blueGreen": {"scaleDownDelay": "400h"}},
     "spec.rollout.blueGreen.scaleDownDelay", "168h"),
    ({"strategy": "Canary", "canary": {"steps": [{"setWeight": 10}], "stepz": 1}},
     "spec.rollout.canary.stepz", ""),
    ({"strategy": "Linear"}, "spec.rollout.strategy", ""),
    ({"strategy": "Canary", "canary": {"analysis": {"maxTokensPerRequest": 0}}},
     "spec.rollout.canary.analysis.maxTokensPerRequest", "1"),
    ({"strategy": "Canary", "canary": {"analysis": {"maxCostPerRequest": 0}}},
     "spec.rollout.canary.analysis.maxCostPerRequest", "0"),
    ({"strategy": "BlueGreen", "blueGreen": {"analysis": {"maxCostPerRequestIncrease": -1}}},
     "spec.rollout.blueGreen.analysis.maxCostPerRequestIncrease", "0"),
    ({"strategy": "Canary", "canary": {"analysis": {"maxTokensPerRequestIncrease": "lots"}}},
     "spec.rollout.canary.analysis.maxTokensPerRequestIncrease", ""),
    ({"strategy": "Canary", "canary": {"analysis": {"evaluation": {"dataset": [
        {"prompt": "hi", "checks": {"cel": "answer.size( > 2"}}]}}}},
     "spec.rollout.canary.analysis.evaluation.dataset[0].checks.cel", "invalid CEL"),
    ({"strategy": "BlueGreen", "blueGreen": {"analysis": {"evaluation": {"dataset": [
        {"prompt": "hi", "checks": {"contains": ["x"]}},
        {"prompt": "hi", "checks": {"jsonSchema": {"type": "thing"}}}]}}}},
     "spec.rollout.blueGreen.analysis.evaluation.dataset[1].checks.jsonSchema", "JSON Schema"),
    ({"strategy": "Canary", "canary": {"analysis": {"evaluation": {"dataset": [{"prompt": "hi"}]}}}},
     "spec.rollout.canary.analysis.evaluation.dataset[0]", "no checks"),
    ({"strategy": "Canary", "canary": {"analysis": {"evaluation": {"dataset": [
        {"prompt": "hi", "checks": {"contains": ["x"]}}] * 21}}}},
     "spec.rollout.canary.analysis.evaluation.dataset", "20"),
    ({"strategy": "Canary", "canary": {"analysis": {"evaluation": {"dataset": [
        {"prompt": "x" * 5000, "checks": {"contains": ["x"]}}]}}}},
     "spec.rollout.canary.analysis.evaluation.dataset[0].prompt", "4096"),
    ({"strategy": "Canary", "canary": {"analysis": {"evaluation": {
        "dataset": [{"prompt": "hi"}], "judge": {"agent": "Judge_1"}}}}},
     "spec.rollout.canary.analysis.evaluation.judge.agent", ""),
    ({"strategy": "Canary", "canary": {"analysis": {"evaluation": {
        "dataset": [{"prompt": "hi"}], "judge": {"agent": "judge", "minScore": 2}}}}},
     "spec.rollout.canary.analysis.evaluation.judge.minScore", "1"),
])
def test_malformed_rollouts_are_refused_naming_the_field(rollout: dict[str, Any], field: str,
                                                          words: str) -> None:
    errors = validate(agent(rollout))
    assert field in [e.field for e in errors], errors
    assert any(words in e.message for e in errors if e.field == field), errors


def test_canary_needs_a_fixed_replica_count() -> None:
    autoscaled = agent({"strategy": "Canary"}, scaling={
        "minReplicas": 1, "maxReplicas": 3, "metrics": [{"type": "cpu", "target": {"averageUtilization": 70}}]})
    del autoscaled["spec"]["replicas"]
    assert fields(autoscaled) == ["spec.rollout.strategy"]


def test_a_blue_green_agent_name_leaves_room_for_its_preview_service() -> None:
    long = agent({"strategy": "BlueGreen"})
    long["metadata"]["name"] = "a" * 56
    assert fields(long) == ["metadata.name"]
    long["metadata"]["name"] = "a" * 55
    assert fields(long) == []


def test_a_canary_with_a_gateway_leaves_room_for_its_revision_services() -> None:
    routed = agent({"strategy": "Canary", "canary": {"gateway": {"name": "public"}}})
    routed["metadata"]["name"] = "a" * 57
    assert fields(routed) == ["metadata.name"]
    routed["metadata"]["name"] = "a" * 56
    assert fields(routed) == []
