"""One step of a run as its page shows it: the message it was sent, its answer, error, tokens
and timing (pure).

A step's status holds its answer (cut to a bound; the full text is in the run's outputs
ConfigMap) but not the message the agent received, so that is rendered here with the workflow
engine's own template functions over the run's input and the outputs recorded so far — the same
text the engine sent, unless a loop has moved the outputs it reads on since.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from kagent.api.workflow import WorkflowSpec


def outputs_of(steps: list[dict[str, Any]], full: dict[str, str]) -> dict[str, str]:
    """Each step's output: the full text where it was kept aside, else the status's."""
    outputs: dict[str, str] = {}
    for step in steps:
        ref = step.get("outputRef") or {}
        key = ref.get("key")
        outputs[step["name"]] = full[key] if key in full else step.get("output") or ""
    return outputs


def step_input(spec: dict[str, Any], run: dict[str, Any], name: str,
               full_outputs: dict[str, str]) -> dict[str, Any]:
    """``{"text": …}`` with the message the step is (or was) sent, ``{"template": …,
    "note": …}`` while it cannot be rendered yet, or ``{"error": …}``."""
    from kagent.workflow.expressions import ExpressionError, render_template
    from kagent.workflow.plan import PlanError, plan
    from kagent.workflow.state import default_input, template_variables

    try:
        parsed = WorkflowSpec.model_validate(spec)
        deps = plan(parsed)
    except (ValidationError, PlanError) as error:
        return {"error": f"the Workflow is not valid: {error}"}
    step = next((s for s in parsed.steps if s.name == name), None)
    if step is None:
        return {"error": f"the Workflow has no step {name!r} (it changed after this run started?)"}
    status = run.get("status") or {}
    recorded = status.get("steps") or []
    mine = next((s for s in recorded if s.get("name") == name), {})
    phase = mine.get("phase") or "Pending"
    if phase == "Pending" or (phase == "Skipped" and not mine.get("startedAt")):
        return {"template": step.input, "note": "not sent yet: the step has not started"}
    run_input = (run.get("spec") or {}).get("input") or {}
    outputs = outputs_of(recorded, full_outputs)
    try:
        if step.input is not None:
            text = render_template(step.input, template_variables(run_input, recorded, outputs))
        else:
            text = default_input(parsed, deps, name, run_input, outputs)
    except ExpressionError as error:
        return {"template": step.input, "error": str(error)}
    return {"text": text, "template": step.input}


def step_detail(spec: dict[str, Any], run: dict[str, Any], name: str,
                full_outputs: dict[str, str]) -> dict[str, Any] | None:
    """Everything the step panel shows; None when the run has no such step."""
    recorded = ((run.get("status") or {}).get("steps")) or []
    mine = next((s for s in recorded if s.get("name") == name), None)
    names = [s.get("name") for s in (spec.get("steps") or [])]
    if mine is None and name not in names:
        return None
    mine = mine or {"name": name, "phase": "Pending", "attempts": 0}
    usage = mine.get("usage") or {}
    output = outputs_of([mine], full_outputs)[name] if mine.get("phase") != "Pending" else ""
    return {
        "name": name,
        "phase": mine.get("phase") or "Pending",
        "agent": mine.get("agent") or next(
            (s.get("agent") for s in spec.get("steps") or [] if s.get("name") == name), None),
        "attempts": mine.get("attempts") or 0,
        "iterations": mine.get("iterations"),
        "startedAt": mine.get("startedAt"),
        "finishedAt": mine.get("finishedAt"),
        "input": step_input(spec, run, name, full_outputs),
        "output": output or None,
        "outputCut": bool(mine.get("outputRef")) and not full_outputs,
        "error": mine.get("error"),
        "usage": {"inputTokens": int(usage.get("inputTokens") or 0),
                  "outputTokens": int(usage.get("outputTokens") or 0),
                  "requests": int(usage.get("requests") or 0)},
    }
