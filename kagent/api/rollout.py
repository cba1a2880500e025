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

from kagent.api.base import Duration, FreeForm, IntOrString, KagentModel, ObjectName, cel

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


MAX_EVALUATION_CASES = 20
MAX_PROMPT_CHARS = 4096


class EvaluationChecks(KagentModel):
    """What an answer must satisfy; every check given must pass."""

    contains: Annotated[list[Annotated[str, Field(min_length=1, max_length=1024)]],
                        Field(max_length=10)] | None = None
    """Texts the answer must contain (each, case-sensitive)."""
    json_schema: FreeForm | None = None
    """A JSON Schema the answer, parsed as JSON, must satisfy."""
    cel: Annotated[str, Field(min_length=1, max_length=1024)] | None = None
    """A CEL condition over ``answer`` (the text) and ``json`` (the answer parsed as JSON, or
    null) that must give true, with the same cost bounds as Workflow conditions."""


class EvaluationCase(KagentModel):
    """One prompt of the evaluation dataset."""

    prompt: Annotated[str, Field(min_length=1, max_length=MAX_PROMPT_CHARS)]
    """The user message sent to each revision (a new conversation per prompt)."""
    checks: EvaluationChecks | None = None
    """Checks of the answer."""
    criteria: Annotated[str, Field(max_length=MAX_PROMPT_CHARS)] | None = None
    """What the judge should look for in a good answer (the reference answer, the rubric)."""


class JudgeSpec(KagentModel):
    """An Agent that scores every answer from 0 to 1."""

    agent: ObjectName
    """The judge Agent's name (same namespace). It is asked, for each answer, with the prompt,
    the criteria and the answer, and must reply with a JSON object ``{"score": <0..1>,
    "reason": "..."}`` (docs/delivery.md)."""
    min_score: Annotated[float, Field(ge=0.0, le=1.0)] = 0.7
    """Lowest mean score a revision may get."""


class EvaluationSpec(KagentModel):
    """A small dataset of prompts run against both revisions at each analysis, with checks
    and/or a judge Agent; the new revision must pass it."""

    dataset: Annotated[list[EvaluationCase], Field(min_length=1, max_length=MAX_EVALUATION_CASES)]
    """The prompts and their checks."""
    judge: JudgeSpec | None = None
    """Scores every answer with another Agent."""
    min_pass_rate: Annotated[float, Field(ge=0.0, le=1.0)] = 1.0
    """Share of the prompts whose checks must pass (default: all)."""
    answer_timeout: Duration = "60s"
    """Longest one answer (or one judgement) may take; a prompt not answered in time fails."""


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
    max_tokens_per_request: Annotated[int, Field(ge=1, le=100_000_000)] | None = None
    """Most model tokens (input and output, every model call of a request) the new revision
    may use per request, on average over the window."""
    max_tokens_per_request_increase: Annotated[float, Field(ge=0.0, le=100.0)] | None = None
    """Highest relative increase of tokens per request over the stable revision's in the same
    window (``0.2``: at most 20% more)."""
    max_cost_per_request: Annotated[float, Field(gt=0.0, le=1000.0)] | None = None
    """Most the new revision may cost per request, on average, in US dollars (``0.002``),
    priced by the model's ``pricing`` or the default price table."""
    max_cost_per_request_increase: Annotated[float, Field(ge=0.0, le=100.0)] | None = None
    """Highest relative increase of cost per request over the stable revision's in the same
    window (``0.5``: at most 50% more)."""
    evaluation: EvaluationSpec | None = None
    """Prompts with checks and/or a judge, run against both revisions; a new revision that
    fails them is rolled back whatever its metrics say."""
    timeout: Duration = "10m"
    """Longest a step waits for ``minRequests``; then the revision fails analysis (no traffic
    is no evidence)."""

    def declares_threshold(self) -> bool:
        return self.evaluation is not None or \
            any(getattr(self, name) is not None for name in THRESHOLDS)

    def declares_cost_threshold(self) -> bool:
        return self.max_cost_per_request is not None or \
            self.max_cost_per_request_increase is not None


THRESHOLDS = ("max_error_rate", "max_error_rate_increase", "max_p99_latency",
              "max_tool_failure_rate", "max_tokens_per_request", "max_tokens_per_request_increase",
              "max_cost_per_request", "max_cost_per_request_increase")
"""The analysis thresholds (at least one must be declared)."""


class GatewayParent(KagentModel):
    """The Gateway (Gateway API) a canary's HTTPRoute attaches to."""

    name: ObjectName
    """The Gateway's name."""
    namespace: ObjectName | None = None
    """Its namespace (default: the Agent's)."""
    section_name: Annotated[str, Field(min_length=1, max_length=253)] | None = None
    """The Gateway listener to attach to (default: every listener that allows the route)."""


