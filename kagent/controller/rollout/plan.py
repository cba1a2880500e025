"""The rollout planner (pure): given where a canary or blue-green rollout is and what the
controller observed, the next action — which revision each Deployment runs and with how many
pods, what the Agent's Service selects, whether to measure, and the decision's reason.

Argo Rollouts' model, reduced to what an Agent needs: the *stable* Deployment (named like the
Agent) always runs the last promoted revision; a *candidate* Deployment (``-canary`` or
``-preview``) runs the new one while it is judged. Canary moves pods from one to the other in
the declared steps (both behind the Agent's Service, so traffic follows the pod share) and
analyses at the end of each pause; blue-green brings the candidate up at full size behind a
preview Service, switches the Agent's Service to it once it is Ready and analysed, and keeps the
previous revision running for ``scaleDownDelay`` so ``undo`` is instant.

Every call advances at most one step; the controller calls again after ``requeue`` seconds or
when a Deployment changes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeVar

from pydantic import BaseModel

from kagent.api.base import parse_duration
from kagent.api.rollout import (
    AnalysisSpec,
    EvaluationResult,
    RolloutAnalysis,
    RolloutSpec,
    RolloutStatus,
    canary_steps,
)
from kagent.controller.rollout.evaluation import evaluation_verdict
from kagent.controller.rollout.metrics import Counts, judge, result

Action = Literal["promote", "promote-full", "abort"]
POLL_SECONDS = 5.0
"""How soon to look again while something is in flight."""


@dataclass(frozen=True)
class DeploymentState:
    """What the cache says of one of the agent's Deployments."""

    config_hash: str | None
    replicas: int | None
    """spec.replicas (None: left to an autoscaler)."""
    ready: bool
    """Rolled out: every wanted pod runs the template and is available."""


@dataclass(frozen=True)
class Measurement:
    """Both revisions' counts over the analysis window."""

    canary: Counts
    stable: Counts
    window_start: str
    window_end: str


@dataclass(frozen=True)
class Evaluation:
    """Both revisions' results on the evaluation dataset."""

    canary: EvaluationResult
    stable: EvaluationResult | None


@dataclass(frozen=True)
class Observed:
    spec: RolloutSpec
    total: int
    """Pods the Agent asks for (replicas, or scaling.minReplicas)."""
    autoscaled: bool
    desired_hash: str
    """Config hash of the Agent as it is now."""
    revisions: Mapping[str, int]
    """Config hash → revision number of every stored revision (the desired one included)."""
    previous: RolloutStatus | None
    stable: DeploymentState | None
    """The Deployment named like the Agent; None before it exists."""
    candidate: DeploymentState | None
    now: datetime
    action: Action | None = None
    """A ``kagent rollout promote|abort`` not yet acted on."""
    request: str | None = None
    """The annotation's whole value, which tells one request from the next (``promote:1f3a…``
    from the CLI; just the action when written by hand)."""
    measurement: Measurement | None = None
    evaluation: Evaluation | None = None
    """The evaluation dataset's results, once the shell has run it (analysis with an
    evaluation waits for them)."""
    routed: bool = False
    """Canary: the cluster has the Gateway API, so weights go on an HTTPRoute."""


@dataclass(frozen=True)
class Decision:
    """An Event-worthy decision."""

    warning: bool
    reason: str
    message: str


@dataclass(frozen=True)
class Plan:
    status: RolloutStatus
    stable_hash: str
    """The revision the stable Deployment runs."""
    stable_replicas: int
    candidate_hash: str | None
    """The revision of the candidate Deployment; None: no candidate (delete it)."""
    candidate_replicas: int = 0
    service_hash: str | None = None
    """Blue-green: the revision the Agent's Service selects (None: every pod of the Agent)."""
    preview: bool = False
    """Blue-green: a preview Service selecting the candidate."""
    measure: bool = False
    """Analysis is due: measure the window and plan again with the measurement."""
    open_window: bool = False
    """An analysis window starts now: remember every pod's counters."""
    action_done: bool = False
    """The requested action was acted on now (the status records it as handled)."""
    forget_action: bool = False
    """The status read back already records the requested action as handled: remove its
    annotation now (never earlier, or a reconcile reading the Agent in between would see
    neither the request nor its outcome)."""
    decision: Decision | None = None
    requeue: float | None = None
    in_progress: bool = False
    """A new revision is in flight (the Agent is not Ready with its current spec yet)."""
    routed: bool = False
    """Canary: the weights (``status.stableWeight``/``canaryWeight``) go on an HTTPRoute."""


