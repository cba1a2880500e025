"""Workflow and WorkflowRun: agents collaborating on a task — pipelines, fan-out, DAGs, loops
and routing — with every run recorded in a WorkflowRun."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import ConfigDict, Field

from kagent.api.base import (
    ACCEPTED_COLUMN,
    AGE_COLUMN,
    DNS_LABEL_PATTERN,
    AnyValue,
    Condition,
    Duration,
    FreeForm,
    KagentModel,
    LocalObjectReference,
    ObjectName,
    PrinterColumn,
    Resource,
    StepName,
    cel,
)
from kagent.api.parameters import PARAMETER_LIST, Parameter

CelExpression = Annotated[str, Field(min_length=1, max_length=4096)]
Template = Annotated[str, Field(max_length=65_536)]

STATUS_CONFIG = ConfigDict(validate_assignment=True)
"""Status models are built and changed by the controller: every assignment is checked, so a
misspelt field name or phase fails where it is written, not silently on the API server."""


class RouteCase(KagentModel):
    """Go to an agent when a condition holds."""

    when: CelExpression
    """CEL condition over input, steps and (for the step being routed) content."""
    agent: ObjectName
    """Agent that handles the step when the condition holds."""


class RouteSpec(KagentModel):
    """Choose the step's agent from the content: by CEL cases, or by a router agent."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "has(self.cases) != has(self.router)",
                    "give either cases or router, not both",
                    ".cases",
                ),
                cel(
                    "!has(self.router) || (has(self.choices) && size(self.choices) >= 2)",
                    "a router needs at least two choices",
                    ".choices",
                ),
            ]
        }
    }

    cases: Annotated[list[RouteCase], Field(min_length=1, max_length=64)] | None = None
    """Checked in order; the first case whose condition holds picks the agent."""
    default: ObjectName | None = None
    """Agent used when no case holds (without it, no match fails the step)."""
    router: ObjectName | None = None
    """An agent that reads the content and answers with one of choices."""
    choices: Annotated[list[ObjectName], Field(max_length=64)] | None = None
    """The agents the router may pick; any other answer fails the step."""


class LoopSpec(KagentModel):
    """Repeat a step (or the steps from repeatFrom to this one) until a condition holds."""

    until: CelExpression
    """CEL condition checked after each iteration, e.g.
    'steps.review.output.contains("APPROVED")'."""
    max_iterations: Annotated[int, Field(ge=1, le=100)] = 5
    """Most iterations; reaching it ends the loop (and the step succeeds with the last output)."""
    repeat_from: StepName | None = None
    """First step of the repeated group; it must come before this step (default: this step
    alone)."""


class Backoff(KagentModel):
    """Delay between retries: duration, multiplied by factor each time, capped at maxDuration."""

    duration: Duration = "1s"
    """Delay before the first retry."""
    factor: Annotated[float, Field(ge=1.0, le=10.0)] = 2.0
    """Multiplier for each next delay."""
    max_duration: Duration = "1m"
    """Longest delay."""


class RetryPolicy(KagentModel):
    """Retries of a failed step."""

    limit: Annotated[int, Field(ge=0, le=20)] = 0
    """Retries after the first attempt."""
    backoff: Backoff | None = None
    """Delay between attempts."""


