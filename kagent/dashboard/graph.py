"""A Workflow as a graph the browser can lay out (pure).

The dependencies come from the workflow engine's own planner, so the picture is the order the
engine runs steps in. Each pattern stays visible as such: a fan-out is a group of steps with the
same dependencies (laid out side by side), a DAG edge is marked as declared by ``dependsOn``, a
loop is an edge back to the first repeated step labelled with its condition, and a routed step
branches to every agent it may pick.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from kagent.api.workflow import WorkflowSpec, WorkflowStep

INPUT_NODE = "__input__"
OUTPUT_NODE = "__output__"


def _step_node(step: WorkflowStep, group: int | None) -> dict[str, Any]:
    node: dict[str, Any] = {"id": step.name, "kind": "step", "label": step.name,
                            "agent": step.agent, "parallel": step.parallel, "group": group}
    if step.when:
        node["when"] = step.when
    if step.loop is not None:
        node["loop"] = {"until": step.loop.until, "maxIterations": step.loop.max_iterations,
                        "repeatFrom": step.loop.repeat_from or step.name}
    if step.route is not None:
        node["route"] = "router" if step.route.router else "cases"
    if step.retry is not None:
        node["retry"] = step.retry.limit
    if step.timeout:
        node["timeout"] = step.timeout
    return node


def _route_branches(step: WorkflowStep) -> list[tuple[str, str]]:
    """(agent, label) for every agent a routed step may pick."""
    route = step.route
    assert route is not None
    if route.router:
        return [(choice, f"{route.router} picks") for choice in route.choices or []]
    branches = [(case.agent, case.when) for case in route.cases or []]
    if route.default:
        branches.append((route.default, "otherwise"))
    seen: dict[str, str] = {}
    for agent, label in branches:  # one branch per agent; several conditions join with "or"
        seen[agent] = f"{seen[agent]} or {label}" if agent in seen else label
    return list(seen.items())


def workflow_graph(spec: dict[str, Any]) -> dict[str, Any]:
    """Nodes, edges and the patterns found, for a Workflow's ``spec`` as stored.

    An invalid spec (the webhook normally refuses those) gives an empty graph and the error."""
    from kagent.workflow.plan import PlanError, plan

    try:
        parsed = WorkflowSpec.model_validate(spec)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return {"nodes": [], "edges": [], "patterns": [],
                "error": f"spec.{where}: {first['msg']}"}
    try:
        deps = plan(parsed)
    except PlanError as error:
        return {"nodes": [], "edges": [], "patterns": [], "error": str(error)}
    groups = _parallel_groups(parsed)
    group_of = {name: index for index, members in enumerate(groups) for name in members}

    nodes: list[dict[str, Any]] = [{"id": INPUT_NODE, "kind": "input", "label": "input",
                                    "inputs": [p.name for p in parsed.input or []]}]
    edges: list[dict[str, Any]] = []
    patterns: list[dict[str, Any]] = []
    depended_on = {d for ds in deps.values() for d in ds}
    for step in parsed.steps:
        nodes.append(_step_node(step, group_of.get(step.name)))
        explicit = step.depends_on is not None
        for dep in deps[step.name]:
            edges.append({"source": dep, "target": step.name,
                          "kind": "dependsOn" if explicit else "flow"})
        if not deps[step.name]:
            edges.append({"source": INPUT_NODE, "target": step.name, "kind": "flow"})
        if explicit:
            patterns.append({"kind": "dag", "steps": [step.name, *deps[step.name]]})
        if step.loop is not None:
            start = step.loop.repeat_from or step.name
            most = step.loop.max_iterations
            edges.append({"source": step.name, "target": start, "kind": "loop",
                          "label": f"until {step.loop.until} (at most {most}×)"})
            patterns.append({"kind": "loop", "steps": [start, step.name]})
        if step.route is not None:
            branches = _route_branches(step)
            for agent, label in branches:
                choice = f"{step.name}/{agent}"
                nodes.append({"id": choice, "kind": "choice", "label": agent, "step": step.name})
                edges.append({"source": step.name, "target": choice, "kind": "route",
                              "label": label})
            patterns.append({"kind": "route", "steps": [step.name],
                             "agents": [agent for agent, _ in branches]})
    nodes.append({"id": OUTPUT_NODE, "kind": "output", "label": "output",
                  "outputs": sorted((parsed.output or {}).keys())})
    for step in parsed.steps:
        if step.name not in depended_on:
            edges.append({"source": step.name, "target": OUTPUT_NODE, "kind": "flow"})
    for members in groups:
        patterns.append({"kind": "fan-out", "steps": members})
    chained = [e for e in edges if e["kind"] == "flow" and e["source"] in deps
               and e["target"] in deps]
    if chained:
        stages: list[str] = []  # a fan-out is one stage of the sequence
        for step in parsed.steps:
            if step.depends_on is not None:
                continue
            group = group_of.get(step.name)
            if group is None:
                stages.append(step.name)
            elif groups[group][0] == step.name:
                stages.append(" ∥ ".join(groups[group]))
        patterns.insert(0, {"kind": "sequence", "steps": stages})
    return {"nodes": nodes, "edges": edges, "patterns": patterns}


def _parallel_groups(spec: WorkflowSpec) -> list[list[str]]:
    """Runs of consecutive ``parallel`` steps (without ``dependsOn``): the fan-outs, exactly as
    the planner groups them."""
    groups: list[list[str]] = []
    current: list[str] = []
    for step in spec.steps:
        if step.parallel and step.depends_on is None:
            current.append(step.name)
            continue
        if len(current) > 1:
            groups.append(current)
        current = []
    if len(current) > 1:
        groups.append(current)
    return groups
