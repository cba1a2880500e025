"""`kagent get`, `kagent describe`, `kagent logs`: Kagent's resources at a glance."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from kagent.api import KINDS, Resource
from kagent.api.base import GROUP
from kagent.api.labels import AGENT_LABEL
from kagent.cli.common import (
    EXIT_NOT_FOUND,
    EXIT_USAGE,
    KubeconfigOption,
    NamespaceOption,
    Output,
    OutputOption,
    ShowManagedFieldsOption,
    age,
    api_failure,
    client,
    console,
    duration,
    elapsed_seconds,
    err_console,
    fail,
    kagent_resource,
    print_documents,
    resolve_namespace,
)
from kagent.cli.tables import FACT, REFERENCE, TEXT, Column, print_stripped, print_table


def kind_aliases(kinds: Iterable[type[Resource]] = KINDS) -> dict[str, str]:
    """Every name a user may type for a kind, taken from the API types: the names kubectl
    accepts (plural, singular, short names) and the kind itself, in lower case (pure)."""
    aliases: dict[str, str] = {}
    for kind in kinds:
        for alias in (kind.plural, kind.singular(), *kind.short_names, kind.kind_name.lower()):
            if aliases.setdefault(alias, kind.kind_name) != kind.kind_name:
                raise ValueError(f"{alias!r} names both {aliases[alias]} and {kind.kind_name}")
    return aliases


KIND_BY_ALIAS = kind_aliases()
KIND_NAMES = " | ".join(kind.plural for kind in KINDS)
KIND_SINGULARS = " | ".join(kind.singular() for kind in KINDS)


def kind_of(text: str) -> str:
    kind = KIND_BY_ALIAS.get(text.lower())
    if kind is None:
        fail(f"unknown kind {text!r}", f"use one of: {KIND_NAMES.replace(' |', ',')} (or a "
             "singular or short name, as kubectl takes them)", EXIT_USAGE)
    return kind


def _as_dict(obj: Any) -> dict[str, Any]:
    return obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for condition in status.get("conditions") or []:
        if condition.get("type") == kind:
            return condition
    return None


def _condition_text(status: dict[str, Any], kind: str) -> str:
    condition = _condition(status, kind)
    if condition is None:
        return "[dim]-[/]"
    value = condition.get("status", "Unknown")
    color = {"True": "green", "False": "red"}.get(value, "yellow")
    reason = condition.get("reason")
    return f"[{color}]{value}[/]" + (f" ({reason})" if reason and value != "True" else "")


def _schedule_times(status: dict[str, Any], now: datetime | None = None) -> list[str]:
    """NEXT and LAST of a Workflow's schedules: the soonest next slot ("in 4m") and the latest
    slot a run was started for ("3m ago"); "-" when there is none (pure)."""
    schedules = status.get("schedules") or []
    upcoming = [datetime.fromisoformat(s["nextScheduleTime"]) for s in schedules if s.get("nextScheduleTime")]
    started = [datetime.fromisoformat(s["lastScheduleTime"]) for s in schedules if s.get("lastScheduleTime")]
    moment = now or datetime.now(UTC)
    next_text = f"in {duration(max((min(upcoming) - moment).total_seconds(), 0))}" if upcoming else "-"
    last_text = f"{age(max(started), moment)} ago" if started else "-"
    return [next_text, last_text]


def _run_duration(status: dict[str, Any]) -> str:
    if status.get("duration"):
        return str(status["duration"])
    seconds = elapsed_seconds(status)
    return "-" if seconds is None else duration(seconds)


def _auth_text(spec: dict[str, Any]) -> str:
    """Who may call the agent: ``none`` (anyone, the explicit opt-out) stands out."""
    auth = spec.get("auth") or {}
    if auth.get("mode") == "none":
        return "[yellow]none[/]"
    return "rbac+keys" if auth.get("apiKeys") else "rbac"


def _columns(kind: str, doc: dict[str, Any]) -> list[str]:
    spec, status = doc.get("spec") or {}, doc.get("status") or {}
    created = doc.get("metadata", {}).get("creationTimestamp")
    if kind == "Agent":
        model = spec.get("model") or {}
        desired = spec.get("replicas")
        if desired is None:
            desired = status.get("replicas")
        if desired is None:
            desired = (spec.get("scaling") or {}).get("minReplicas", 1)
        return [model.get("provider", "-"), model.get("name", "-"), _condition_text(status, "Ready"),
                f"{status.get('readyReplicas') or 0}/{desired}", _auth_text(spec), age(created)]
    if kind in ("Tool", "Memory"):
        return [spec.get("type", "-"), _condition_text(status, "Accepted"), age(created)]
    if kind == "Workflow":
        return [str(len(spec.get("steps") or [])), _condition_text(status, "Accepted"),
                str(status.get("running", 0)), str(status.get("pending", 0)),
                *_schedule_times(status), age(created)]
    if kind == "Budget":
        windows = ", ".join(f"{w.get('window')} {w.get('usedPercent', 0)}%"
                            for w in status.get("windows") or [] if not w.get("caller"))
        return [windows or "-", _condition_text(status, "WithinBudget"), age(created)]
    phase = status.get("phase") or "Pending"
    color = {"Succeeded": "green", "Failed": "red", "Running": "cyan"}.get(phase, "yellow")
    return [(spec.get("workflowRef") or {}).get("name", "-"), f"[{color}]{phase}[/]",
            status.get("reason") or "-", _run_duration(status), age(created)]


HEADERS = {
    "Agent": ["PROVIDER", "MODEL", "READY", "REPLICAS", "AUTH", "AGE"],
    "Tool": ["TYPE", "ACCEPTED", "AGE"],
    "Budget": ["USED", "WITHIN", "AGE"],
    "Memory": ["TYPE", "ACCEPTED", "AGE"],
    "Workflow": ["STEPS", "ACCEPTED", "RUNNING", "PENDING", "NEXT", "LAST", "AGE"],
    "WorkflowRun": ["WORKFLOW", "PHASE", "REASON", "DURATION", "AGE"],
}
WIDE_HEADERS = {
    "Agent": ["MEMORY", "TOOLS", "ENDPOINT"],
    "Tool": ["MESSAGE"],
    "Memory": ["MESSAGE"],
    "Workflow": ["AGENTS", "INPUTS"],
    "WorkflowRun": ["STARTED", "STEPS", "TOKENS", "MESSAGE"],
    "Budget": ["SCOPE", "MESSAGE"],
}

RANKS = {"MESSAGE": TEXT, "REASON": TEXT, "ENDPOINT": TEXT, "TOOLS": TEXT, "AGENTS": TEXT,
         "INPUTS": TEXT, "MODEL": REFERENCE, "WORKFLOW": REFERENCE, "MEMORY": REFERENCE}
"""Which columns give way first at a narrow terminal (names never do)."""


def _joined(names: Iterable[str]) -> str:
    return ",".join(names) or "-"


def _wide_columns(kind: str, doc: dict[str, Any]) -> list[str]:
    """What `-o wide` adds to a row (pure)."""
    spec, status = doc.get("spec") or {}, doc.get("status") or {}
    if kind == "Agent":
        memory = (spec.get("memoryRef") or {}).get("name") or (spec.get("memory") or {}).get(
            "type") or "-"
        return [memory, _joined(t.get("name", "?") for t in spec.get("tools") or []),
                status.get("endpoint") or "-"]
    if kind in ("Tool", "Memory"):
        return [(_condition(status, "Accepted") or {}).get("message") or "-"]
    if kind == "Budget":
        selector = (spec.get("agentSelector") or {}).get("matchLabels") or {}
        workflows = (spec.get("workflowSelector") or {}).get("matchLabels") or {}
        scope = ",".join(f"{k}={v}" for k, v in selector.items())
        if spec.get("workflowSelector") is not None:
            scope += (" + " if scope else "") + "workflows " + (
                ",".join(f"{k}={v}" for k, v in workflows.items()) or "(expressions)")
        scope = scope or "namespace"
        if spec.get("perCaller"):
            scope += " per caller"
        return [scope, (_condition(status, "WithinBudget") or {}).get("message") or "-"]
    if kind == "Workflow":
        steps = spec.get("steps") or []
        agents = dict.fromkeys(s["agent"] for s in steps if s.get("agent"))
        return [_joined(agents), _joined(p.get("name", "?") for p in spec.get("input") or [])]
    recorded = status.get("steps") or []
    done = sum(s.get("phase") in ("Succeeded", "Skipped") for s in recorded)
    usage = status.get("usage") or {}
    tokens = (usage.get("inputTokens") or 0) + (usage.get("outputTokens") or 0)
    started = age(status.get("startedAt")) if status.get("startedAt") else "-"
    return [started, f"{done}/{len(recorded)}", str(tokens) if tokens else "-",
            " ".join(str(status.get("message") or "-").split())]


def object_name(doc: dict[str, Any], kind: str) -> str:
    """``-o name``: the object as kubectl names it, ``agent.kagent.dev/NAME`` (pure)."""
    return f"{kind.lower()}.{GROUP}/{doc['metadata']['name']}"


def table_rows(kind: str, docs: list[dict[str, Any]], all_namespaces: bool,
               wide: bool) -> tuple[list[Column], list[list[str]]]:
    """The columns and rows of `kagent get` (pure): names first and never cut."""
    columns = [Column("NAMESPACE", keep=True)] if all_namespaces else []
    columns.append(Column("NAME", keep=True))
    columns += [Column(h, rank=RANKS.get(h, FACT))
                for h in HEADERS[kind] + (WIDE_HEADERS[kind] if wide else [])]
    rows = []
    for doc in sorted(docs, key=lambda d: (d["metadata"].get("namespace", ""),
                                           d["metadata"]["name"])):
        row = [doc["metadata"]["name"], *_columns(kind, doc)]
        if wide:
            row += [escape(cell) for cell in _wide_columns(kind, doc)]
        if all_namespaces:
            row.insert(0, doc["metadata"].get("namespace", ""))
        rows.append(row)
    return columns, rows


def get(
    kind: str = typer.Argument(..., help=f"{KIND_NAMES} (or a singular or short name)"),
    name: str = typer.Argument(None, help="One object's name (default: all of them)."),
    namespace: str = NamespaceOption,
    all_namespaces: bool = typer.Option(False, "--all-namespaces", "-A",
                                        help="List across all namespaces."),
    output: Output = OutputOption,
    show_managed_fields: bool = ShowManagedFieldsOption,
    kubeconfig: Path = KubeconfigOption,
) -> None:
    """List Kagent resources with their status at a glance."""
    kind = kind_of(kind)
    if name and all_namespaces:
        fail("a NAME cannot be combined with --all-namespaces", "give -n NAMESPACE instead",
             EXIT_USAGE)
    res = kagent_resource(kind)
    ns = None if all_namespaces else resolve_namespace(namespace, kubeconfig)
    kube = client(kubeconfig)
    try:
        if name:
            docs = [_as_dict(kube.get(res, name, namespace=ns))]
        else:
            from lightkube import ALL_NS

            docs = [_as_dict(o) for o in kube.list(res, namespace=ALL_NS if ns is None else ns)]
    except Exception as error:  # noqa: BLE001 — turned into a message and exit code
        api_failure(error, f"{kind} {name!r} in namespace {ns!r}" if name else f"{kind}s", kind, ns)
    if output in (Output.yaml, Output.json):
        print_documents(docs, output, single=bool(name), show_managed_fields=show_managed_fields)
        return
    if output == Output.name:
        for doc in docs:
            typer.echo(object_name(doc, kind))
        return
    if not docs:
        where = "any namespace" if ns is None else f"namespace {ns!r}"
        err_console.print(f"No {kind} found in {where}.", highlight=False)  # as kubectl: stderr
        return
    columns, rows = table_rows(kind, docs, ns is None, output == Output.wide)
    print_table(console, columns, rows)


def _events(kube: Any, kind: str, name: str, namespace: str) -> list[dict[str, Any]]:
    from lightkube.resources.core_v1 import Event

    events = kube.list(Event, namespace=namespace,
                       fields={"involvedObject.name": name, "involvedObject.kind": kind})
    docs = [e.to_dict() for e in events]
    return sorted(docs, key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime")
                                          or e["metadata"].get("creationTimestamp") or ""))


def _children(kube: Any, name: str, namespace: str) -> list[tuple[str, str, str]]:
    """(kind, name, state) of the objects the controller made for an Agent."""
    from lightkube.resources.apps_v1 import Deployment
    from lightkube.resources.autoscaling_v2 import HorizontalPodAutoscaler
    from lightkube.resources.core_v1 import ConfigMap, Service, ServiceAccount
    from lightkube.resources.networking_v1 import NetworkPolicy
    from lightkube.resources.policy_v1 import PodDisruptionBudget

    from kagent.kube import ScaledObject

    selector = {AGENT_LABEL: name}
    found: list[tuple[str, str, str]] = []
    for res in (ServiceAccount, ConfigMap, Deployment, Service, HorizontalPodAutoscaler,
                ScaledObject, PodDisruptionBudget, NetworkPolicy):
        try:
            objects = list(kube.list(res, namespace=namespace, labels=selector))
        except Exception:  # noqa: BLE001, S112 — KEDA's CRD may simply not be installed
            continue
        for obj in objects:
            doc = _as_dict(obj)
            found.append((doc.get("kind") or res.__name__, doc["metadata"]["name"],
                          _child_state(res.__name__, doc)))
    return found


def _child_state(kind: str, doc: dict[str, Any]) -> str:
    spec, status = doc.get("spec") or {}, doc.get("status") or {}
    if kind == "Deployment":
        return (f"{status.get('readyReplicas') or 0}/{spec.get('replicas', 1)} ready, "
                f"{status.get('updatedReplicas') or 0} up-to-date, "
                f"{status.get('availableReplicas') or 0} available")
    if kind == "Service":
        ports = ", ".join(f"{p.get('name', '')}:{p.get('port')}" for p in spec.get("ports") or [])
        return f"{spec.get('type', 'ClusterIP')} {spec.get('clusterIP', '')} {ports}".strip()
    if kind == "HorizontalPodAutoscaler":
        return (f"{spec.get('minReplicas', 1)}-{spec.get('maxReplicas')} replicas, "
                f"current {status.get('currentReplicas', 0)}")
    if kind == "PodDisruptionBudget":
        return f"{status.get('currentHealthy', 0)} healthy, {status.get('disruptionsAllowed', 0)} " \
               "disruptions allowed"
    if kind == "ConfigMap":
        return f"{len(doc.get('data') or {})} keys"
    if kind == "NetworkPolicy":
        rules = spec.get("ingress") or []
        return f"{len(rules)} ingress {'rule' if len(rules) == 1 else 'rules'}"
    if kind == "ScaledObject":
        ready = _condition(status, "Ready")
        return f"Ready={ready.get('status')}" if ready else "-"
    return "-"


def describe(
    kind: str = typer.Argument(..., help=f"{KIND_SINGULARS} (or a plural or short name)"),
    name: str = typer.Argument(..., help="The object's name."),
    namespace: str = NamespaceOption,
    kubeconfig: Path = KubeconfigOption,
) -> None:
    """Show one object: its spec, conditions, recent events and (for Agents) its children."""
    import yaml

    kind = kind_of(kind)
    ns = resolve_namespace(namespace, kubeconfig)
    kube = client(kubeconfig)
    try:
        doc = _as_dict(kube.get(kagent_resource(kind), name, namespace=ns))
        events = _events(kube, kind, name, ns)
        children = _children(kube, name, ns) if kind == "Agent" else []
    except Exception as error:  # noqa: BLE001
        api_failure(error, f"{kind} {name!r} in namespace {ns!r}", kind, ns)
    meta, status = doc["metadata"], doc.get("status") or {}
    console.print(f"[bold]Name:[/]       {meta['name']}", highlight=False)
    console.print(f"[bold]Namespace:[/]  {meta.get('namespace')}", highlight=False)
    console.print(f"[bold]Kind:[/]       {kind}", highlight=False)
    console.print(f"[bold]Age:[/]        {age(meta.get('creationTimestamp'))}", highlight=False)
    console.print(f"[bold]Generation:[/] {meta.get('generation')} (observed "
                  f"{status.get('observedGeneration', '-')})", highlight=False)
    for key in ("endpoint", "phase", "reason", "message"):
        if status.get(key):
            console.print(f"[bold]{key.capitalize()}:[/] {status[key]}", highlight=False)
    console.print("\n[bold]Spec:[/]")
    spec_text = yaml.safe_dump(doc.get("spec") or {}, sort_keys=False).rstrip()
    console.print("\n".join("  " + line for line in spec_text.splitlines()), highlight=False,
                  markup=False)

    console.print("\n[bold]Conditions:[/]")
    conditions = status.get("conditions") or []
    if conditions:
        table = Table(box=None, header_style="bold", pad_edge=False)
        for header in ("TYPE", "STATUS", "REASON", "AGE", "MESSAGE"):
            table.add_column(header, overflow="fold")
        for c in conditions:
            table.add_row(c.get("type", ""), c.get("status", ""), c.get("reason", ""),
                          age(c.get("lastTransitionTime")), c.get("message", ""))
        print_stripped(console, table)
    elif status:  # reconciled, and this kind has no conditions to show (a run's are its steps)
        console.print("  none")
    else:
        console.print("  none yet (is the kagent controller running?)")

    if kind == "WorkflowRun":
        _print_steps(status)
    if kind == "Tool" and status.get("discoveredTools"):
        console.print("\n[bold]Discovered tools:[/]")
        for tool in status["discoveredTools"]:
            console.print(f"  {tool.get('name')}: {tool.get('description', '')}", highlight=False)
    if kind == "Agent":
        console.print("\n[bold]Children:[/]")
        if children:
            table = Table(box=None, header_style="bold", pad_edge=False)
            for header in ("KIND", "NAME", "STATE"):
                table.add_column(header)
            for child in children:
                table.add_row(*child)
            print_stripped(console, table)
        else:
            console.print("  none")

    console.print("\n[bold]Events:[/]")
    if events:
        table = Table(box=None, header_style="bold", pad_edge=False)
        for header in ("TYPE", "REASON", "AGE", "FROM", "MESSAGE"):
            table.add_column(header, overflow="fold")
        for e in events[-20:]:
            when = e.get("lastTimestamp") or e.get("eventTime") or e["metadata"].get(
                "creationTimestamp")
            source = (e.get("source") or {}).get("component") or e.get("reportingComponent", "")
            table.add_row(e.get("type", ""), e.get("reason", ""), age(when), source,
                          e.get("message", ""))
        print_stripped(console, table)
    else:
        console.print("  none")


def _print_steps(status: dict[str, Any]) -> None:
    console.print("\n[bold]Steps:[/]")
    steps = status.get("steps") or []
    if not steps:
        phase = status.get("phase")
        if phase in ("Succeeded", "Failed"):
            why = f" ({status['reason']})" if status.get("reason") else ""
            console.print(f"  none: the run ended {phase}{why} before any step started",
                          highlight=False)
        else:
            console.print("  none started yet")
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for header in ("STEP", "PHASE", "ATTEMPTS", "STARTED", "DURATION", "ERROR"):
        table.add_column(header, overflow="fold")
    for step in steps:
        table.add_row(step.get("name", ""), step.get("phase") or "-", str(step.get("attempts", 0)),
                      age(step.get("startedAt")), _run_duration(step), str(step.get("error") or ""))
    print_stripped(console, table)
    if status.get("attempts"):
        _print_attempts(status["attempts"])


def _print_attempts(attempts: list[dict[str, Any]]) -> None:
    """The run's retries (status.attempts): when, from which step, what ran again."""
    console.print("\n[bold]Retries:[/]")
    table = Table(box=None, header_style="bold", pad_edge=False)
    for header in ("ATTEMPT", "STARTED", "FROM", "AFTER", "STEPS RUN AGAIN"):
        table.add_column(header, overflow="fold")
    for attempt in attempts:
        table.add_row(str(attempt.get("attempt", "")), age(attempt.get("startedAt")),
                      attempt.get("fromStep") or "-", attempt.get("previousReason") or "-",
                      ", ".join(attempt.get("steps") or []) or "-")
    print_stripped(console, table)