class WorkflowStep(KagentModel):
    """One step: send a message to an agent and keep its answer as the step's output."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "!(has(self.agent) && has(self.route))",
                    "give either agent or route, not both",
                    ".agent",
                ),
                cel(
                    "has(self.agent) || has(self.route)",
                    "give one of agent or route",
                    ".agent",
                ),
            ]
        }
    }

    name: StepName
    """Step name, unique in the workflow; templates refer to it as steps.<name>."""
    agent: ObjectName | None = None
    """Agent that runs the step."""
    input: Template | None = None
    """Message sent to the agent, a template over {{ input.x }} and {{ steps.<name>.output }}
    (also .phase, .agent, .iterations); every step and input it names must exist. Default: the
    outputs of the steps it depends on, or, for a step that depends on none, the run's input
    (such a step needs input when the workflow declares no inputs)."""
    depends_on: Annotated[list[StepName], Field(max_length=100)] | None = None
    """Steps that must finish first (a DAG). Without it, a step follows the step before it."""
    parallel: bool = False
    """Fan out: consecutive parallel steps form a group that starts together, after the step
    before the group (at once for a group that opens the workflow); the step after the group
    waits for all of them. A single parallel step after a plain one simply follows it. A step
    with dependsOn is never part of a group."""
    when: CelExpression | None = None
    """CEL condition (over input and steps); when false the step is Skipped. Its cost is
    budgeted: comprehensions nested over run data are refused."""
    loop: LoopSpec | None = None
    """Repeat until a condition holds."""
    route: RouteSpec | None = None
    """Pick the agent from the content instead of naming it."""
    retry: RetryPolicy | None = None
    """Retries of this step (overrides errorHandling.retry)."""
    timeout: Duration | None = None
    """Longest time for one attempt."""


class ErrorHandling(KagentModel):
    """What a failed step does to the run."""

    strategy: Literal["fail-fast", "continue", "retry"] = "fail-fast"
    """fail-fast: stop the run at the first failed step; continue: let independent branches
    finish, then fail; retry: retry failed steps with retry, then fail fast."""
    retry: RetryPolicy | None = None
    """Retries for every step, with strategy retry."""


class ConcurrencySpec(KagentModel):
    """How many runs of this workflow may be running at once."""

    limit: Annotated[int, Field(ge=1, le=10_000)] = 1
    """Most runs running at once."""
    policy: Literal["queue", "reject", "replace"] = "queue"
    """queue: excess runs wait as Pending, oldest first; reject: excess runs fail with reason
    ConcurrencyLimit; replace: the oldest running run is cancelled for the new one."""


ScheduleName = Annotated[str, Field(min_length=1, max_length=40, pattern=DNS_LABEL_PATTERN)]
"""A schedule's name: short, since it goes into the names and labels of its runs."""


class WorkflowSchedule(KagentModel):
    """Start runs on a cron schedule (named like a Kubernetes CronJob's fields)."""

    name: ScheduleName
    """Schedule name, unique in the workflow; its runs carry it in the label
    kagent.dev/schedule."""
    cron: Annotated[str, Field(min_length=1, max_length=128)]
    """When to start a run: a five-field cron expression (minute hour day-of-month month
    day-of-week, e.g. '0 7 * * MON-FRI') or one of @hourly, @daily (@midnight), @weekly,
    @monthly, @yearly (@annually)."""
    time_zone: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    """IANA time zone the cron expression is read in, e.g. Europe/Paris (default UTC). Across a
    daylight-saving change a time that does not exist runs once just after the change, and a
    time that happens twice runs once (as cron does)."""
    input: FreeForm | None = None
    """Input values of each run, by parameter name (checked against spec.input at admission)."""
    suspend: bool = False
    """Start no runs while true (runs already started go on). On resume, the latest slot missed
    while suspended still starts unless startingDeadlineSeconds has passed, as with a CronJob."""
    starting_deadline_seconds: Annotated[int, Field(ge=1, le=31_536_000)] | None = None
    """A slot not started within this many seconds of its time (the controller was down or
    busy) is skipped with an Event (reason MissedSchedule). Without it, after any downtime only
    the latest missed slot is started, never a backlog."""
    successful_runs_history_limit: Annotated[int, Field(ge=0, le=1000)] = 3
    """Succeeded runs of this schedule to keep; older ones are deleted."""
    failed_runs_history_limit: Annotated[int, Field(ge=0, le=1000)] = 1
    """Failed runs of this schedule to keep; older ones are deleted."""


class WorkflowSpec(KagentModel):
    """Desired workflow."""

    description: Annotated[str, Field(max_length=4096)] | None = None
    """What the workflow does."""
    input: Annotated[list[Parameter], Field(max_length=64, json_schema_extra=PARAMETER_LIST)] | None = None
    """Input parameters of a run."""
    steps: Annotated[
        list[WorkflowStep],
        Field(
            min_length=1,
            max_length=200,
            json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
        ),
    ]
    """The steps, in order."""
    output: dict[str, Template] | None = None
    """The run's result: a name for each template, e.g. report: '{{ steps.write.output }}'.
    Default: the output of the last step."""
    error_handling: ErrorHandling | None = None
    """What a failed step does."""
    timeout: Duration | None = None
    """Longest time for a whole run (including time waiting as Pending)."""
    concurrency: ConcurrencySpec | None = None
    """Limit on runs at once."""
    ttl_seconds_after_finished: Annotated[int, Field(ge=0)] | None = None
    """Delete finished runs this many seconds after they finish."""
    schedules: Annotated[
        list[WorkflowSchedule],
        Field(
            max_length=16,
            json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
        ),
    ] | None = None
    """Start runs on cron schedules; concurrency applies to them as to any run."""