T = TypeVar("T")


def replace(obj: T, **changes: Any) -> T:
    """A copy with some fields changed, for the frozen dataclasses and the API models alike."""
    if isinstance(obj, BaseModel):
        return obj.model_copy(update=changes)  # type: ignore[return-value]
    return dataclasses.replace(obj, **changes)  # type: ignore[type-var]


def weight_replicas(total: int, weight: int) -> tuple[int, int]:
    """(stable, canary) pods for a canary weight, as Argo Rollouts does without a traffic
    router: the canary gets the weight's share rounded up, the stable keeps the rest rounded up
    (at least one pod until the weight is 100), so traffic never lacks a Ready pod."""
    if weight <= 0:
        return total, 0
    if weight >= 100:
        return 0, total
    canary = max(1, math.ceil(total * weight / 100))
    stable = max(1, total - math.floor(total * weight / 100))
    return stable, canary


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(text: str | None) -> datetime | None:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=None) if text else None


def _seconds_since(moment: str | None, now: datetime) -> float:
    started = _parse(moment)
    return (now.replace(tzinfo=None) - started).total_seconds() if started else 0.0


def _elapsed(status: RolloutStatus, now: datetime) -> float:
    return _seconds_since(status.step_started_at, now)


def _matches(state: DeploymentState | None, config_hash: str, replicas: int | None) -> bool:
    return (state is not None and state.ready and state.config_hash == config_hash
            and (replicas is None or state.replicas == replicas))


def plan(o: Observed) -> Plan:
    """The next action. A ``kagent rollout`` request is acted on once: the status records it
    as handled, and its annotation is removed only after that status has been read back."""
    previous = o.previous or RolloutStatus()
    request = (o.request or o.action) if o.action is not None else None
    recorded = request is not None and request == previous.handled_action
    result = _plan(replace(o, action=None) if recorded else o)
    handled = request if result.action_done or recorded else None
    router = None if o.spec.strategy != "Canary" else "HTTPRoute" if o.routed else "ReplicaShare"
    return replace(result, status=replace(result.status, handled_action=handled,
                                          traffic_router=router),
                   forget_action=recorded, routed=o.routed and o.spec.strategy == "Canary")


def _plan(o: Observed) -> Plan:
    previous = o.previous or RolloutStatus()
    stable_hash = previous.stable_hash or (o.stable.config_hash if o.stable else None) or o.desired_hash
    base = RolloutStatus(strategy=o.spec.strategy, stable_hash=stable_hash,
                         stable_revision=o.revisions.get(stable_hash),
                         aborted_hash=previous.aborted_hash, analysis=previous.analysis,
                         previous_hash=previous.previous_hash)
    if stable_hash not in o.revisions:
        # What runs was never stored (the Agent used RollingUpdate before): it cannot be kept
        # beside a new revision, so this change rolls like a Deployment would.
        return _steady(o, replace(base, stable_hash=o.desired_hash,
                                  stable_revision=o.revisions.get(o.desired_hash)),
                       Decision(False, "NoStableRevision", "no stored revision of the running "
                                "pods: updating them in place; later changes roll out by "
                                f"{o.spec.strategy}"))
    if o.desired_hash == stable_hash:
        cancelled = previous.canary_hash is not None and previous.phase not in ("RolledBack", "Aborted")
        decision = Decision(False, "RolloutCancelled", "the Agent went back to the stable revision "
                            f"{base.stable_revision}; the new revision was removed") if cancelled else None
        return _steady(o, replace(base, aborted_hash=None), decision)
    if o.desired_hash == previous.aborted_hash:
        return _steady(o, replace(base, phase=previous.phase, canary_hash=previous.canary_hash,
                                  canary_revision=previous.canary_revision,
                                  reason=previous.reason, message=previous.message),
                       None, rolled_back=True)
    status = replace(base, canary_hash=o.desired_hash, canary_revision=o.revisions.get(o.desired_hash))
    if previous.canary_hash != o.desired_hash or previous.phase in ("RolledBack", "Aborted", "Healthy", None):
        status = replace(status, phase="Progressing", current_step=0, step_started_at=_iso(o.now),
                         analysis=None, switched_at=None, reason="RolloutStarted",
                         message=f"rolling revision {status.canary_revision} out by {o.spec.strategy}")
        started = Decision(False, "RolloutStarted", f"revision {status.canary_revision} "
                           f"({o.desired_hash}) started as {o.spec.strategy} beside stable "
                           f"revision {status.stable_revision}")
        first = _blue_green(o, status) if o.spec.strategy == "BlueGreen" else _canary(o, status)
        return replace(first, decision=first.decision or started)
    status = replace(status, phase=previous.phase, current_step=previous.current_step,
                     step_started_at=previous.step_started_at, switched_at=previous.switched_at,
                     active_selector=previous.active_selector, reason=previous.reason,
                     message=previous.message)
    if o.action == "abort":
        return replace(_roll_back(o, status, "Aborted", "aborted by kagent rollout abort"),
                       action_done=True)
    if o.spec.strategy == "BlueGreen":
        return _blue_green(o, status)
    return _canary(o, status)