def logs(
    agent: str = typer.Argument(..., help="The Agent's name."),
    namespace: str = NamespaceOption,
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep streaming new lines."),
    tail: int = typer.Option(None, "--tail", help="Only the last N lines of each pod."),
    kubeconfig: Path = KubeconfigOption,
) -> None:
    """Print the logs of an Agent's pods (label kagent.dev/agent=AGENT)."""
    from lightkube.resources.core_v1 import Pod

    ns = resolve_namespace(namespace, kubeconfig)
    kube = client(kubeconfig)
    try:
        kube.get(kagent_resource("Agent"), agent, namespace=ns)
        pods = [p for p in kube.list(Pod, namespace=ns, labels={AGENT_LABEL: agent})]
    except Exception as error:  # noqa: BLE001
        api_failure(error, f"Agent {agent!r} in namespace {ns!r}", "Agent", ns)
    if not pods:
        fail(f"Agent {agent!r} has no pods yet",
             f"see why with `kagent describe agent {agent} -n {ns}`", EXIT_NOT_FOUND)
    prefix = len(pods) > 1
    if follow and prefix:
        _follow_all(kube, pods, ns, tail, kubeconfig)
        return
    for pod in pods:
        _print_pod_log(kube, pod, ns, follow, tail, prefix, kubeconfig)


