"""The rollout evaluation (pure): the judge's contract, the checks of an answer, a revision's
result over the dataset and the verdict; and how the planner weighs it."""

from __future__ import annotations

from dataclasses import replace

from kagent.api.rollout import EvaluationCase, EvaluationSpec, RolloutSpec
from kagent.controller.rollout.evaluation import (
    CaseOutcome,
    check_problems,
    evaluation_verdict,
    judge_message,
    parse_score,
    summarise,
)
from kagent.controller.rollout.metrics import Counts
from kagent.controller.rollout.plan import Evaluation, Measurement, plan
from tests.unit.test_rollout_plan import converge, observe

CASE = EvaluationCase.model_validate({
    "prompt": "Give the capital of France as JSON", "criteria": "Paris",
    "checks": {"contains": ["Paris"], "jsonSchema": {
        "type": "object", "required": ["capital"], "properties": {"capital": {"const": "Paris"}}},
        "cel": "json.capital == 'Paris'"}})
SPEC = EvaluationSpec.model_validate({"dataset": [CASE.model_dump(by_alias=True, exclude_none=True)] * 2,
                                      "judge": {"agent": "judge", "minScore": 0.5}})


def test_the_judge_is_asked_with_the_prompt_criteria_and_answer_and_its_score_is_read() -> None:
    message = judge_message(CASE, "Lyon")
    assert '{"score":' in message and "<prompt>\nGive the capital" in message
    assert "<criteria>\nParis\n</criteria>" in message and "<answer>\nLyon\n</answer>" in message
    assert parse_score('{"score": 0.8, "reason": "fine"}') == 0.8
    assert parse_score('Thinking... {"note": 1} then ```json\n{"score": 1, "reason": "x"}\n```') == 1.0
    assert parse_score("I give it 9/10") is None
    assert parse_score('{"score": 7}') is None  # outside 0..1
    assert parse_score('{"score": true}') is None
    assert parse_score('{"score": "0.9"}') is None


def test_an_answer_is_checked_for_texts_a_json_schema_and_cel() -> None:
    assert check_problems(CASE, '{"capital": "Paris"}', cel_passed=True) == []
    assert check_problems(CASE, '```json\n{"capital": "Paris"}\n```', cel_passed=True) == []
    wrong = check_problems(CASE, '{"capital": "Lyon"}', cel_passed=False)
    assert wrong[0] == "does not contain 'Paris'"
    assert wrong[1].startswith("does not match the JSON Schema: 'Paris' was expected")
    assert wrong[2] == "fails \"json.capital == 'Paris'\""
    assert "is not JSON" in check_problems(CASE, "Paris, of course", cel_passed=False)


def test_a_revision_passes_when_enough_prompts_pass_and_the_judge_scores_high_enough() -> None:
    good = summarise(SPEC, [CaseOutcome((), 0.9), CaseOutcome((), 0.7)])
    assert (good.cases, good.passed, good.score, good.failures) == (2, 2, "0.8", None)
    bad = summarise(SPEC, [CaseOutcome(("does not contain 'Paris'",), 0.1), CaseOutcome((), 0.3)])
    assert (bad.passed, bad.score) == (0, "0.2")
    assert bad.failures == ["prompt 0: does not contain 'Paris'; scored 0.1 < minScore 0.5",
                            "prompt 1: scored 0.3 < minScore 0.5"]
    ok, message = evaluation_verdict(SPEC, good, bad)
    assert ok and message == "evaluation 2/2 prompts passed (stable 0/2); judge score 0.8 (stable 0.2)"
    ok, message = evaluation_verdict(SPEC, bad, good)
    assert not ok and "evaluation 0/2 prompts passed (stable 2/2)" in message
    assert message.startswith("evaluation 0/2 prompts passed (stable 2/2), below minPassRate 1; "
                              "judge score 0.2 (stable 0.8), below minScore 0.5")
    assert "does not contain 'Paris'" in message
    lenient = SPEC.model_copy(update={"min_pass_rate": 0.5})
    half = summarise(lenient, [CaseOutcome((), 0.9), CaseOutcome(("is not JSON",), 0.9)])
    assert evaluation_verdict(lenient, half, None)[0]


def test_the_planner_waits_for_the_evaluation_and_a_failing_one_rolls_back_at_once() -> None:
    spec = RolloutSpec.model_validate({"strategy": "Canary", "canary": {
        "steps": [{"setWeight": 50}, {"pause": {"duration": "30s"}}],
        "analysis": {"minRequests": 2, "evaluation": SPEC.model_dump(by_alias=True, exclude_none=True)}}})
    o = observe(spec)
    for _ in range(2):
        o = converge(o, plan(o))
    due = plan(o)
    assert due.measure
    traffic = Counts(requests=2)
    measured = replace(o, measurement=Measurement(traffic, traffic, "a", "b"))
    waiting = plan(measured)
    assert waiting.status.phase == "Analysing" and "evaluating the dataset" in (
        waiting.status.analysis.message or "")
    good = summarise(SPEC, [CaseOutcome((), 0.9)] * 2)
    bad = summarise(SPEC, [CaseOutcome(("is not JSON",), 0.1)] * 2)
    failed = plan(replace(measured, evaluation=Evaluation(bad, good),
                          measurement=Measurement(Counts(), traffic, "a", "b")))
    assert failed.status.phase == "RolledBack" and failed.candidate_hash is None
    analysis = failed.status.analysis
    assert analysis is not None and analysis.verdict == "Failed"
    assert analysis.canary is not None and analysis.canary.evaluation == bad
    assert analysis.stable is not None and analysis.stable.evaluation == good
    passed = plan(replace(measured, evaluation=Evaluation(good, good)))
    assert passed.status.analysis is not None and passed.status.analysis.verdict == "Passed"
    assert "evaluation 2/2 prompts passed" in (passed.status.analysis.message or "")