def _steady(o: Observed, status: RolloutStatus, decision: Decision | None,
            rolled_back: bool = False) -> Plan:
    """One revision, nothing in flight: the stable Deployment at full size, no candidate."""
    replicas = None if o.autoscaled else o.total
    blue_green = o.spec.strategy == "BlueGreen"
    phase = status.phase if rolled_back else "Healthy"
    status = replace(status, phase=phase, stable_weight=100, canary_weight=0,
                     stable_replicas=replicas, canary_replicas=0, current_step=None,
                     step_started_at=None, switched_at=None,
                     active_selector=status.stable_hash if blue_green else None)
    if not rolled_back:
        status = replace(status, canary_hash=None, canary_revision=None,
                         reason=decision.reason if decision else status.reason or "Stable",
                         message=decision.message if decision else
                         f"revision {status.stable_revision} serves every request")
    assert status.stable_hash is not None
    return Plan(status, status.stable_hash, replicas or 0, None,
                service_hash=status.stable_hash if blue_green else None, decision=decision,
                action_done=o.action is not None, in_progress=rolled_back)


def _roll_back(o: Observed, status: RolloutStatus, phase: Literal["RolledBack", "Aborted"],
               why: str) -> Plan:
    rolled = replace(status, phase=phase, aborted_hash=o.desired_hash, reason=phase,
                     message=f"revision {status.canary_revision} {why}; stable revision "
                     f"{status.stable_revision} serves every request. Change the Agent to roll "
                     "out a fix")
    plan_ = _steady(o, rolled, None, rolled_back=True)
    return replace(plan_, decision=Decision(True, phase, rolled.message or ""))


def _analyse(o: Observed, status: RolloutStatus, analysis: AnalysisSpec, waited: float,
             step: int | None) -> tuple[str, RolloutStatus] | None:
    """The verdict of a due analysis, or None when the shell must measure first."""
    if o.measurement is None:
        return None
    m = o.measurement
    judgement = judge(analysis, m.canary, m.stable)
    verdict, message = judgement.verdict, judgement.message
    canary, stable = result(m.canary), result(m.stable)
    if analysis.evaluation is not None and o.evaluation is None:
        if verdict != "Failed":
            verdict, message = "Inconclusive", f"evaluating the dataset; {message}"
    elif analysis.evaluation is not None and o.evaluation is not None:
        # a failed evaluation is decisive, whatever the traffic so far says
        passed, said = evaluation_verdict(analysis.evaluation, o.evaluation.canary,
                                          o.evaluation.stable)
        canary = replace(canary, evaluation=o.evaluation.canary)
        stable = replace(stable, evaluation=o.evaluation.stable)
        if not passed:
            message = said if verdict != "Failed" else f"{said}; {message}"
            verdict = "Failed"
        else:
            message = f"{message}; {said}"
    if verdict == "Inconclusive" and waited >= parse_duration(analysis.timeout).total_seconds():
        verdict = "Failed"
        message += f" within {analysis.timeout}"
    report = RolloutAnalysis(step=step, window_start=m.window_start, window_end=m.window_end,
                             canary=canary, stable=stable, verdict=verdict, message=message)
    return verdict, replace(status, analysis=report)


