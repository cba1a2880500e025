"""The rollout planner, driven step by step as the controller drives it (pure)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from kagent.api.rollout import RolloutSpec
from kagent.controller.rollout.metrics import Counts, judge, parse_counts, window
from kagent.controller.rollout.plan import (
    DeploymentState,
    Measurement,
    Observed,
    Plan,
    plan,
    weight_replicas,
)

T0 = datetime(2026, 1, 1, 12, 0, 0)
CANARY = RolloutSpec.model_validate({"strategy": "Canary", "canary": {
    "steps": [{"setWeight": 50}, {"pause": {"duration": "30s"}}, {"setWeight": 100},
              {"pause": {"duration": "30s"}}],
    "analysis": {"minRequests": 4, "maxErrorRate": 0.1}}})
GOOD = Counts(requests=10, errors=0, buckets={1.0: 10, float("inf"): 10})
BAD = Counts(requests=10, errors=6, buckets={1.0: 10, float("inf"): 10})


def observe(spec: RolloutSpec, **kw: object) -> Observed:
    base = dict(spec=spec, total=2, autoscaled=False, desired_hash="new",
                revisions={"old": 1, "new": 2}, previous=None,
                stable=DeploymentState("old", 2, True), candidate=None, now=T0)
    base.update(kw)
    return Observed(**base)  # type: ignore[arg-type]


def converge(o: Observed, result: Plan) -> Observed:
    """The cluster does what the plan asked: Deployments roll out as told."""
    stable = DeploymentState(result.stable_hash, result.stable_replicas, True)
    candidate = (DeploymentState(result.candidate_hash, result.candidate_replicas, True)
                 if result.candidate_hash else None)
    return replace(o, previous=result.status, stable=stable, candidate=candidate,
                   now=o.now + timedelta(seconds=31), measurement=None, action=None)


def drive(o: Observed, counts: Counts, limit: int = 20) -> list[Plan]:
    plans = []
    for _ in range(limit):
        result = plan(o)
        if result.measure:
            result = plan(replace(o, measurement=Measurement(counts, GOOD, "a", "b")))
        plans.append(result)
        if result.status.phase in ("Healthy", "RolledBack", "Aborted"):
            break
        o = converge(o, result)
    return plans


def test_weights_become_replica_shares_that_never_leave_traffic_without_a_pod() -> None:
    assert weight_replicas(4, 0) == (4, 0)
    assert weight_replicas(4, 20) == (4, 1)
    assert weight_replicas(4, 50) == (2, 2)
    assert weight_replicas(1, 10) == (1, 1)
    assert weight_replicas(4, 100) == (0, 4)


def test_a_good_canary_moves_through_its_steps_and_is_promoted() -> None:
    plans = drive(observe(CANARY), GOOD)
    steps = [(p.status.phase, p.status.current_step, p.stable_replicas, p.candidate_replicas)
             for p in plans]
    assert steps[0] == ("Progressing", 0, 1, 1)  # 50%: one stable, one canary pod
    assert ("Progressing", 3, 0, 2) in steps  # 100% reached, then analysed again
    final = plans[-1]
    assert final.status.phase == "Healthy" and final.status.stable_hash == "new"
    assert final.status.stable_revision == 2 and final.candidate_hash is None
    reasons = [p.decision.reason for p in plans if p.decision]
    assert reasons == ["RolloutStarted", "AnalysisPassed", "AnalysisPassed", "Promoted"]
    assert any(p.open_window for p in plans)


def test_a_failing_canary_is_rolled_back_at_the_first_analysis_with_its_numbers() -> None:
    plans = drive(observe(CANARY), BAD)
    final = plans[-1]
    assert final.status.phase == "RolledBack"
    assert final.stable_hash == "old" and final.stable_replicas == 2 and final.candidate_hash is None
    assert final.decision is not None and final.decision.warning
    assert "error rate 0.6 > maxErrorRate 0.1 (6 of 10 requests failed)" in final.decision.message
    analysis = final.status.analysis
    assert analysis is not None and analysis.step == 1 and analysis.verdict == "Failed"
    assert analysis.canary is not None and analysis.canary.error_rate == "0.6"
    assert analysis.stable is not None and analysis.stable.error_rate == "0"
    # the rolled-back revision is not tried again until the Agent changes
    again = plan(converge(observe(CANARY), final))
    assert again.status.phase == "RolledBack" and again.candidate_hash is None
    fixed = plan(replace(converge(observe(CANARY), final), desired_hash="fixed",
                         revisions={"old": 1, "new": 2, "fixed": 3}))
    assert fixed.status.phase == "Progressing" and fixed.candidate_hash == "fixed"


def test_too_little_traffic_waits_then_fails() -> None:
    spec = CANARY
    o = observe(spec)
    for _ in range(3):
        o = converge(o, plan(o))  # 50% set, then into the pause
    quiet = Counts(requests=1)
    waiting = plan(replace(o, measurement=Measurement(quiet, GOOD, "a", "b")))
    assert waiting.status.phase == "Analysing" and waiting.in_progress
    late = replace(o, now=o.now + timedelta(minutes=11), measurement=Measurement(quiet, GOOD, "a", "b"))
    assert plan(late).status.phase == "RolledBack"


def test_abort_and_a_reverted_spec_remove_the_candidate() -> None:
    o = converge(observe(CANARY), plan(observe(CANARY)))
    aborted = plan(replace(o, action="abort"))
    assert aborted.status.phase == "Aborted" and aborted.action_done and aborted.candidate_hash is None
    reverted = plan(replace(o, desired_hash="old"))
    assert reverted.status.phase == "Healthy" and reverted.candidate_hash is None
    assert reverted.decision is not None and reverted.decision.reason == "RolloutCancelled"


def test_an_indefinite_pause_waits_for_promote() -> None:
    spec = RolloutSpec.model_validate({"strategy": "Canary", "canary": {
        "steps": [{"setWeight": 50}, {"pause": {}}]}})
    o = observe(spec)
    for _ in range(3):
        o = converge(o, plan(o))
    paused = plan(o)
    assert paused.status.phase == "Paused" and paused.requeue is None
    resumed = plan(replace(o, action="promote"))
    assert resumed.action_done and resumed.status.current_step == 2


def test_blue_green_switches_after_the_preview_is_ready_and_keeps_the_old_revision() -> None:
    spec = RolloutSpec.model_validate({"strategy": "BlueGreen", "blueGreen": {
        "scaleDownDelay": "60s", "analysis": {"minRequests": 4, "maxErrorRate": 0.1}}})
    o = observe(spec)
    first = plan(o)
    assert first.service_hash == "old" and first.preview and first.candidate_replicas == 2
    o = replace(o, previous=first.status, candidate=DeploymentState("new", 2, True))
    opened = plan(o)
    assert opened.open_window and opened.service_hash == "old"
    o = replace(o, previous=opened.status)
    measured = plan(replace(o, measurement=Measurement(GOOD, GOOD, "a", "b")))
    assert measured.service_hash == "new" and measured.stable_hash == "old"
    assert measured.decision is not None and measured.decision.reason == "Switched"
    o = replace(o, previous=measured.status, now=T0 + timedelta(seconds=10))
    kept = plan(o)
    assert kept.stable_hash == "old" and kept.stable_replicas == 2 and kept.service_hash == "new"
    undone = plan(replace(o, desired_hash="old"))  # kagent rollout undo, within the delay
    assert undone.service_hash == "old" and undone.candidate_hash is None
    later = plan(replace(o, now=T0 + timedelta(seconds=90)))
    assert later.stable_hash == "new" and later.candidate_hash == "new"
    done = plan(replace(o, now=T0 + timedelta(seconds=95), stable=DeploymentState("new", 2, True)))
    assert done.status.phase == "Healthy" and done.service_hash == "new" and done.candidate_hash is None


def test_a_failing_preview_is_never_switched_to() -> None:
    spec = RolloutSpec.model_validate({"strategy": "BlueGreen", "blueGreen": {
        "analysis": {"minRequests": 4, "maxErrorRate": 0.1}}})
    o = observe(spec, candidate=DeploymentState("new", 2, True))
    o = replace(o, previous=plan(o).status)
    o = replace(o, previous=plan(o).status)
    failed = plan(replace(o, measurement=Measurement(BAD, GOOD, "a", "b")))
    assert failed.status.phase == "RolledBack" and failed.service_hash == "old"


def test_metrics_windows_and_judgement() -> None:
    text = """# TYPE agent_requests_total counter