class ScheduleStatus(KagentModel):
    """Observed state of one schedule."""

    model_config = STATUS_CONFIG

    name: str
    """Schedule name."""
    last_schedule_time: str | None = None
    """The slot the latest run was started for."""
    next_schedule_time: str | None = None
    """The next slot (unset while the schedule is suspended)."""
    last_run: str | None = None
    """The WorkflowRun started for lastScheduleTime."""
    last_missed_time: str | None = None
    """The latest slot skipped because startingDeadlineSeconds had passed."""


class WorkflowStatus(KagentModel):
    """Observed state of a Workflow."""

    model_config = STATUS_CONFIG

    observed_generation: int | None = None
    """The .metadata.generation this status describes."""
    conditions: list[Condition] | None = None
    """Accepted: the workflow is valid and its agents exist (False with reason Invalid, or
    AgentNotFound naming the missing agents; runs wait for missing agents)."""
    running: int | None = None
    """Runs now running."""
    pending: int | None = None
    """Runs waiting (queued or waiting for agents)."""
    schedules: list[ScheduleStatus] | None = None
    """Per schedule: the last and next slot."""


class Workflow(Resource):
    """A multi-agent workflow."""

    kind_name: ClassVar[str] = "Workflow"
    plural: ClassVar[str] = "workflows"
    short_names: ClassVar[tuple[str, ...]] = ("wf",)
    printer_columns: ClassVar[tuple[PrinterColumn, ...]] = (
        PrinterColumn(name="Steps", json_path=".spec.steps[*].name", priority=1),
        ACCEPTED_COLUMN,
        PrinterColumn(name="Running", json_path=".status.running", type="integer"),
        PrinterColumn(name="Pending", json_path=".status.pending", type="integer"),
        AGE_COLUMN,
    )

    kind: Literal["Workflow"] = "Workflow"
    """Always Workflow."""
    spec: WorkflowSpec
    """Desired workflow."""
    status: WorkflowStatus | None = None
    """Observed state, written by the controller."""


RunPhase = Literal["Pending", "Running", "Succeeded", "Failed"]
StepPhase = Literal["Pending", "Running", "Succeeded", "Failed", "Skipped"]


class Usage(KagentModel):
    """Model usage."""

    model_config = STATUS_CONFIG

    input_tokens: int = 0
    """Tokens sent to models."""
    output_tokens: int = 0
    """Tokens models generated."""
    cost: float = 0.0
    """What the models cost, in US dollars (each model's pricing, else the default price
    table; see docs/budgets.md)."""
    requests: int = 0
    """Model calls."""


class OutputReference(KagentModel):
    """Where the full text of an output too large for the status is kept."""

    model_config = STATUS_CONFIG

    config_map: ObjectName
    """ConfigMap in the run's namespace."""
    key: str
    """Key in the ConfigMap."""


class StepStatus(KagentModel):
    """Observed state of one step."""

    model_config = STATUS_CONFIG

    name: str
    """Step name."""
    phase: StepPhase = "Pending"
    """Pending, Running, Succeeded, Failed or Skipped."""
    agent: str | None = None
    """Agent that ran (or is running) the step; for routed steps, the one chosen."""
    attempts: int = 0
    """Attempts started."""
    iterations: int | None = None
    """Loop iterations completed."""
    started_at: str | None = None
    """When the first attempt started."""
    finished_at: str | None = None
    """When the step finished."""
    output: str | None = None
    """The agent's answer, cut to at most 4096 bytes (less when the workflow has many steps:
    the run's outputs share 256 KiB of status); see outputRef for the full text."""
    output_ref: OutputReference | None = None
    """Where the full answer is kept when it was cut."""
    error: str | None = None
    """Why the last attempt failed."""
    usage: Usage | None = None
    """Model usage of the step."""
    model: str | None = None
    """The model that gave the step's answer (``provider/name``): the agent's ``model`` or, when
    it could not answer, one of its ``model.fallbacks``."""
    task_id: str | None = None
    """A2A task id of the last attempt (the idempotency key of an in-flight attempt)."""


MAX_RUN_ATTEMPTS = 100
"""Attempts a run may have (its first and its retries); past it, start a new run."""
RUN_ATTEMPT_HISTORY = 20
"""Attempts kept in a run's status.attempts (the most recent ones)."""


class RunRetryRequest(KagentModel):
    """A request for another attempt of the run."""

    attempt: Annotated[int, Field(ge=2, le=MAX_RUN_ATTEMPTS)]
    """The number of the attempt to start: the run's status.attempt + 1 (2 for the first
    retry). A number the run has already reached is not acted on again."""
    from_step: StepName | None = None
    """Also run this step again, and every step that depends on it (directly or not), even if
    it succeeded. Without it only the failed and unfinished steps and those after them run."""


