"""Plan a Workflow: every step's dependencies, explicit and implied, and a check that they
form a DAG. Pure, so the webhook and the engine agree on the graph."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from kagent.api.workflow import WorkflowSpec, WorkflowStep


@dataclass(frozen=True)
class PlanError(ValueError):
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def step_dependencies(spec: WorkflowSpec) -> dict[str, list[str]]:
    """Each step's dependencies.

    A step with ``dependsOn`` depends on exactly those steps. Otherwise steps form groups: a
    plain step is a group of its own, and consecutive ``parallel`` steps form one group that
    runs at once (a fan-out). Each group waits for every step of the group before it, so
    ``a; b(parallel); c(parallel); d`` runs a, then b and c together, then d.
    """
    groups: list[list[str]] = []
    open_parallel = False
    explicit = {s.name: s.depends_on for s in spec.steps if s.depends_on is not None}
    for step in spec.steps:
        joins = step.parallel and step.depends_on is None and open_parallel
        if joins:
            groups[-1].append(step.name)
        else:
            groups.append([step.name])
        open_parallel = step.parallel and step.depends_on is None
    deps: dict[str, list[str]] = {}
    for index, group in enumerate(groups):
        previous = groups[index - 1] if index > 0 else []
        for name in group:
            deps[name] = list(explicit[name]) if name in explicit else list(previous)
    return deps


def plan(spec: WorkflowSpec) -> dict[str, list[str]]:
    """Dependencies of every step; raises PlanError (naming the field) if they are not a DAG."""
    names = [s.name for s in spec.steps]
    positions = {name: i for i, name in enumerate(names)}
    for i, name in enumerate(names):
        if names.index(name) != i:
            raise PlanError(f"spec.steps[{i}].name", f"duplicate step name {name!r}")
    deps = step_dependencies(spec)
    for i, step in enumerate(spec.steps):
        for j, dep in enumerate(step.depends_on or []):
            if dep == step.name:
                raise PlanError(f"spec.steps[{i}].dependsOn[{j}]", "a step cannot depend on itself")
            if dep not in positions:
                raise PlanError(f"spec.steps[{i}].dependsOn[{j}]", f"no step named {dep!r}")
        if step.loop is not None and step.loop.repeat_from is not None:
            start = step.loop.repeat_from
            if start not in positions:
                raise PlanError(f"spec.steps[{i}].loop.repeatFrom", f"no step named {start!r}")
            if positions[start] > i:
                raise PlanError(f"spec.steps[{i}].loop.repeatFrom", f"step {start!r} comes after this step")
    cycle = find_cycle(deps)
    if cycle:
        first = positions[cycle[0]]
        raise PlanError(f"spec.steps[{first}].dependsOn", "dependency cycle: " + " -> ".join(cycle))
    return deps


def find_cycle(deps: dict[str, list[str]]) -> list[str] | None:
    """A dependency cycle as a path that returns to its start, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in deps.get(node, []):
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if state.get(dep, 0) == 0 and dep in deps:
                found = visit(dep)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in deps:
        if state.get(node, 0) == 0:
            found = visit(node)
            if found:
                return found
    return None


def topological_order(deps: dict[str, list[str]]) -> list[str]:
    """Steps in an order where every step comes after its dependencies (declaration order
    breaks ties)."""
    done: set[str] = set()
    order: list[str] = []
    remaining = list(deps)
    while remaining:
        for name in remaining:
            if all(d in done for d in deps[name]):
                order.append(name)
                done.add(name)
                remaining.remove(name)
                break
        else:
            raise PlanError("spec.steps", "dependency cycle")
    return order


def workflow_agents(spec: WorkflowSpec) -> list[str]:
    """Every agent a run of the workflow may call, in order of first mention."""
    names: list[str] = []
    for step in spec.steps:
        candidates: list[str | None] = [step.agent]
        if step.route:
            candidates += [c.agent for c in step.route.cases or []]
            candidates += [step.route.default, step.route.router, *(step.route.choices or [])]
        names += [c for c in candidates if c and c not in names]
    return names


@dataclass(frozen=True)
class WorkflowPlan:
    """A Workflow's spec read once: the typed spec, its steps by name, its dependency graph
    and the agents its runs may call."""

    spec: WorkflowSpec
    deps: dict[str, list[str]]
    agents: list[str]
    steps: dict[str, WorkflowStep] = field(repr=False)


def plan_workflow(spec: dict[str, Any] | WorkflowSpec) -> WorkflowPlan:
    """Validate and plan a Workflow's spec; raises ValueError (a pydantic ValidationError, or a
    PlanError naming the field) when it is not a valid workflow."""
    typed = spec if isinstance(spec, WorkflowSpec) else WorkflowSpec.model_validate(spec)
    return WorkflowPlan(typed, plan(typed), workflow_agents(typed), {s.name: s for s in typed.steps})


@dataclass(frozen=True)
class _Invalid:
    message: str


class PlanCache:
    """Plans by a key that changes whenever the spec does (the Workflow's uid and generation),
    so a spec is parsed and planned once, not on every reconcile of every run. Invalid specs
    are remembered too (as their message, raised again as a ValueError). Bounded: the least
    recently used plan goes first."""

    def __init__(self, size: int = 512) -> None:
        self.size = size
        self._plans: OrderedDict[Hashable, WorkflowPlan | _Invalid] = OrderedDict()

    def for_workflow(self, workflow: dict[str, Any]) -> WorkflowPlan:
        """The plan of a Workflow object as stored (keyed by its uid and generation)."""
        meta = workflow["metadata"]
        key = (meta.get("namespace"), meta.get("name"), meta.get("uid"), meta.get("generation"))
        return self.get(key, workflow["spec"])

    def get(self, key: Hashable, spec: dict[str, Any]) -> WorkflowPlan:
        found = self._plans.get(key)
        if found is None:
            try:
                found = plan_workflow(spec)
            except ValueError as error:
                found = _Invalid(str(error))
            self._plans[key] = found
            while len(self._plans) > self.size:
                self._plans.popitem(last=False)
        else:
            self._plans.move_to_end(key)
        if isinstance(found, WorkflowPlan):
            return found
        raise ValueError(found.message)