agent_requests_total{agent="a",protocol="a2a",outcome="success"} 7.0
agent_requests_total{agent="a",protocol="openai",outcome="error"} 3.0
# TYPE agent_request_duration_seconds histogram
agent_request_duration_seconds_bucket{agent="a",protocol="a2a",le="1.0"} 6.0
agent_request_duration_seconds_bucket{agent="a",protocol="a2a",le="+Inf"} 10.0
agent_request_duration_seconds_count{agent="a",protocol="a2a"} 10.0
agent_request_duration_seconds_sum{agent="a",protocol="a2a"} 30.0
# TYPE agent_tool_calls_total counter
agent_tool_calls_total{agent="a",tool="t",outcome="success"} 3.0
agent_tool_calls_total{agent="a",tool="t",outcome="error"} 1.0
"""
    counts = parse_counts(text)
    assert (counts.requests, counts.errors, counts.tool_calls, counts.tool_errors) == (10, 3, 4, 1)
    start = {"p1": Counts(requests=4, errors=1, buckets={1.0: 4, float("inf"): 4})}
    moved = window({"p1": counts, "p2": GOOD}, start)
    assert (moved.requests, moved.errors) == (16, 2)
    restarted = window({"p1": Counts(requests=2)}, {"p1": Counts(requests=9)})
    assert restarted.requests == 2
    from kagent.api.rollout import AnalysisSpec

    verdict = judge(AnalysisSpec(max_p99_latency="500ms", max_tool_failure_rate=0.2), counts, GOOD)
    assert verdict.verdict == "Failed"
    assert "p99 latency" in verdict.message and "tool failure rate 0.25" in verdict.message


def test_a_request_is_acknowledged_only_once_the_status_records_it_and_acted_on_once() -> None:
    """Regression: the action annotation was removed before the status recorded the decision,
    so a reconcile that read the Agent in between (annotation gone, status still Paused) planned
    as if abort had never been asked, and its status write put the phase back to Paused."""
    spec = RolloutSpec.model_validate({"strategy": "Canary", "canary": {
        "steps": [{"setWeight": 50}, {"pause": {}}, {"pause": {}}]}})
    o = observe(spec)
    for _ in range(3):
        o = converge(o, plan(o))
    assert plan(o).status.phase == "Paused"
    aborted = plan(replace(o, action="abort"))
    assert aborted.status.phase == "Aborted" and aborted.status.handled_action == "abort"
    assert not aborted.forget_action  # the status saying so is not written yet
    # the status is written; the annotation is still there: acknowledged now, nothing redone
    recorded = plan(replace(converge(o, aborted), action="abort"))
    assert recorded.status.phase == "Aborted" and recorded.forget_action
    assert recorded.decision is None
    gone = plan(converge(o, recorded))
    assert gone.status.phase == "Aborted" and gone.status.handled_action is None
    assert not gone.forget_action

    # a promote is acted on once, though its annotation outlives the status that records it
    resumed = plan(replace(o, action="promote"))
    assert resumed.status.current_step == 2 and not resumed.forget_action
    again = plan(replace(converge(o, resumed), action="promote"))
    assert again.status.current_step == 2 and again.status.phase == "Paused"
    assert again.forget_action


def test_tokens_and_cost_per_request_are_judged_against_limits_and_the_stable_revision() -> None:
    from kagent.api.rollout import AnalysisSpec

    text = """# TYPE agent_requests_total counter
