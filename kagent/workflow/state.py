"""Pure decisions of the workflow engine: which steps may start, what a finished step does to
the others, how long to wait before a retry, whether a run may start under its Workflow's
concurrency limit, how outputs are bounded, and what the run's status says.

Everything here works on the typed status models of :mod:`kagent.api.workflow` (the shape
stored in WorkflowRun.status), so the engine's durable record and its in-memory state are the
same thing, and a misspelt field fails where it is written.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kagent.api.base import parse_duration
from kagent.api.workflow import (
    RetryPolicy,
    StepStatus,
    Usage,
    WorkflowRunStatus,
    WorkflowSpec,
    WorkflowStep,
)

TERMINAL_STEP_PHASES = frozenset({"Succeeded", "Failed", "Skipped"})
FINISHED_RUN_PHASES = frozenset({"Succeeded", "Failed"})
STATUS_OUTPUT_LIMIT = 4096
"""Characters of a step's output kept in the status; the full text goes to a ConfigMap."""
DEPENDENCY_FAILED = "a step it depends on failed"


def parse_time(text: str | None) -> float | None:
    """Seconds since the epoch of an RFC 3339 time stamp as Kubernetes writes it."""
    if not text:
        return None
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def run_deadline(created: str | None, timeout: str | None, now: float) -> float | None:
    """Wall-clock deadline of a run: its creation plus the Workflow's timeout (time spent
    Pending counts too). ``now`` stands in for a missing creation time."""
    if not timeout:
        return None
    return (parse_time(created) or now) + parse_duration(timeout).total_seconds()


def merge_steps(spec: WorkflowSpec, recorded: list[StepStatus] | None) -> list[StepStatus]:
    """The step list for ``spec``, keeping (copies of) what the status already records (a
    resumed run)."""
    by_name = {s.name: s for s in recorded or []}
    return [by_name[s.name].model_copy() if s.name in by_name else StepStatus(name=s.name)
            for s in spec.steps]


def _blocked(step: StepStatus) -> bool:
    """Failed, or skipped because something before it failed: dependents cannot run."""
    return step.phase == "Failed" or (step.phase == "Skipped" and step.error == DEPENDENCY_FAILED)


@dataclass(frozen=True)
class Readiness:
    ready: list[str]
    """Pending steps whose dependencies all finished well: start them now."""
    blocked: list[str]
    """Pending steps that can never run because a dependency failed: skip them."""


def readiness(deps: dict[str, list[str]], steps: list[StepStatus]) -> Readiness:
    """Which Pending steps can start, and which are blocked for good.

    A Skipped dependency (its ``when`` was false) counts as done, as in Argo: the dependent runs
    and sees an empty output.
    """
    by_name = {s.name: s for s in steps}
    ready: list[str] = []
    blocked: list[str] = []
    for step in steps:
        if step.phase != "Pending":
            continue
        mine = [by_name[d] for d in deps.get(step.name, []) if d in by_name]
        if any(_blocked(d) for d in mine):
            blocked.append(step.name)
        elif all(d.phase in TERMINAL_STEP_PHASES for d in mine):
            ready.append(step.name)
    return Readiness(ready, blocked)


def begin_attempt(step: StepStatus, run_uid: str, now: str, agent: str | None) -> None:
    """Record a new attempt of ``step`` before its request goes out: the attempt's ``taskId``
    (the A2A message id) is what makes re-sending it after a failover idempotent."""
    step.attempts += 1
    step.phase = "Running"
    step.task_id = f"{run_uid}-{step.name}-{step.attempts}"
    step.started_at = step.started_at or now
    step.finished_at = None
    if agent is not None:
        step.agent = agent


def stopped_step(step: StepStatus, message: str, now: str) -> StepStatus:
    """A step as a run that ends without its task leaves it: a Running step Failed."""
    if step.phase != "Running":
        return step
    return step.model_copy(update={"phase": "Failed", "error": f"stopped: {message}", "finished_at": now})


def loop_group(spec: WorkflowSpec, step: WorkflowStep) -> list[str]:
    """The steps a loop repeats: from ``repeatFrom`` to the loop step, in declaration order."""
    names = [s.name for s in spec.steps]
    end = names.index(step.name)
    start = names.index(step.loop.repeat_from) if step.loop and step.loop.repeat_from else end
    return names[start:end + 1]


def reset_for_iteration(steps: list[StepStatus], group: list[str]) -> list[StepStatus]:
    """Steps of a loop group back to Pending for the next iteration; their last outputs stay so
    the next iteration's templates can read them (a reviser reads the review)."""
    return [s.model_copy(update={"phase": "Pending", "error": None, "finished_at": None})
            if s.name in group else s for s in steps]


def retry_policy(spec: WorkflowSpec, step: WorkflowStep) -> RetryPolicy:
    """The step's own retry; else, with errorHandling strategy retry (or any strategy that
    gives a retry policy), the workflow's; else no retries."""
    if step.retry is not None:
        return step.retry
    handling = spec.error_handling
    if handling is not None and handling.retry is not None:
        return handling.retry
    if handling is not None and handling.strategy == "retry":
        return RetryPolicy(limit=3)
    return RetryPolicy(limit=0)


