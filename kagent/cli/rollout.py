"""`kagent rollout status|history|promote|abort|undo AGENT`: watch and steer a canary or
blue-green rollout, as `kubectl rollout` and `kubectl argo rollouts` do for Deployments.

promote and abort are requests: the CLI writes them as an annotation on the Agent and the
controller acts on them at its next look (within seconds) and removes it. undo puts a stored
revision's spec back into the Agent (as `kubectl rollout undo` does), which then rolls out by the
Agent's strategy — for blue-green within its scale-down delay, an instant switch back.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import typer
import yaml
from rich.table import Table

from kagent.api.labels import AGENT_LABEL, ROLLOUT_ACTION_ANNOTATION
from kagent.cli.common import (
    KubeconfigOption,
    NamespaceOption,
    Output,
    OutputOption,
    age,
    api_failure,
    client,
    console,
    fail,
    kagent_resource,
    resolve_namespace,
)
from kagent.cli.tables import print_stripped

app = typer.Typer(help="Watch and steer canary and blue-green rollouts of an Agent.",
                  no_args_is_help=True)
AgentArgument = typer.Argument(..., metavar="AGENT", help="The Agent.")
IN_FLIGHT = frozenset({"Progressing", "Paused", "Analysing", "Promoting"})


def _agent(kube: Any, name: str, namespace: str) -> dict[str, Any]:
    try:
        return kube.get(kagent_resource("Agent"), name, namespace=namespace).to_dict()  # type: ignore[no-any-return]
    except Exception as error:  # noqa: BLE001
        api_failure(error, f"Agent {name!r} in namespace {namespace!r}")


def _revisions(kube: Any, name: str, namespace: str) -> list[dict[str, Any]]:
    from lightkube.resources.apps_v1 import ControllerRevision

    try:
        found = [r.to_dict() for r in kube.list(ControllerRevision, namespace=namespace,
                                                labels={AGENT_LABEL: name})]
    except Exception as error:  # noqa: BLE001
        api_failure(error, f"the revisions of Agent {name!r}")
    return sorted(found, key=lambda r: int(r.get("revision", 0)))


def status_lines(agent: dict[str, Any]) -> list[str]:
    """What `rollout status` prints (pure)."""
    spec_rollout = (agent.get("spec") or {}).get("rollout") or {}
    rollout = (agent.get("status") or {}).get("rollout") or {}
    strategy = spec_rollout.get("strategy", "RollingUpdate")
    if not rollout:
        return [f"strategy: {strategy}", "no canary or blue-green rollout recorded"]
    lines = [f"strategy: {rollout.get('strategy', strategy)}",
             f"phase:    {rollout.get('phase', '-')}",
             f"stable:   revision {rollout.get('stableRevision', '-')} ({rollout.get('stableHash', '-')})"]
    if rollout.get("canaryHash"):
        lines.append(f"new:      revision {rollout.get('canaryRevision', '-')} ({rollout['canaryHash']})")
    if rollout.get("currentStep") is not None:
        steps = ((spec_rollout.get("canary") or {}).get("steps")) or []
        lines.append(f"step:     {rollout['currentStep']}" + (f" of {len(steps)}" if steps else ""))
    if rollout.get("canaryWeight") is not None:
        lines.append(f"weights:  stable {rollout.get('stableWeight', 0)}% "
                     f"({rollout.get('stableReplicas', 0)} pods), new {rollout['canaryWeight']}% "
                     f"({rollout.get('canaryReplicas', 0)} pods)"
                     + (" on the HTTPRoute" if rollout.get("trafficRouter") == "HTTPRoute" else ""))
    if rollout.get("activeSelector"):
        lines.append(f"service:  selects {rollout['activeSelector']}")
    lines.append(f"decision: {rollout.get('reason', '-')}: {rollout.get('message', '')}")
    analysis = rollout.get("analysis")
    if analysis:
        lines.append(f"analysis: {analysis.get('verdict', '-')} ({analysis.get('windowStart', '?')} "
                     f"to {analysis.get('windowEnd', '?')}): {analysis.get('message', '')}")
        for label, key in (("new", "canary"), ("stable", "stable")):
            figures = analysis.get(key) or {}
            lines.append(f"  {label:<7} requests {figures.get('requests', 0)}, errors "
                         f"{figures.get('errors', 0)}, error rate {figures.get('errorRate', '-')}, "
                         f"p99 {figures.get('p99LatencySeconds', '-')}s, tool calls "
                         f"{figures.get('toolCalls', 0)}, tool failure rate "
                         f"{figures.get('toolFailureRate', '-')}, tokens/request "
                         f"{figures.get('tokensPerRequest', '-')}, cost/request "
                         f"${figures.get('costPerRequest', '-')}")
            evaluation = figures.get("evaluation")
            if evaluation:
                lines.append(f"  {'':<7} evaluation {evaluation.get('passed', 0)}/"
                             f"{evaluation.get('cases', 0)} passed"
                             + (f", judge score {evaluation['score']}" if evaluation.get("score")
                                else "")
                             + "".join(f"\n  {'':<9}{failure}"
                                       for failure in evaluation.get("failures") or []))
    return lines


@app.command("status")
def status(
    name: str = AgentArgument,
    namespace: str = NamespaceOption,
    kubeconfig: Path = KubeconfigOption,
    output: Output = OutputOption,
) -> None:
    """Where the rollout is: phase, step, weights, last analysis and decision."""
    ns = resolve_namespace(namespace, kubeconfig)
    agent = _agent(client(kubeconfig), name, ns)
    if output != Output.table:
        rollout = (agent.get("status") or {}).get("rollout") or {}
        typer.echo(json.dumps(rollout, indent=2) if output == Output.json else
                   yaml.safe_dump(rollout, sort_keys=False))
        return
    for line in status_lines(agent):
        console.print(line, highlight=False, markup=False)


@app.command("history")
def history(
    name: str = AgentArgument,
    namespace: str = NamespaceOption,
    kubeconfig: Path = KubeconfigOption,
) -> None:
    """Every kept revision of the Agent: its number, config hash, age and prompt."""
    ns = resolve_namespace(namespace, kubeconfig)
    kube = client(kubeconfig)
    rollout = (_agent(kube, name, ns).get("status") or {}).get("rollout") or {}
    table = Table(box=None, pad_edge=False)
    for column in ("REVISION", "HASH", "AGE", "STATE", "MODEL", "PROMPT"):
        table.add_column(column, overflow="ellipsis", no_wrap=column != "PROMPT")
    for revision in _revisions(kube, name, ns):
        data = revision.get("data") or {}
        config_hash = data.get("configHash", "")
        state = ("stable" if config_hash == rollout.get("stableHash") else
                 "new" if config_hash == rollout.get("canaryHash") and rollout.get("phase") in IN_FLIGHT
                 else "rolled back" if config_hash == rollout.get("abortedHash") else "")
        spec = data.get("spec") or {}
        model = spec.get("model") or {}
        prompt = " ".join(str(spec.get("systemPrompt") or "").split())
        table.add_row(str(revision.get("revision")), config_hash,
                      age((revision.get("metadata") or {}).get("creationTimestamp")), state,
                      f"{model.get('provider', '')}/{model.get('name', '')}",
                      prompt[:60] + ("…" if len(prompt) > 60 else ""))
    print_stripped(console, table)


def _request(name: str, namespace: str, kubeconfig: Path, action: str) -> None:
    from lightkube.types import PatchType

    kube = client(kubeconfig)
    agent = _agent(kube, name, namespace)
    phase = ((agent.get("status") or {}).get("rollout") or {}).get("phase")
    if phase not in IN_FLIGHT:
        fail(f"Agent {name!r} has no rollout in progress (phase {phase or 'none'})",
             "change the Agent to start one; `kagent rollout status` shows where it is")
    try:
        # a request of its own (``promote:1f3a…``): a second promote sent before the controller
        # has cleared the first is a new request, not the first one seen again
        request = f"{action}:{uuid.uuid4().hex[:12]}"
        kube.patch(kagent_resource("Agent"), name,
                   {"metadata": {"annotations": {ROLLOUT_ACTION_ANNOTATION: request}}},
                   namespace=namespace, patch_type=PatchType.MERGE)
    except Exception as error:  # noqa: BLE001
        api_failure(error, f"Agent {name!r} in namespace {namespace!r}")
    console.print(f"agent/{name} {action} requested", highlight=False)


@app.command("promote")
def promote(
    name: str = AgentArgument,
    full: bool = typer.Option(False, "--full", help="Skip the remaining steps and analysis: "
                              "promote the new revision now."),
    namespace: str = NamespaceOption,
    kubeconfig: Path = KubeconfigOption,
) -> None:
    """Go on: end the current pause; with --full promote now (blue-green: switch)."""
    _request(name, resolve_namespace(namespace, kubeconfig), kubeconfig,
             "promote-full" if full else "promote")


@app.command("abort")
def abort(
    name: str = AgentArgument,
    namespace: str = NamespaceOption,
    kubeconfig: Path = KubeconfigOption,
) -> None:
    """Stop the rollout: the stable revision takes every request again."""
    _request(name, resolve_namespace(namespace, kubeconfig), kubeconfig, "abort")


@app.command("undo")
def undo(
    name: str = AgentArgument,
    to_revision: int = typer.Option(None, "--to-revision", help="Revision to go back to "
                                    "(default: the stable one while a new revision is in "
                                    "flight, else the one before it)."),
    namespace: str = NamespaceOption,
    kubeconfig: Path = KubeconfigOption,
) -> None:
    """Put an earlier revision's spec back into the Agent (rolled out by its strategy)."""
    from lightkube.types import PatchType

    ns = resolve_namespace(namespace, kubeconfig)
    kube = client(kubeconfig)
    agent = _agent(kube, name, ns)
    rollout = (agent.get("status") or {}).get("rollout") or {}
    revisions = _revisions(kube, name, ns)
    numbers = {int(r.get("revision", 0)): r for r in revisions}
    if to_revision is None and rollout.get("phase") in IN_FLIGHT and rollout.get("stableRevision"):
        to_revision = int(rollout["stableRevision"])  # the spec in flight goes; stable stays
    if to_revision is None:
        stable = rollout.get("stableRevision") or max(numbers, default=0)
        earlier = [n for n in numbers if n < stable]
        if not earlier:
            fail(f"Agent {name!r} has no revision before revision {stable}",
                 "`kagent rollout history` lists the kept revisions")
        to_revision = max(earlier)
    target = numbers.get(to_revision)
    if target is None:
        fail(f"Agent {name!r} has no revision {to_revision}",
             "`kagent rollout history` lists the kept revisions")
    spec = (target.get("data") or {}).get("spec")
    if not isinstance(spec, dict):
        fail(f"revision {to_revision} of Agent {name!r} holds no spec")
    try:
        kube.patch(kagent_resource("Agent"), name, [{"op": "replace", "path": "/spec", "value": spec}],
                   namespace=ns, patch_type=PatchType.JSON)
    except Exception as error:  # noqa: BLE001
        api_failure(error, f"Agent {name!r} in namespace {ns!r}")
    console.print(f"agent/{name} rolled back to revision {to_revision}", highlight=False)
