"""`kagent workflow run|watch|output|cancel|retry|resubmit`: start a Workflow, watch its steps live
(or come back to a run already going), read its results, retry a failed run from where it failed
or run its input again."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import typer
import yaml
from rich.console import Group
from rich.live import Live
from rich.text import Text

from kagent.api.base import API_VERSION
from kagent.api.labels import RESUBMITTED_FROM_ANNOTATION, WORKFLOW_LABEL
from kagent.cli.common import (
    EXIT_ERROR,
    EXIT_USAGE,
    KubeconfigOption,
    NamespaceOption,
    api_failure,
    client,
    console,
    duration,
    elapsed_seconds,
    err_console,
    fail,
    kagent_resource,
    resolve_namespace,
)
from kagent.cli.tables import REFERENCE, TEXT, Column, build_table

WatchOption = typer.Option(False, "--watch", "-w", help="Show the steps live until the end.")
WatchTimeoutOption = typer.Option(None, "--timeout",
                                  help="Stop watching after this many seconds.")

app = typer.Typer(help="Run Workflows and read their results.", no_args_is_help=True)

FINISHED = ("Succeeded", "Failed")
PHASE_STYLE = {"Succeeded": "green", "Failed": "red", "Running": "cyan", "Skipped": "dim",
               "Pending": "yellow"}
OUTPUT_PREVIEW = 40
PHASE_ICON = {"Succeeded": "✓", "Failed": "✗", "Running": "▶", "Skipped": "–", "Pending": "…"}


def parse_inputs(pairs: list[str], parameters: list[dict[str, Any]]) -> dict[str, Any]:
    """``k=v`` pairs into the run's input, typed by the Workflow's parameters (pure).

    Raises ValueError naming the parameter when a pair is malformed, unknown, of the wrong type
    or when a required parameter is missing.
    """
    by_name = {p["name"]: p for p in parameters}
    values: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name:
            raise ValueError(f"--input {pair!r}: write it as NAME=VALUE")
        parameter = by_name.get(name)
        if parameter is None:
            known = ", ".join(by_name) or "none"
            raise ValueError(f"--input {name}: the workflow has no such input (its inputs: {known})")
        values[name] = _typed(name, raw, parameter.get("type", "string"))
        allowed = parameter.get("enum")
        if allowed and values[name] not in allowed:
            raise ValueError(f"--input {name}: {raw!r} is not one of {', '.join(map(str, allowed))}")
    missing = [p["name"] for p in parameters
               if p.get("required") and p["name"] not in values and "default" not in p]
    if missing:
        raise ValueError("missing required input: " + ", ".join(f"--input {m}=…" for m in missing))
    return values


def _typed(name: str, raw: str, kind: str) -> Any:
    if kind == "string":
        return raw
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = None
    checks = {"integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
              "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
              "boolean": lambda v: isinstance(v, bool),
              "object": lambda v: isinstance(v, dict),
              "array": lambda v: isinstance(v, list)}
    check = checks.get(kind)
    if check is not None and not check(value):
        raise ValueError(f"--input {name}: {raw!r} is not a valid {kind}")
    return value if check is not None else raw


STEP_COLUMNS = (Column("STEP", keep=True), Column("AGENT", rank=REFERENCE), Column("PHASE"),
                Column("TRIES"), Column("TIME"), Column("TOKENS"), Column("OUTPUT", rank=TEXT))
"""A step's name is never cut; at a narrow terminal OUTPUT gives way first, then AGENT."""