class CanarySpec(KagentModel):
    """Canary: a second Deployment with the new revision beside the stable one, both behind
    the Agent's Service; the steps move pods (and so traffic) from one to the other."""

    steps: Annotated[list[CanaryStep], Field(min_length=1, max_length=32)] | None = None
    """The steps, in order (default: setWeight 20, pause 30s, setWeight 50, pause 30s). The
    new revision is promoted after the last one."""
    analysis: AnalysisSpec | None = None
    """Thresholds; without them a step passes when its pause is over."""
    gateway: GatewayParent | None = None
    """Where the cluster has the Gateway API (its HTTPRoute CRD), the weights are set on an
    HTTPRoute named like the Agent, with the stable and new revisions' Services
    (``<agent>-stable``, ``<agent>-canary``) as weighted backends, attached to this Gateway;
    the stable Deployment then keeps all its pods. Without the CRD, weights are replica
    shares."""


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


class EvaluationResult(KagentModel):
    """How one revision did on the evaluation dataset."""

    cases: int = 0
    """Prompts asked."""
    passed: int = 0
    """Prompts whose answer passed every check (and, with a judge, scored at least minScore)."""
    score: str | None = None
    """The judge's mean score, as a decimal string."""
    failures: list[str] | None = None
    """Why prompts failed (the first few, shortened)."""


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
    tokens_per_request: str | None = None
    """Model tokens (input and output) per request, as a decimal string."""
    cost_per_request: str | None = None
    """Model cost per request in US dollars, as a decimal string."""
    evaluation: EvaluationResult | None = None
    """The evaluation dataset's outcome."""


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
    traffic_router: Literal["ReplicaShare", "HTTPRoute"] | None = None
    """Canary: how weights move traffic — pod shares behind the Agent's Service, or the
    weights of the HTTPRoute named like the Agent (Gateway API)."""
    stable_weight: int | None = None
    """Percent of traffic for the stable revision (of pods, with ReplicaShare)."""
    canary_weight: int | None = None
    """Percent of traffic for the new revision (of pods, with ReplicaShare)."""
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
    handled_action: str | None = None
    """The ``kagent rollout`` request last acted on (the action annotation's value, e.g.
    ``promote:1f3a…``), kept while the annotation is still on the Agent: the annotation is
    removed only once this status is written, so a request is acted on exactly once and never
    lost."""


DEFAULT_CANARY_STEPS = (
    CanaryStep(set_weight=20), CanaryStep(pause=PauseStep(duration="30s")),
    CanaryStep(set_weight=50), CanaryStep(pause=PauseStep(duration="30s")),
)


def canary_steps(spec: RolloutSpec) -> list[CanaryStep]:
    """The steps a canary goes through: the declared ones, else the defaults."""
    if spec.canary is not None and spec.canary.steps:
        return list(spec.canary.steps)
    return list(DEFAULT_CANARY_STEPS)


def rollout_problems(spec: RolloutSpec, *, autoscaled: bool, field: str = "spec.rollout",
                     unpriced_model: str | None = None) -> list[tuple[str, str]]:
    """What is wrong with a rollout spec beyond its schema, as (field, message) pairs: shared
    by the webhook (which refuses) and the controller (which reports InvalidSpec).
    ``unpriced_model`` names the Agent's model when it has no price (a cost threshold on it
    would always measure zero)."""
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
        if analysis.evaluation is not None:
            evaluation = analysis.evaluation
            problems += _duration_problems(evaluation.answer_timeout,
                                           f"{where}.evaluation.answerTimeout")
            for i, case in enumerate(evaluation.dataset):
                if case.checks is None and evaluation.judge is None:
                    problems.append((f"{where}.evaluation.dataset[{i}]", "has no checks and "
                                     "there is no judge: give checks or evaluation.judge"))
        if not analysis.declares_threshold():
            problems.append((where, "declares no threshold: give at least one of maxErrorRate, "
                             "maxErrorRateIncrease, maxP99Latency, maxToolFailureRate, "
                             "maxTokensPerRequest(Increase) or maxCostPerRequest(Increase)"))
        if analysis.declares_cost_threshold() and unpriced_model is not None:
            which = "maxCostPerRequest" if analysis.max_cost_per_request is not None \
                else "maxCostPerRequestIncrease"
            problems.append((f"{where}.{which}", f"the model {unpriced_model} has no price, so "
                             "its cost always measures 0: declare spec.model.pricing"))
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