def _canary(o: Observed, status: RolloutStatus) -> Plan:
    steps = canary_steps(o.spec)
    analysis = o.spec.canary.analysis if o.spec.canary else None
    index = status.current_step or 0
    weight = next((s.set_weight for s in reversed(steps[:index + 1]) if s.set_weight is not None), 0)
    assert status.stable_hash is not None and status.canary_hash is not None
    if o.action == "promote-full" or index >= len(steps) or status.phase == "Promoting":
        return _promote_canary(o, replace(status, current_step=min(index, len(steps))), weight)
    step = steps[index]
    if o.routed:
        # the HTTPRoute splits traffic by the weight itself: the stable revision keeps all its
        # pods, the new one gets the weight's share of them (at least one)
        stable_n, canary_n = o.total, 0 if weight <= 0 else max(1, math.ceil(o.total * weight / 100))
        stable_weight, canary_weight = 100 - weight, weight
    else:
        stable_n, canary_n = weight_replicas(o.total, weight)
        stable_weight = round(100 * stable_n / (stable_n + canary_n))
        canary_weight = 100 - stable_weight
    status = replace(status, stable_replicas=stable_n, canary_replicas=canary_n,
                     stable_weight=stable_weight, canary_weight=canary_weight)

    def holding(state: RolloutStatus = status, **changes: object) -> Plan:
        fields: dict[str, object] = {"requeue": POLL_SECONDS, **changes}
        return Plan(state, state.stable_hash or "", stable_n, state.canary_hash, canary_n,
                    in_progress=True, **fields)  # type: ignore[arg-type]

    def advance(decision: Decision | None = None, **changes: object) -> Plan:
        nxt = replace(status, current_step=index + 1, step_started_at=_iso(o.now),
                      phase="Progressing", **changes)  # type: ignore[arg-type]
        opens = analysis is not None and index + 1 < len(steps) and steps[index + 1].pause is not None
        # a promote ends a pause: one that arrives while a weight is being set waits for the
        # pause that follows instead of being used up by the weight step
        return Plan(nxt, nxt.stable_hash or "", stable_n, nxt.canary_hash, canary_n,
                    open_window=opens, decision=decision, requeue=0.5, in_progress=True,
                    action_done=o.action is not None and step.pause is not None)

    if step.set_weight is not None:
        if _matches(o.candidate, status.canary_hash, canary_n) and \
                _matches(o.stable, status.stable_hash, stable_n):
            return advance(reason="WeightSet", message=f"{status.canary_weight}% of the pods run "
                           f"revision {status.canary_revision}")
        return holding(replace(status, phase="Progressing", message=f"moving to "
                                      f"{step.set_weight}%: {canary_n} new and {stable_n} stable pods"))
    assert step.pause is not None
    waited = _elapsed(status, o.now)
    if step.pause.duration is None:
        if o.action == "promote":
            return advance(Decision(False, "Resumed", f"step {index} resumed by kagent rollout "
                                    "promote"), reason="Resumed", message="resumed by promote")
        return holding(replace(status, phase="Paused", reason="PausedForPromote",
                                      message=f"paused at step {index} until kagent rollout promote"),
                       requeue=None)
    duration = parse_duration(step.pause.duration).total_seconds()
    if waited < duration and o.action != "promote":
        return holding(requeue=min(POLL_SECONDS, max(duration - waited, 0.5)))
    if analysis is None or o.action == "promote":
        return advance(reason="PauseOver", message=f"step {index} done")
    verdict = _analyse(o, status, analysis, waited - duration, index)
    if verdict is None:
        return holding(measure=True)
    outcome, status = verdict
    assert status.analysis is not None
    if outcome == "Failed":
        return _roll_back(o, status, "RolledBack", f"failed analysis at step {index}: "
                          f"{status.analysis.message}")
    if outcome == "Inconclusive":
        return holding(replace(status, phase="Analysing", reason="WaitingForTraffic",
                                      message=status.analysis.message))
    return advance(Decision(False, "AnalysisPassed", f"revision {status.canary_revision} passed "
                            f"analysis at step {index}: {status.analysis.message}"),
                   reason="AnalysisPassed", message=status.analysis.message)


def _promote_canary(o: Observed, status: RolloutStatus, weight: int) -> Plan:
    """The stable Deployment takes the new revision at full size; the candidate keeps its pods
    until then, and goes once the stable Deployment is rolled out."""
    assert status.canary_hash is not None
    replicas = None if o.autoscaled else o.total
    stable_n, canary_n = weight_replicas(o.total, weight)
    if _matches(o.stable, status.canary_hash, replicas):
        done = replace(status, stable_hash=status.canary_hash, stable_revision=status.canary_revision,
                       phase="Healthy", reason="Promoted", current_step=None, step_started_at=None,
                       message=f"revision {status.canary_revision} promoted")
        decision = Decision(False, "Promoted", f"revision {status.canary_revision} "
                            f"({status.canary_hash}) promoted to stable")
        return _steady(o, done, decision)
    promoting = replace(status, phase="Promoting", reason="Promoting", stable_replicas=replicas,
                        canary_replicas=canary_n,
                        message=f"the stable Deployment takes revision {status.canary_revision}")
    return Plan(promoting, status.canary_hash, replicas or 0, status.canary_hash, canary_n,
                requeue=POLL_SECONDS, in_progress=True, action_done=o.action is not None)