def steps_view(workflow: dict[str, Any], run: dict[str, Any], width: int = 80) -> Group:
    """The live screen: the run's phase and one row per step of the Workflow, fitted to
    ``width`` columns (pure)."""
    status = run.get("status") or {}
    phase = status.get("phase") or "Pending"
    header = Text.assemble(
        ("run ", "bold"), (run["metadata"]["name"], "bold cyan"), "  ",
        (f"{PHASE_ICON.get(phase, '')} {phase}", PHASE_STYLE.get(phase, "")),
        f"  {_elapsed(status)}",
        (f"  {status.get('reason')}: {status.get('message', '')}" if status.get("reason")
         and phase in ("Pending", "Failed") else "", "dim"))
    recorded = {s["name"]: s for s in status.get("steps") or []}
    rows: list[list[str | Text]] = []
    for step in workflow["spec"].get("steps") or []:
        seen = recorded.get(step["name"], {})
        step_phase = seen.get("phase") or "Pending"
        usage = seen.get("usage") or {}
        tokens = usage.get("inputTokens", 0) + usage.get("outputTokens", 0)
        detail = seen.get("error") if step_phase == "Failed" else seen.get("output")
        rows.append([
            Text(step["name"]), Text(seen.get("agent") or step.get("agent") or "(routed)"),
            Text(f"{PHASE_ICON.get(step_phase, '')} {step_phase}",
                 style=PHASE_STYLE.get(step_phase, "")),
            str(seen.get("attempts", 0)), _elapsed(seen) if seen.get("startedAt") else "-",
            str(tokens) if tokens else "-", Text(_preview(detail))])
    table, _ = build_table(STEP_COLUMNS, rows, width)
    return Group(header, table)


def _preview(text: str | None, width: int = OUTPUT_PREVIEW) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _elapsed(status: dict[str, Any]) -> str:
    seconds = elapsed_seconds(status)
    if seconds is None:
        return ""
    return f"{seconds:.1f}s" if seconds < 120 else duration(seconds)


def _get(kube: Any, kind: str, name: str, namespace: str) -> dict[str, Any]:
    try:
        return kube.get(kagent_resource(kind), name, namespace=namespace).to_dict()
    except Exception as error:  # noqa: BLE001 — a message and an exit code
        api_failure(error, f"{kind} {name!r} in namespace {namespace!r}", kind, namespace)


def watch_run(kube: Any, workflow: dict[str, Any], name: str, namespace: str,
              timeout: float | None) -> dict[str, Any]:
    """Redraw the steps until the run finishes (or ``timeout`` seconds pass); returns the run."""
    deadline = None if timeout is None else time.monotonic() + timeout
    run = _get(kube, "WorkflowRun", name, namespace)
    # The live screen is progress: stderr, so stdout carries only the run's name and output.
    with Live(steps_view(workflow, run, err_console.width), console=err_console,
              refresh_per_second=4, transient=False) as live:
        while (run.get("status") or {}).get("phase") not in FINISHED:
            if deadline is not None and time.monotonic() > deadline:
                break
            time.sleep(0.5)
            run = _get(kube, "WorkflowRun", name, namespace)
            live.update(steps_view(workflow, run, err_console.width))
    if not err_console.is_terminal:
        err_console.line()  # Live leaves its last line open when it is not a terminal
    return run


def _workflow_of(kube: Any, run: dict[str, Any], namespace: str) -> dict[str, Any]:
    """The run's Workflow, for the steps to show; if it is gone, the steps the run recorded."""
    from lightkube.core.exceptions import ApiError

    name = (run.get("spec") or {}).get("workflowRef", {}).get("name", "")
    try:
        return kube.get(kagent_resource("Workflow"), name, namespace=namespace).to_dict()
    except ApiError as error:
        if error.status.code != 404:
            api_failure(error, f"Workflow {name!r} in namespace {namespace!r}", "Workflow",
                        namespace)
    steps = (run.get("status") or {}).get("steps") or []
    return {"spec": {"steps": [{"name": s["name"], "agent": s.get("agent")} for s in steps]}}