def _print_pod_log(kube: Any, pod: Any, namespace: str, follow: bool, tail: int | None,
                   prefix: bool, kubeconfig: Path | None = None) -> None:
    from kagent.local.dev import local_pod_log

    pod_name = pod.metadata.name
    local = local_pod_log(kubeconfig, namespace, pod_name)
    if local is not None:  # a `kagent dev` pod: its process's output is a local file
        for line in _file_lines(local, follow, tail):
            typer.echo(f"[{pod_name}] {line}" if prefix else line, nl=False)
        return
    container = "agent" if _has_container(pod, "agent") else None
    try:
        for line in kube.log(pod_name, namespace=namespace, follow=follow, tail_lines=tail,
                             container=container):
            typer.echo(f"[{pod_name}] {line}" if prefix else line, nl=False)
    except Exception as error:  # noqa: BLE001
        api_failure(error, f"logs of pod {pod_name!r}")


def _file_lines(path: Path, follow: bool, tail: int | None) -> Any:
    """A log file's lines (the last ``tail``), then, with ``follow``, new ones as they come."""
    import time

    with path.open(errors="replace") as handle:
        lines = handle.readlines()
        yield from lines[-tail:] if tail else lines
        while follow:
            line = handle.readline()
            if line:
                yield line
            else:
                time.sleep(0.2)


def _follow_all(kube: Any, pods: list[Any], namespace: str, tail: int | None,
                kubeconfig: Path | None = None) -> None:
    """Follow several pods at once, each line prefixed with its pod (like kubectl -l … -f)."""
    import threading

    failures: list[BaseException] = []

    def follow_one(pod: Any) -> None:
        try:
            _print_pod_log(kube, pod, namespace, True, tail, True, kubeconfig)
        except BaseException as error:  # noqa: BLE001 — typer.Exit from api_failure included
            failures.append(error)

    threads = [threading.Thread(target=follow_one, args=(pod,), daemon=True) for pod in pods]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            thread.join()
    except KeyboardInterrupt:
        return
    if failures and len(failures) == len(pods):
        raise typer.Exit(1)


def _has_container(pod: Any, name: str) -> bool:
    return any(c.name == name for c in (pod.spec.containers if pod.spec else []))
