"""Pure decisions of the workflow engine: which steps may start, what a finished step does to
the others, how long to wait before a retry, whether a run may start under its Workflow's
concurrency limit, and how outputs are bounded for the status.

Everything here works on plain status dicts (the camelCase shape stored in WorkflowRun.status),
so the engine's durable record and its in-memory state are the same thing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from kagent.api.base import parse_duration
from kagent.api.workflow import RetryPolicy, WorkflowSpec, WorkflowStep

TERMINAL_STEP_PHASES = frozenset({"Succeeded", "Failed", "Skipped"})
STATUS_OUTPUT_LIMIT = 4096
"""Characters of a step's output kept in the status; the full text goes to a ConfigMap."""
DEPENDENCY_FAILED = "a step it depends on failed"


def initial_steps(spec: WorkflowSpec) -> list[dict[str, Any]]:
    return [{"name": s.name, "phase": "Pending", "attempts": 0} for s in spec.steps]


def merge_steps(spec: WorkflowSpec, recorded: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """The step list for ``spec``, keeping what the status already records (a resumed run)."""
    by_name = {s.get("name"): s for s in recorded or []}
    return [dict(by_name.get(s.name) or {"name": s.name, "phase": "Pending", "attempts": 0})
            for s in spec.steps]


def _blocked(step: dict[str, Any]) -> bool:
    """Failed, or skipped because something before it failed: dependents cannot run."""
    return step.get("phase") == "Failed" or (
        step.get("phase") == "Skipped" and step.get("error") == DEPENDENCY_FAILED
    )


@dataclass(frozen=True)
class Readiness:
    ready: list[str]
    """Pending steps whose dependencies all finished well: start them now."""
    blocked: list[str]
    """Pending steps that can never run because a dependency failed: skip them."""


def readiness(deps: dict[str, list[str]], steps: list[dict[str, Any]]) -> Readiness:
    """Which Pending steps can start, and which are blocked for good.

    A Skipped dependency (its ``when`` was false) counts as done, as in Argo: the dependent runs
    and sees an empty output.
    """
    by_name = {s["name"]: s for s in steps}
    ready: list[str] = []
    blocked: list[str] = []
    for step in steps:
        if step.get("phase") != "Pending":
            continue
        mine = [by_name[d] for d in deps.get(step["name"], []) if d in by_name]
        if any(_blocked(d) for d in mine):
            blocked.append(step["name"])
        elif all(d.get("phase") in TERMINAL_STEP_PHASES for d in mine):
            ready.append(step["name"])
    return Readiness(ready, blocked)


def loop_group(spec: WorkflowSpec, step: WorkflowStep) -> list[str]:
    """The steps a loop repeats: from ``repeatFrom`` to the loop step, in declaration order."""
    names = [s.name for s in spec.steps]
    end = names.index(step.name)
    start = names.index(step.loop.repeat_from) if step.loop and step.loop.repeat_from else end
    return names[start:end + 1]


def reset_for_iteration(steps: list[dict[str, Any]], group: list[str]) -> list[dict[str, Any]]:
    """Steps of a loop group back to Pending for the next iteration; their last outputs stay so
    the next iteration's templates can read them (a reviser reads the review)."""
    reset = []
    for step in steps:
        if step["name"] in group:
            step = {**step, "phase": "Pending", "error": None, "finishedAt": None}
        reset.append(step)
    return reset


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


def template_variables(run_input: dict[str, Any], steps: list[dict[str, Any]],
                       outputs: dict[str, str]) -> dict[str, Any]:
    """What templates and conditions see: ``input`` and ``steps.<name>.{output,phase}``."""
    return {
        "input": run_input,
        "steps": {
            s["name"]: {"output": outputs.get(s["name"], ""), "phase": s.get("phase", "Pending"),
                        "agent": s.get("agent") or "", "iterations": s.get("iterations") or 0}
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
    import re

    mentioned = [c for c in choices if re.search(rf"(?<![\w-]){re.escape(c.lower())}(?![\w-])",
                                                 answer.lower())]
    return mentioned[0] if len(mentioned) == 1 else None


def router_prompt(content: str, choices: list[str]) -> str:
    return (
        "Choose which agent should handle the request below. Answer with exactly one name from "
        f"this list and nothing else: {', '.join(choices)}.\n\nRequest:\n{content}"
    )


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


def sum_usage(steps: list[dict[str, Any]]) -> dict[str, int]:
    total = {"inputTokens": 0, "outputTokens": 0, "requests": 0}
    for step in steps:
        for key in total:
            total[key] += int((step.get("usage") or {}).get(key) or 0)
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