def _blue_green(o: Observed, status: RolloutStatus) -> Plan:
    settings = o.spec.blue_green
    analysis = settings.analysis if settings else None
    auto = settings.auto_promote if settings else True
    delay = parse_duration(settings.scale_down_delay if settings else "5m").total_seconds()
    assert status.stable_hash is not None and status.canary_hash is not None
    replicas = None if o.autoscaled else o.total
    full = o.total
    if status.switched_at is not None:
        # Switched: the previous revision waits scaleDownDelay, then takes the new one too.
        since = _seconds_since(status.switched_at, o.now)
        if since < delay:
            kept = replace(status, phase="Promoting", active_selector=status.canary_hash,
                           message=f"the Service serves revision {status.canary_revision}; "
                           f"revision {status.stable_revision} is kept for "
                           f"{settings.scale_down_delay if settings else '5m'} for undo")
            return Plan(kept, status.stable_hash, replicas or 0, status.canary_hash, full,
                        service_hash=status.canary_hash, preview=True, in_progress=True,
                        requeue=min(POLL_SECONDS, max(delay - since, 0.5)))
        if _matches(o.stable, status.canary_hash, replicas):
            done = replace(status, stable_hash=status.canary_hash,
                           stable_revision=status.canary_revision, previous_hash=status.stable_hash,
                           reason="Promoted", message=f"revision {status.canary_revision} promoted")
            return _steady(o, done, Decision(False, "Promoted", f"revision "
                                             f"{status.canary_revision} ({status.canary_hash}) "
                                             "promoted; the previous revision scaled down"))
        return Plan(replace(status, phase="Promoting"), status.canary_hash, replicas or 0,
                    status.canary_hash, full, service_hash=status.canary_hash, preview=True,
                    in_progress=True, requeue=POLL_SECONDS)

    def waiting(state: RolloutStatus, **changes: object) -> Plan:
        fields: dict[str, object] = {"requeue": POLL_SECONDS, **changes}
        return Plan(state, state.stable_hash or "", replicas or 0, state.canary_hash, full,
                    service_hash=state.stable_hash, preview=True, in_progress=True,
                    **fields)  # type: ignore[arg-type]

    status = replace(status, stable_replicas=replicas, canary_replicas=full,
                     active_selector=status.stable_hash, stable_weight=100, canary_weight=0)
    if not _matches(o.candidate, status.canary_hash, full):
        return waiting(replace(status, phase="Progressing", step_started_at=_iso(o.now),
                                      message=f"the preview of revision {status.canary_revision} "
                                      "is starting"))
    first_ready = status.phase == "Progressing"
    if first_ready and analysis is not None:
        opened = replace(status, phase="Analysing", step_started_at=_iso(o.now),
                         message="the preview is Ready; analysing traffic to the preview Service")
        return waiting(opened, open_window=True)
    passed_message = "the preview is Ready"
    if analysis is not None:
        verdict = _analyse(o, status, analysis, _elapsed(status, o.now), None)
        if verdict is None:
            return waiting(status, measure=True)
        outcome, status = verdict
        assert status.analysis is not None
        if outcome == "Failed":
            return _roll_back(o, status, "RolledBack", f"failed analysis: {status.analysis.message}")
        if outcome == "Inconclusive":
            return waiting(replace(status, phase="Analysing", reason="WaitingForTraffic",
                                          message=status.analysis.message))
        passed_message = f"the preview passed analysis: {status.analysis.message}"
    if not auto and o.action not in ("promote", "promote-full"):
        return waiting(replace(status, phase="Paused", reason="PausedForPromote",
                                      message=passed_message + "; waiting for kagent rollout promote"),
                       requeue=None)
    switched = replace(status, phase="Promoting", switched_at=_iso(o.now), reason="Switched",
                       active_selector=status.canary_hash, previous_hash=status.stable_hash,
                       message=f"the Service switched to revision {status.canary_revision}")
    return Plan(switched, status.stable_hash, replicas or 0, status.canary_hash, full,
                service_hash=status.canary_hash, preview=True, in_progress=True, requeue=0.5,
                action_done=o.action is not None,
                decision=Decision(False, "Switched", f"{passed_message}; the Service switched to "
                                  f"revision {status.canary_revision}, revision "
                                  f"{status.stable_revision} kept for undo"))