agent_requests_total{agent="a",protocol="openai",outcome="success"} 4.0
# TYPE agent_llm_tokens_total counter
agent_llm_tokens_total{agent="a",model="m",direction="input"} 300.0
agent_llm_tokens_total{agent="a",model="m",direction="output"} 100.0
# TYPE agent_usage_cost_dollars_total counter
agent_usage_cost_dollars_total{namespace="n",agent="a",model="m",caller="c"} 0.02
"""
    counts = parse_counts(text)
    assert (counts.tokens, counts.cost) == (400, 0.02)
    shown = window({"p": counts}, {"p": Counts(requests=2, tokens=100, cost=0.01)})
    assert (shown.requests, shown.tokens, round(shown.cost, 6)) == (2, 300, 0.01)
    from kagent.controller.rollout.metrics import result

    assert result(counts).tokens_per_request == "100" and result(counts).cost_per_request == "0.005"

    stable = Counts(requests=10, tokens=500, cost=0.01)  # 50 tokens, $0.001 a request
    canary = Counts(requests=10, tokens=1000, cost=0.05)  # 100 tokens, $0.005 a request
    within = AnalysisSpec(max_tokens_per_request=100, max_tokens_per_request_increase=1.0,
                          max_cost_per_request=0.005)
    passed = judge(within, canary, stable)
    assert passed.verdict == "Passed", passed.message
    assert "tokens/request 100 (stable 50)" in passed.message
    assert "cost/request $0.005 (stable $0.001)" in passed.message
    over = judge(AnalysisSpec(max_tokens_per_request=99, max_cost_per_request_increase=0.5),
                 canary, stable)
    assert over.verdict == "Failed"
    assert "tokens per request 100 > maxTokensPerRequest 99" in over.message
    assert "cost per request $0.005 is 400% above the stable revision's $0.001" in over.message
    grown = judge(AnalysisSpec(max_tokens_per_request_increase=0.5), canary, stable)
    assert grown.verdict == "Failed" and "100% above" in grown.message
    # no stable traffic (or nothing spent): an increase cannot be judged, a limit still is
    assert judge(AnalysisSpec(max_tokens_per_request_increase=0.1), canary, Counts()).verdict == "Passed"


def test_with_an_httproute_the_weights_are_exact_and_the_stable_revision_keeps_its_pods() -> None:
    spec = RolloutSpec.model_validate({"strategy": "Canary", "canary": {
        "steps": [{"setWeight": 10}, {"pause": {}}, {"setWeight": 60}, {"pause": {}}]}})
    o = observe(spec, total=4, routed=True)
    first = plan(o)
    assert first.routed and first.status.traffic_router == "HTTPRoute"
    assert (first.stable_replicas, first.candidate_replicas) == (4, 1)
    assert (first.status.stable_weight, first.status.canary_weight) == (90, 10)
    o = converge(o, first)
    paused = plan(converge(o, plan(o)))
    assert paused.status.phase == "Paused" and paused.status.canary_weight == 10
    later = plan(replace(converge(o, plan(o)), action="promote"))
    o = converge(converge(o, plan(o)), later)
    sixty = plan(o)
    assert (sixty.status.stable_weight, sixty.status.canary_weight) == (40, 60)
    assert (sixty.stable_replicas, sixty.candidate_replicas) == (4, 3)
    # without a router the same step is a replica share
    shared = plan(replace(o, routed=False))
    assert shared.status.traffic_router == "ReplicaShare" and not shared.routed
    assert (shared.stable_replicas, shared.candidate_replicas) == (2, 3)


def test_a_second_request_sent_before_the_first_was_cleared_is_acted_on() -> None:
    """The CLI gives each request its own id: a promote sent while the previous promote's
    annotation was still being cleared is not mistaken for it."""
    spec = RolloutSpec.model_validate({"strategy": "Canary", "canary": {
        "steps": [{"setWeight": 50}, {"pause": {}}, {"pause": {}}]}})
    o = observe(spec)
    for _ in range(3):
        o = converge(o, plan(o))
    first = plan(replace(o, action="promote", request="promote:aaa"))
    assert first.status.current_step == 2 and first.status.handled_action == "promote:aaa"
    o = converge(o, first)
    second = plan(replace(o, action="promote", request="promote:bbb"))
    assert second.status.handled_action == "promote:bbb" and not second.forget_action
    assert second.status.phase == "Promoting" or second.status.current_step == 3


def test_a_promote_sent_while_a_weight_is_being_set_ends_the_pause_after_it() -> None:
    spec = RolloutSpec.model_validate({"strategy": "Canary", "canary": {
        "steps": [{"setWeight": 50}, {"pause": {}}]}})
    o = replace(observe(spec), action="promote", request="promote:early")
    moving = plan(o)  # the canary pods are not there yet
    assert moving.status.current_step == 0 and not moving.action_done
    weight_set = plan(replace(o, previous=moving.status, stable=DeploymentState("old", 1, True),
                              candidate=DeploymentState("new", 1, True)))
    assert weight_set.status.current_step == 1 and not weight_set.action_done
    assert weight_set.status.handled_action is None  # still to be acted on
    resumed = plan(replace(o, previous=weight_set.status, stable=DeploymentState("old", 1, True),
                           candidate=DeploymentState("new", 1, True)))
    assert resumed.status.current_step == 2 and resumed.status.handled_action == "promote:early"