def backoff_delay(policy: RetryPolicy, retry: int) -> float:
    """Seconds to wait before retry number ``retry`` (1 for the first retry)."""
    if policy.backoff is None:
        return 1.0
    first = parse_duration(policy.backoff.duration).total_seconds()
    cap = parse_duration(policy.backoff.max_duration).total_seconds()
    return min(first * policy.backoff.factor ** max(retry - 1, 0), cap)


def fails_fast(spec: WorkflowSpec) -> bool:
    handling = spec.error_handling
    return handling is None or handling.strategy != "continue"


def default_input(spec: WorkflowSpec, deps: dict[str, list[str]], name: str,
                  run_input: dict[str, Any], outputs: dict[str, str]) -> str:
    """A step without ``input`` gets its dependencies' outputs, or the run input."""
    mine = deps.get(name) or []
    if mine:
        return "\n\n".join(outputs.get(d, "") for d in mine if outputs.get(d))
    if len(run_input) == 1:
        only = next(iter(run_input.values()))
        return only if isinstance(only, str) else json.dumps(only)
    return json.dumps(run_input, sort_keys=True) if run_input else ""


def template_variables(run_input: dict[str, Any], steps: list[StepStatus],
                       outputs: dict[str, str]) -> dict[str, Any]:
    """What templates and conditions see: ``input`` and ``steps.<name>.{output,phase}``."""
    return {
        "input": run_input,
        "steps": {
            s.name: {"output": outputs.get(s.name, ""), "phase": s.phase,
                     "agent": s.agent or "", "iterations": s.iterations or 0}
            for s in steps
        },
    }


def bound_output(text: str, limit: int = STATUS_OUTPUT_LIMIT) -> tuple[str, bool]:
    """The text for the status, and whether it was cut (then the full text is kept elsewhere)."""
    if len(text) <= limit:
        return text, False
    return text[:limit], True


def parse_choice(answer: str, choices: list[str]) -> str | None:
    """The agent a router picked: its whole answer is a choice, or exactly one choice appears
    in it as a word. Anything else is no choice."""
    cleaned = answer.strip().strip("`'\".").strip().lower()
    for choice in choices:
        if cleaned == choice.lower():
            return choice
    mentioned = [c for c in choices if re.search(rf"(?<![\w-]){re.escape(c.lower())}(?![\w-])",
                                                 answer.lower())]
    return mentioned[0] if len(mentioned) == 1 else None


def router_prompt(content: str, choices: list[str]) -> str:
    return (
        "Choose which agent should handle the request below. Answer with exactly one name from "
        f"this list and nothing else: {', '.join(choices)}.\n\nRequest:\n{content}"
    )


def add_usage(total: Usage | None, reported: dict[str, int] | None) -> Usage | None:
    """``total`` plus the usage an agent reported for one answer (``kagent.dev/usage``:
    inputTokens, outputTokens, requests)."""
    if not reported:
        return total
    base = total or Usage()
    return Usage(input_tokens=base.input_tokens + int(reported.get("inputTokens") or 0),
                 output_tokens=base.output_tokens + int(reported.get("outputTokens") or 0),
                 requests=base.requests + int(reported.get("requests") or 0))


def sum_usage(steps: list[StepStatus]) -> Usage:
    total = Usage()
    for step in steps:
        if step.usage is not None:
            total.input_tokens += step.usage.input_tokens
            total.output_tokens += step.usage.output_tokens
            total.requests += step.usage.requests
    return total


def format_duration(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def run_status(status: WorkflowRunStatus, steps: list[StepStatus], now: float) -> WorkflowRunStatus:
    """The whole status to write: the run's fields, every step, the usage summed over the
    steps and the duration so far (or in all, once finished)."""
    started = parse_time(status.started_at)
    finished = parse_time(status.finished_at) or now
    update: dict[str, Any] = {"steps": [s.model_copy() for s in steps], "usage": sum_usage(steps)}
    if started is not None:
        update["duration"] = format_duration(max(finished - started, 0))
    return status.model_copy(update=update)


# --- concurrency ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Admission:
    action: str
    """start | wait | reject | replace"""
    replace: str | None = None
    """With replace: the running run to cancel."""


def admit(name: str, limit: int, policy: str, running: list[tuple[str, str]],
          pending: list[tuple[str, str]]) -> Admission:
    """May the Pending run ``name`` start now?

    ``running`` and ``pending`` are (creationTimestamp, name) of the Workflow's other runs
    (``pending`` may include ``name``). Queued runs start in creation order, so a run starts
    only if it is among the oldest pending runs that fit in the free slots.
    """
    free = limit - len(running)
    if policy == "queue":
        queue = sorted(pending)
        position = next((i for i, (_, n) in enumerate(queue) if n == name), len(queue))
        return Admission("start" if position < free else "wait")
    if free > 0:
        return Admission("start")
    if policy == "reject":
        return Admission("reject")
    oldest = min(running)[1]
    return Admission("replace", replace=oldest)