def _follow(kube: Any, workflow: dict[str, Any], run_name: str, namespace: str,
            timeout: float | None) -> None:
    """Watch a run to its end and report it: its output (exit 0), or why it failed (exit 1)."""
    try:
        final = watch_run(kube, workflow, run_name, namespace, timeout)
    except KeyboardInterrupt:
        err_console.print(f"stopped watching; the run goes on (come back with `kagent workflow "
                          f"watch {run_name} -n {namespace}`)", highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None
    status = final.get("status") or {}
    phase = status.get("phase")
    if phase == "Succeeded":
        for key, value in (status.get("output") or {}).items():
            console.print(f"\n[bold]{key}[/]")
            typer.echo(value if isinstance(value, str) else json.dumps(value, indent=2))
        return
    if phase == "Failed":
        fail(f"run {run_name} failed: {status.get('reason')}: {status.get('message', '')}",
             f"see `kagent describe run {run_name} -n {namespace}`")
    fail(f"run {run_name} is still {phase or 'Pending'} after {timeout:.0f}s",
         f"come back to it with `kagent workflow watch {run_name} -n {namespace}`", EXIT_ERROR)


def _create_run(kube: Any, ns: str, workflow_name: str, values: dict[str, Any], name: str | None,
                annotations: dict[str, str] | None = None) -> dict[str, Any]:
    """Create a WorkflowRun of ``workflow_name`` with this input; the run as created."""
    metadata: dict[str, Any] = {"namespace": ns, "labels": {WORKFLOW_LABEL: workflow_name}}
    if annotations:
        metadata["annotations"] = annotations
    if name:
        metadata["name"] = name
    else:
        metadata["generateName"] = f"{workflow_name}-"
    body = {"apiVersion": API_VERSION, "kind": "WorkflowRun", "metadata": metadata,
            "spec": {"workflowRef": {"name": workflow_name}, "input": values}}
    try:
        return kube.create(kagent_resource("WorkflowRun")(body)).to_dict()
    except Exception as error:  # noqa: BLE001
        from lightkube.core.exceptions import ApiError

        if isinstance(error, ApiError) and error.status.code in (400, 409, 422):
            fail(f"the run was refused: {error.status.message}", code=EXIT_USAGE)
        api_failure(error, f"Workflow {workflow_name!r} in namespace {ns!r}", "Workflow", ns)


@app.command("run")
def run(
    workflow_name: str = typer.Argument(..., metavar="WORKFLOW", help="The Workflow to run."),
    inputs: list[str] = typer.Option(None, "--input", "-i", help="NAME=VALUE; repeat for more."),
    name: str = typer.Option(None, "--name", help="Name of the WorkflowRun (default: generated)."),
    watch: bool = WatchOption,
    timeout: float = WatchTimeoutOption,
    namespace: str = NamespaceOption,
    kubeconfig: Path = KubeconfigOption,
) -> None:
    """Start a run of WORKFLOW. With --watch, exit 0 if it Succeeded, 1 if it Failed."""
    ns = resolve_namespace(namespace, kubeconfig)
    kube = client(kubeconfig)
    workflow = _get(kube, "Workflow", workflow_name, ns)
    try:
        values = parse_inputs(inputs or [], workflow["spec"].get("input") or [])
    except ValueError as error:
        fail(str(error), f"see the inputs with `kagent describe workflow {workflow_name} -n {ns}`",
             EXIT_USAGE)
    created = _create_run(kube, ns, workflow_name, values, name)
    run_name = created["metadata"]["name"]
    console.print(f"workflowrun/{run_name} created", highlight=False)
    if not watch:
        err_console.print(f"  follow it: kagent workflow watch {run_name} -n {ns}", style="dim",
                          highlight=False, soft_wrap=True)
        return
    _follow(kube, workflow, run_name, ns, timeout)


@app.command("watch")
def watch(
    run_name: str = typer.Argument(..., metavar="RUN", help="The WorkflowRun."),
    timeout: float = WatchTimeoutOption,
    namespace: str = NamespaceOption,
    kubeconfig: Path = KubeconfigOption,
) -> None:
    """Show the steps of a run already started, live until it ends (a finished run: its final
    state). Exit 0 if it Succeeded, 1 if it Failed or is still going at --timeout."""
    ns = resolve_namespace(namespace, kubeconfig)
    kube = client(kubeconfig)
    run = _get(kube, "WorkflowRun", run_name, ns)
    _follow(kube, _workflow_of(kube, run, ns), run_name, ns, timeout)


@app.command("output")
def output(
    run_name: str = typer.Argument(..., metavar="RUN", help="The WorkflowRun."),
    step: str = typer.Option(None, "--step", "-s", help="One step's full answer instead."),
    namespace: str = NamespaceOption,
    kubeconfig: Path = KubeconfigOption,
) -> None:
    """Print a run's output, or one step's full answer (also when the status holds it cut)."""
    ns = resolve_namespace(namespace, kubeconfig)
    kube = client(kubeconfig)
    status = _get(kube, "WorkflowRun", run_name, ns).get("status") or {}
    if step is None:
        if "output" not in status:
            fail(f"run {run_name} has no output yet (phase {status.get('phase') or 'Pending'})")
        typer.echo(json.dumps(status["output"], indent=2, ensure_ascii=False))
        return
    found = next((s for s in status.get("steps") or [] if s["name"] == step), None)
    if found is None:
        names = ", ".join(s["name"] for s in status.get("steps") or []) or "none yet"
        fail(f"run {run_name} has no step {step!r} (steps: {names})", code=EXIT_USAGE)
    ref = found.get("outputRef")
    if ref:
        from lightkube.resources.core_v1 import ConfigMap

        try:
            data = kube.get(ConfigMap, ref["configMap"], namespace=ns).data or {}
        except Exception as error:  # noqa: BLE001
            api_failure(error, f"ConfigMap {ref['configMap']!r} holding the output")
        typer.echo(data.get(ref["key"], found.get("output") or ""))
        return
    if found.get("output") is None:
        fail(f"step {step} has no output (phase {found.get('phase')})")
    typer.echo(found["output"])


@app.command("cancel")
def cancel(
    run_name: str = typer.Argument(..., metavar="RUN", help="The WorkflowRun."),
    namespace: str = NamespaceOption,
    kubeconfig: Path = KubeconfigOption,
) -> None:
    """Cancel a run: its in-flight steps stop and it ends Failed with reason Cancelled."""
    from lightkube.types import PatchType

    ns = resolve_namespace(namespace, kubeconfig)
    kube = client(kubeconfig)
    status = _get(kube, "WorkflowRun", run_name, ns).get("status") or {}
    if status.get("phase") in FINISHED:
        reason = status.get("reason")
        ended = status["phase"] + (f" ({reason})" if reason and reason != status["phase"] else "")
        fail(f"run {run_name} has already finished: {ended}; there is nothing to cancel",
             f"see it with `kagent describe run {run_name} -n {ns}`")
    try:
        kube.patch(kagent_resource("WorkflowRun"), run_name, {"spec": {"cancel": True}}, namespace=ns,
                   patch_type=PatchType.MERGE)
    except Exception as error:  # noqa: BLE001
        api_failure(error, f"WorkflowRun {run_name!r} in namespace {ns!r}", "WorkflowRun", ns)
    console.print(f"workflowrun/{run_name} cancel requested", highlight=False)


RETRY_TAKEN_UP_SECONDS = 60.0
"""How long ``retry --watch`` waits for the controller to take the retry up before watching."""


def retry_request(run: dict[str, Any], from_step: str | None,
                  workflow_steps: list[str] | None) -> dict[str, Any]:
    """The merge patch asking for the next attempt of ``run`` (pure). Raises ValueError, saying
    why, when the run cannot be retried: it is not Failed, a retry is already waiting, or
    ``from_step`` is not a step of its Workflow (``workflow_steps``, when known)."""
    name = run["metadata"]["name"]
    status = run.get("status") or {}
    phase = status.get("phase") or "Pending"
    if phase != "Failed":
        again = (f"; to run it again from the start with the same input: "
                 f"`kagent workflow resubmit {name}`") if phase == "Succeeded" else ""
        raise ValueError(f"run {name} is {phase}; only a Failed (or cancelled) run can be "
                         f"retried{again}")
    current = status.get("attempt") or 1
    asked = ((run.get("spec") or {}).get("retry") or {}).get("attempt") or 0
    if asked > current:
        raise ValueError(f"run {name} already has a retry waiting (attempt {asked}); watch it with "
                         f"`kagent workflow watch {name}`")
    if from_step is not None and workflow_steps is not None and from_step not in workflow_steps:
        raise ValueError(f"--from {from_step}: the run's Workflow has no such step (its steps: "
                         f"{', '.join(workflow_steps)})")
    retry: dict[str, Any] = {"attempt": current + 1, "fromStep": from_step}
    return {"metadata": {"resourceVersion": run["metadata"].get("resourceVersion")},
            "spec": {"retry": retry, "cancel": False}}


def _wait_taken_up(kube: Any, name: str, namespace: str, attempt: int, timeout: float) -> None:
    """Wait until the controller has taken the retry up (the run's status.attempt reaches it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = _get(kube, "WorkflowRun", name, namespace).get("status") or {}
        if (status.get("attempt") or 1) >= attempt:
            return
        time.sleep(0.5)
    fail(f"the controller has not taken up the retry of run {name} after {timeout:.0f}s",
         "is the kagent controller running? `kagent describe run` shows the run's state",
         EXIT_ERROR)


@app.command("retry")
def retry(
    run_name: str = typer.Argument(..., metavar="RUN", help="The failed WorkflowRun."),
    from_step: str = typer.Option(None, "--from", help="Also run this step again (even if it "
                                  "succeeded) and every step after it."),
    watch: bool = WatchOption,
    timeout: float = WatchTimeoutOption,
    namespace: str = NamespaceOption,
    kubeconfig: Path = KubeconfigOption,
) -> None:
    """Retry a Failed (or cancelled) run: its failed and unfinished steps and the steps after
    them run again; succeeded steps keep their outputs (with --from STEP, that step and the
    steps after it run again too). The run keeps its name and records the attempt."""
    from lightkube.core.exceptions import ApiError
    from lightkube.types import PatchType

    ns = resolve_namespace(namespace, kubeconfig)
    kube = client(kubeconfig)
    found = _get(kube, "WorkflowRun", run_name, ns)
    steps = None
    if from_step is not None:
        workflow = _workflow_of(kube, found, ns)
        steps = [s["name"] for s in workflow["spec"].get("steps") or []]
    try:
        patch = retry_request(found, from_step, steps)
    except ValueError as error:
        fail(str(error), f"see it with `kagent describe run {run_name} -n {ns}`", EXIT_USAGE)
    attempt = patch["spec"]["retry"]["attempt"]
    try:
        kube.patch(kagent_resource("WorkflowRun"), run_name, patch, namespace=ns,
                   patch_type=PatchType.MERGE)
    except ApiError as error:
        if error.status.code == 409:
            fail(f"run {run_name} changed while the retry was asked for; try again", code=EXIT_ERROR)
        if error.status.code in (400, 422):
            fail(f"the retry was refused: {error.status.message}", code=EXIT_USAGE)
        api_failure(error, f"WorkflowRun {run_name!r} in namespace {ns!r}", "WorkflowRun", ns)
    where = f" from step {from_step}" if from_step else ""
    console.print(f"workflowrun/{run_name} retry requested (attempt {attempt}{where})",
                  highlight=False)
    if not watch:
        err_console.print(f"  follow it: kagent workflow watch {run_name} -n {ns}", style="dim",
                          highlight=False, soft_wrap=True)
        return
    _wait_taken_up(kube, run_name, ns, attempt, min(timeout or RETRY_TAKEN_UP_SECONDS,
                                                     RETRY_TAKEN_UP_SECONDS))
    _follow(kube, _workflow_of(kube, found, ns), run_name, ns, timeout)


@app.command("resubmit")
def resubmit(
    run_name: str = typer.Argument(..., metavar="RUN", help="The WorkflowRun to run again."),
    name: str = typer.Option(None, "--name", help="Name of the new run (default: generated)."),
    watch: bool = WatchOption,
    timeout: float = WatchTimeoutOption,
    namespace: str = NamespaceOption,
    kubeconfig: Path = KubeconfigOption,
) -> None:
    """Start a fresh run of RUN's Workflow with the same input (every step runs again); prints
    the new run's name. With --watch, exit 0 if it Succeeded, 1 if it Failed."""
    ns = resolve_namespace(namespace, kubeconfig)
    kube = client(kubeconfig)
    found = _get(kube, "WorkflowRun", run_name, ns)
    spec = found.get("spec") or {}
    workflow_name = (spec.get("workflowRef") or {}).get("name", "")
    created = _create_run(kube, ns, workflow_name, dict(spec.get("input") or {}), name,
                          {RESUBMITTED_FROM_ANNOTATION: run_name})
    new_name = created["metadata"]["name"]
    console.print(f"workflowrun/{new_name} created", highlight=False)
    if not watch:
        err_console.print(f"  follow it: kagent workflow watch {new_name} -n {ns}", style="dim",
                          highlight=False, soft_wrap=True)
        return
    _follow(kube, _get(kube, "Workflow", workflow_name, ns), new_name, ns, timeout)
