"""Progressive delivery of an Agent: how a changed Agent replaces its pods (rolling update,
canary or blue-green), the analysis that judges a new revision from the runtimes' own metrics,
and the rollout's observed state in the Agent's status.

The shape follows Argo Rollouts (steps of ``setWeight`` and ``pause``; a preview Service and a
scale-down delay for blue-green), with thresholds about what only an agent platform can see:
failed answers, slow answers and failing tool calls.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from kagent.api.base import Duration, IntOrString, KagentModel, cel

RolloutStrategy = Literal["RollingUpdate", "BlueGreen", "Canary"]
RolloutPhase = Literal["Healthy", "Progressing", "Paused", "Analysing", "Promoting",
                       "RolledBack", "Aborted"]


class PauseStep(KagentModel):
    """Wait before the next step."""

    duration: Duration | None = None
    """How long to wait (``30s``, ``5m``); without it the rollout waits for
    ``kagent rollout promote``."""


class CanaryStep(KagentModel):
    """One step of a canary: set the new revision's share of traffic, or pause."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel("has(self.setWeight) != has(self.pause)",
                    "a canary step sets exactly one of setWeight or pause"),
            ]
        }
    }

    set_weight: Annotated[int, Field(ge=0, le=100)] | None = None
    """Percent of the agent's pods (and so of its traffic) that run the new revision."""
    pause: PauseStep | None = None
    """Wait (a duration, or until promoted) before the next step; the analysis runs at the
    end of every pause that follows a ``setWeight``."""


class AnalysisSpec(KagentModel):
    """What a new revision must measure up to, compared with the stable one over the same
    window, from the runtimes' own /metrics. A threshold left out is not checked."""

    min_requests: Annotated[int, Field(ge=1, le=1_000_000)] = 5
    """Requests the new revision must have answered in the window before it is judged; until
    then the step waits (up to ``timeout``)."""
    max_error_rate: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    """Highest share of requests that may fail (outcome error or limit), from 0 to 1."""
    max_error_rate_increase: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    """Highest amount by which the new revision's error rate may exceed the stable one's."""
    max_p99_latency: Duration | None = None
    """Slowest 99th-percentile request duration allowed (``5s``)."""
    max_tool_failure_rate: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    """Highest share of tool calls that may fail, from 0 to 1."""
    timeout: Duration = "10m"
    """Longest a step waits for ``minRequests``; then the revision fails analysis (no traffic
    is no evidence)."""


class CanarySpec(KagentModel):
    """Canary: a second Deployment with the new revision beside the stable one, both behind
    the Agent's Service; the steps move pods (and so traffic) from one to the other."""

    steps: Annotated[list[CanaryStep], Field(min_length=1, max_length=32)] | None = None
    """The steps, in order (default: setWeight 20, pause 30s, setWeight 50, pause 30s). The
    new revision is promoted after the last one."""
    analysis: AnalysisSpec | None = None
    """Thresholds; without them a step passes when its pause is over."""


class BlueGreenSpec(KagentModel):
    """Blue-green: the new revision comes up beside the active one, behind a preview Service
    (``<agent>-preview``); the Agent's Service switches to it once it is Ready and analysed."""

    auto_promote: bool = True
    """Switch as soon as the preview is Ready and its analysis passes; false waits for
    ``kagent rollout promote``."""
    scale_down_delay: Duration = "5m"
    """How long the previous revision keeps running after the switch, for an instant
    ``kagent rollout undo``."""
    analysis: AnalysisSpec | None = None
    """Thresholds the preview must meet (from traffic sent to the preview Service)."""