class WorkflowRunSpec(KagentModel):
    """What to run."""

    workflow_ref: Annotated[
        LocalObjectReference,
        Field(json_schema_extra={"x-kubernetes-validations": [
            cel("self == oldSelf", "workflowRef is immutable")
        ]}),
    ]
    """The Workflow to run, in the same namespace."""
    input: FreeForm | None = None
    """Input values, by parameter name."""
    cancel: bool = False
    """Set to true to cancel the run: in-flight steps are stopped and the run fails with reason
    Cancelled."""
    retry: RunRetryRequest | None = None
    """Ask for another attempt of a Failed (or cancelled) run: its failed and unfinished steps,
    and every step after them, run again; succeeded steps keep their outputs. Set attempt to
    the run's status.attempt + 1 (``kagent workflow retry`` does it); the controller acts on
    each attempt number once."""


class RunAttempt(KagentModel):
    """One attempt of a run: the first, or a retry."""

    model_config = STATUS_CONFIG

    attempt: int
    """1 for the first attempt, 2 for the first retry, …"""
    started_at: str | None = None
    """When the attempt began (for a retry: when the controller acted on it)."""
    from_step: str | None = None
    """The spec.retry.fromStep the retry asked for."""
    steps: Annotated[list[str], Field(max_length=200)] | None = None
    """The steps the retry ran again (the others kept their outcome and output)."""
    previous_reason: str | None = None
    """How the attempt before it ended (its reason)."""


class WorkflowRunStatus(KagentModel):
    """Observed state of a run."""

    model_config = STATUS_CONFIG

    phase: RunPhase | None = None
    """Pending (waiting: queued, or for agents to be ready), Running, Succeeded or Failed."""
    reason: str | None = None
    """Why the run is in its phase, e.g. WaitingForAgent, Queued, StepFailed, Timeout,
    Cancelled, ConcurrencyLimit, InvalidInput (a required input without a value),
    AgentNotReady (an agent stayed missing or not Ready too long)."""
    message: str | None = None
    """Details for humans."""
    started_at: str | None = None
    """When the first step started."""
    finished_at: str | None = None
    """When the run finished."""
    duration: str | None = None
    """How long the run took (or has taken so far)."""
    steps: list[StepStatus] | None = None
    """Per-step state."""
    output: dict[str, AnyValue] | None = None
    """The run's result, mapped by spec.output."""
    usage: Usage | None = None
    """Model usage of the whole run."""
    observed_generation: int | None = None
    """The .metadata.generation this status describes."""
    conditions: list[Condition] | None = None
    """Conditions of the run."""
    workflow_generation: int | None = None
    """The Workflow's generation the run was started from."""
    attempt: int | None = None
    """The attempt the run is on (unset: the first); a spec.retry.attempt not above it has been
    acted on."""
    attempts: Annotated[list[RunAttempt], Field(max_length=RUN_ATTEMPT_HISTORY)] | None = None
    """The run's attempts after the first (the most recent ones): when each began, from which
    step and which steps it ran again."""


class WorkflowRun(Resource):
    """One run of a Workflow, and the record of it."""

    kind_name: ClassVar[str] = "WorkflowRun"
    plural: ClassVar[str] = "workflowruns"
    short_names: ClassVar[tuple[str, ...]] = ("wfr", "run", "runs")
    printer_columns: ClassVar[tuple[PrinterColumn, ...]] = (
        PrinterColumn(name="Workflow", json_path=".spec.workflowRef.name"),
        PrinterColumn(name="Phase", json_path=".status.phase"),
        PrinterColumn(name="Reason", json_path=".status.reason", priority=1),
        PrinterColumn(name="Attempt", json_path=".status.attempt", type="integer", priority=1),
        PrinterColumn(name="Started", json_path=".status.startedAt", type="date"),
        PrinterColumn(name="Duration", json_path=".status.duration"),
        PrinterColumn(name="Input Tokens", json_path=".status.usage.inputTokens", type="integer",
                      priority=1),
        PrinterColumn(name="Output Tokens", json_path=".status.usage.outputTokens",
                      type="integer", priority=1),
        PrinterColumn(name="Cost", json_path=".status.usage.cost", type="number", priority=1),
        PrinterColumn(name="Cancel", json_path=".spec.cancel", type="boolean", priority=1),
        AGE_COLUMN,
    )

    kind: Literal["WorkflowRun"] = "WorkflowRun"
    """Always WorkflowRun."""
    spec: WorkflowRunSpec
    """What to run."""
    status: WorkflowRunStatus | None = None
    """Observed state, written by the controller."""