class RolloutSpec(KagentModel):
    """How a changed Agent replaces its pods."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel("!has(self.canary) || self.strategy == 'Canary'",
                    "canary settings need strategy Canary", ".canary"),
                cel("!has(self.blueGreen) || self.strategy == 'BlueGreen'",
                    "blueGreen settings need strategy BlueGreen", ".blueGreen"),
            ]
        }
    }

    strategy: RolloutStrategy = "RollingUpdate"
    """RollingUpdate (default), Canary (steps move a share of pods to the new revision,
    analysed on the way) or BlueGreen (switch the Service once the new revision is Ready and
    analysed)."""
    max_surge: IntOrString | None = None
    """RollingUpdate: extra pods during the rollout (default 25%)."""
    canary: CanarySpec | None = None
    """Canary settings."""
    blue_green: BlueGreenSpec | None = None
    """Blue-green settings."""
    revision_history_limit: Annotated[int, Field(ge=1, le=100)] = 10
    """How many earlier revisions are kept (as ControllerRevisions) for ``kagent rollout
    undo``."""


class AnalysisResult(KagentModel):
    """What the analysis measured for one revision over one window."""

    requests: int = 0
    """Requests answered in the window."""
    errors: int = 0
    """Requests that failed (outcome error or limit)."""
    error_rate: str | None = None
    """errors / requests, as a decimal string (``0.25``)."""
    p99_latency_seconds: str | None = None
    """99th-percentile request duration, in seconds, as a decimal string."""
    tool_calls: int = 0
    """Tool calls made in the window."""
    tool_failure_rate: str | None = None
    """Failed tool calls / tool calls, as a decimal string."""


class RolloutAnalysis(KagentModel):
    """The last analysis: both revisions over the same window, and the verdict."""

    step: int | None = None
    """The canary step it judged."""
    window_start: str | None = None
    """When the window opened (RFC 3339)."""
    window_end: str | None = None
    """When the window closed (RFC 3339)."""
    canary: AnalysisResult | None = None
    """The new revision."""
    stable: AnalysisResult | None = None
    """The stable revision."""
    verdict: Literal["Passed", "Failed", "Inconclusive"] | None = None
    """Passed, Failed or Inconclusive (not enough requests yet)."""
    message: str | None = None
    """Which threshold decided, with the numbers."""


class RolloutStatus(KagentModel):
    """Where a canary or blue-green rollout is."""

    strategy: RolloutStrategy | None = None
    """The strategy in force."""
    phase: RolloutPhase | None = None
    """Healthy (one revision, nothing in flight), Progressing, Paused (waiting for promote),
    Promoting, RolledBack (analysis failed; the stable revision serves) or Aborted."""
    stable_revision: int | None = None
    """Revision number (ControllerRevision) serving as stable / active."""
    stable_hash: str | None = None
    """Config hash of the stable revision."""
    canary_revision: int | None = None
    """Revision number of the new (canary or preview) revision."""
    canary_hash: str | None = None
    """Config hash of the new revision."""
    current_step: int | None = None
    """Index of the canary step in progress."""
    step_started_at: str | None = None
    """When the current step (or pause) started (RFC 3339)."""
    stable_weight: int | None = None
    """Percent of pods running the stable revision."""
    canary_weight: int | None = None
    """Percent of pods running the new revision."""
    stable_replicas: int | None = None
    """Pods asked of the stable Deployment."""
    canary_replicas: int | None = None
    """Pods asked of the new revision's Deployment."""
    active_selector: str | None = None
    """Blue-green: the config hash the Agent's Service selects."""
    switched_at: str | None = None
    """Blue-green: when the Service switched (the old revision is kept until
    scaleDownDelay has passed)."""
    previous_hash: str | None = None
    """Blue-green: the revision the Service served before the switch (kept for undo)."""
    analysis: RolloutAnalysis | None = None
    """The last analysis."""
    reason: str | None = None
    """Why the last decision was taken."""
    message: str | None = None
    """The last decision, in words."""
    aborted_hash: str | None = None
    """A new revision that was rolled back or aborted: it is not tried again until the Agent
    changes."""


DEFAULT_CANARY_STEPS = (
    CanaryStep(set_weight=20), CanaryStep(pause=PauseStep(duration="30s")),
    CanaryStep(set_weight=50), CanaryStep(pause=PauseStep(duration="30s")),
)


def canary_steps(spec: RolloutSpec) -> list[CanaryStep]:
    """The steps a canary goes through: the declared ones, else the defaults."""
    if spec.canary is not None and spec.canary.steps:
        return list(spec.canary.steps)
    return list(DEFAULT_CANARY_STEPS)


def rollout_problems(spec: RolloutSpec, *, autoscaled: bool, field: str = "spec.rollout"
                     ) -> list[tuple[str, str]]:
    """What is wrong with a rollout spec beyond its schema, as (field, message) pairs: shared
    by the webhook (which refuses) and the controller (which reports InvalidSpec)."""
    problems: list[tuple[str, str]] = []
    if spec.strategy == "Canary" and autoscaled:
        problems.append((f"{field}.strategy", "Canary moves traffic by replica share and needs "
                         "a fixed replica count: use spec.replicas instead of spec.scaling"))
    last_weight = -1
    for i, step in enumerate((spec.canary.steps or []) if spec.canary else []):
        where = f"{field}.canary.steps[{i}]"
        if (step.set_weight is None) == (step.pause is None):
            problems.append((where, "a step sets exactly one of setWeight or pause"))
            continue
        if step.set_weight is not None:
            if step.set_weight < last_weight:
                problems.append((f"{where}.setWeight", f"{step.set_weight} is below the previous "
                                 f"step's {last_weight}: weights only grow (abort to go back)"))
            last_weight = step.set_weight
        if step.pause is not None and step.pause.duration is not None:
            problems += _duration_problems(step.pause.duration, f"{where}.pause.duration")
    analyses = [(f"{field}.canary.analysis", spec.canary.analysis if spec.canary else None),
                (f"{field}.blueGreen.analysis", spec.blue_green.analysis if spec.blue_green else None)]
    for where, analysis in analyses:
        if analysis is None:
            continue
        if analysis.max_p99_latency is not None:
            problems += _duration_problems(analysis.max_p99_latency, f"{where}.maxP99Latency")
        problems += _duration_problems(analysis.timeout, f"{where}.timeout")
        if analysis.max_error_rate is None and analysis.max_error_rate_increase is None \
                and analysis.max_p99_latency is None and analysis.max_tool_failure_rate is None:
            problems.append((where, "declares no threshold: give at least one of maxErrorRate, "
                             "maxErrorRateIncrease, maxP99Latency or maxToolFailureRate"))
    if spec.blue_green is not None:
        problems += _duration_problems(spec.blue_green.scale_down_delay,
                                       f"{field}.blueGreen.scaleDownDelay", allow_zero=True)
    return problems


def _duration_problems(text: str, field: str, allow_zero: bool = False) -> list[tuple[str, str]]:
    from kagent.api.base import parse_duration

    try:
        seconds = parse_duration(text).total_seconds()
    except ValueError as error:
        return [(field, str(error))]
    if seconds <= 0 and not allow_zero:
        return [(field, f"{text} must be longer than zero")]
    if seconds > 7 * 24 * 3600:
        return [(field, f"{text} is longer than the 168h allowed")]
    return []
