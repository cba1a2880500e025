"""Conditions (CEL) and text templates (sandboxed Jinja) used by Workflows.

CEL is what Kubernetes users already write in validation rules; it cannot loop forever or touch
anything outside the values it is given. Templates are rendered in Jinja's immutable sandbox,
with the bounds of :mod:`kagent.workflow.bounded` (a static cost budget for CEL, templates that
cannot build huge strings) and undefined values that are errors rather than empty strings.

Every error speaks of the workflow (``input.days has no value``, ``no step named 'forcast'``),
never of Python (``KeyError``, ``'dict object' has no attribute``). :func:`references` lists the
``steps.<name>`` and ``input.<name>`` an expression reads, so admission can check them against
the Workflow before a run pays for a model call.

The controller evaluates through :class:`WorkerExpressions`: in a worker process with a time and
memory limit, never on its own event loop.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

import celpy
from jinja2 import StrictUndefined, TemplateSyntaxError, nodes
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.utils import missing

from kagent.workflow.bounded import (
    BoundedSandbox,
    BoundExceeded,
    ExpressionWorker,
    check_cel_cost,
    render_bounded,
    static_template_problems,
)

STEP_FIELDS = ("output", "phase", "agent", "iterations")
"""What templates and conditions may read of a step: ``steps.<name>.<field>``."""


class ExpressionError(ValueError):
    """A condition or template that does not parse, is over its bounds or cannot be evaluated."""


# Step names may contain '-', which Jinja and CEL read as minus: `steps.analyze-market.output`
# is rewritten to `steps["analyze-market"].output` before parsing.
_HYPHENATED_STEP = re.compile(r"\bsteps\.([a-z0-9]+(?:-[a-z0-9]+)+)")


def _quote_step_names(text: str) -> str:
    return _HYPHENATED_STEP.sub(lambda m: f'steps["{m.group(1)}"]', text)


# --- what an expression reads ---------------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    """``steps.<name>[.<field>]`` or ``input.<name>`` as an expression writes it."""

    root: str
    """steps or input"""
    name: str
    field: str | None = None
    """For a step: output, phase, agent, iterations (None when the step itself is used)."""

    def __str__(self) -> str:
        return ".".join(p for p in (self.root, self.name, self.field) if p)


_ROOTS = ("steps", "input")
_PASS_THROUGH = frozenset({"expr", "conditionalor", "conditionaland", "relation", "addition",
                           "multiplication", "unary", "member", "primary"})


def _tree(node: Any) -> bool:
    return hasattr(node, "data") and hasattr(node, "children")


def _unwrap(node: Any) -> Any:
    while _tree(node) and node.data in _PASS_THROUGH and len(node.children) == 1:
        node = node.children[0]
    return node


def _cel_ident(node: Any) -> str | None:
    node = _unwrap(node)
    if _tree(node) and node.data == "ident" and node.children:
        return str(node.children[0])
    return None


def _cel_string(node: Any) -> str | None:
    node = _unwrap(node)
    if _tree(node) and node.data == "literal" and node.children:
        token = str(node.children[0])
        if len(token) >= 2 and token[0] == token[-1] and token[0] in "'\"":
            return token[1:-1]
    return None


def _cel_root_reference(node: Any) -> tuple[str, str] | None:
    """(root, name) when ``node`` is ``steps.x``, ``steps["x"]`` or ``input.x``."""
    node = _unwrap(node)
    if not _tree(node) or len(node.children) != 2:
        return None
    inner, key = node.children
    root = _cel_ident(inner)
    if root not in _ROOTS:
        return None
    if node.data == "member_dot":
        return root, str(key)
    if node.data == "member_index":
        name = _cel_string(key)
        return (root, name) if name is not None else None
    return None


def _cel_references(tree: Any) -> set[Reference]:
    found: set[Reference] = set()
    stack = [tree]
    while stack:
        node = stack.pop()
        if not _tree(node):
            continue
        stack.extend(node.children)
        own = _cel_root_reference(node)
        if own is not None:
            found.add(Reference(*own))
        if node.data == "member_dot" and len(node.children) == 2:
            inner = _cel_root_reference(node.children[0])
            if inner is not None and inner[0] == "steps":
                found.add(Reference("steps", inner[1], str(node.children[1])))
    return found


def _jinja_root_reference(node: nodes.Node) -> tuple[str, str] | None:
    if isinstance(node, nodes.Getattr) and isinstance(node.node, nodes.Name) and node.node.name in _ROOTS:
        return node.node.name, node.attr
    if (isinstance(node, nodes.Getitem) and isinstance(node.node, nodes.Name) and node.node.name in _ROOTS
            and isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str)):
        return node.node.name, node.arg.value
    return None


def _jinja_references(tree: nodes.Template) -> set[Reference]:
    found: set[Reference] = set()
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        own = _jinja_root_reference(node)
        if own is not None:
            found.add(Reference(*own))
        inner = _jinja_root_reference(node.node)
        if inner is not None and inner[0] == "steps":
            if isinstance(node, nodes.Getattr):
                found.add(Reference("steps", inner[1], node.attr))
            elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
                found.add(Reference("steps", inner[1], node.arg.value))
    return found


def references(text: str, *, condition: bool) -> set[Reference]:
    """The ``steps.<name>[.<field>]`` and ``input.<name>`` references of a condition or a
    template; raises ExpressionError when it does not parse or is over its static bounds."""
    if condition:
        return _cel_references(_parse_condition(text))
    return _jinja_references(_parse_template(text))


# --- conditions -----------------------------------------------------------------------------------

_CEL = celpy.Environment()


@lru_cache(maxsize=1024)
def _parse_condition(expression: str) -> Any:
    try:
        tree = _CEL.compile(_quote_step_names(expression))
    except Exception as error:  # celpy raises several parse error types
        raise ExpressionError(f"invalid CEL expression: {error}") from None
    try:
        check_cel_cost(tree, expression)
    except BoundExceeded as error:
        raise ExpressionError(str(error)) from None
    return tree


@lru_cache(maxsize=1024)
def compile_condition(expression: str) -> Any:
    """Parse a CEL condition once and check its static cost; raises ExpressionError with the
    parser's pointer, or saying the condition is over the cost budget."""
    return _CEL.program(_parse_condition(expression))


_NO_MEMBER = re.compile(r"no such member in mapping: '([^']*)'")


def _cel_failure(expression: str, error: Any) -> str:
    """A CEL evaluation error in the workflow's words (celpy's carry a Python exception tuple)."""
    args = getattr(error, "args", None) or (str(error),)
    message = str(args[0]) if args else str(error)
    missing = _NO_MEMBER.search(message)
    if missing:
        name = missing.group(1)
        for ref in sorted(_cel_references(_parse_condition(expression)), key=str):
            if ref.root == "input" and ref.name == name:
                return (f"input.{name} has no value: the run gives none and the input has no "
                        "default (test it with has(input." + name + "))")
            if ref.root == "steps" and ref.name == name:
                return f"there is no step named {name!r}"
            if ref.root == "steps" and ref.field == name:
                return (f"steps.{ref.name} has no field {name!r} (a step has "
                        + ", ".join(STEP_FIELDS) + ")")
        return f"{name!r} has no value"
    return message


def evaluate_condition(expression: str, variables: dict[str, Any]) -> bool:
    """Evaluate a CEL condition over plain JSON-like values; it must yield a boolean."""
    program = compile_condition(expression)
    try:
        result = program.evaluate({k: celpy.json_to_cel(v) for k, v in variables.items()})
    except Exception as error:
        raise ExpressionError(f"evaluating {expression!r} failed: {_cel_failure(expression, error)}") from None
    if isinstance(result, celpy.CELEvalError):
        raise ExpressionError(f"evaluating {expression!r} failed: {_cel_failure(expression, result)}")
    if not isinstance(result, (bool, celpy.celtypes.BoolType)):
        raise ExpressionError(f"{expression!r} must give true or false, not {result!r}")
    return bool(result)


# --- templates ------------------------------------------------------------------------------------


class Scope(dict[str, Any]):
    """A mapping a template reads (``input``, ``steps``, one step) that knows its own name, so
    a missing member is reported as ``input.days``, not as a Python dict's attribute."""

    def __init__(self, path: str, values: dict[str, Any]) -> None:
        super().__init__(values)
        self.path = path


class WorkflowUndefined(StrictUndefined):
    """Strict (a typo is an error, not an empty string), with messages in the workflow's words."""

    __slots__ = ()

    @property
    def _undefined_message(self) -> str:
        owner, name = self._undefined_obj, self._undefined_name
        if isinstance(owner, Scope):
            if owner.path == "input":
                return f"input.{name} has no value: the run gives none and the input has no default"
            if owner.path == "steps":
                return f"there is no step named {name!r}"
            if owner.path.startswith("steps."):
                return f"{owner.path} has no field {name!r} (a step has {', '.join(STEP_FIELDS)})"
            return f"{owner.path}.{name} has no value"
        if self._undefined_hint:
            return self._undefined_hint
        if owner is missing:
            return f"{name!r} is not defined (templates see input and steps)"
        return f"{name!r} is not defined"


class WorkflowSandbox(BoundedSandbox):
    """Members of ``input`` and ``steps`` are read as keys first, so an input named ``items``
    or ``values`` is the input, not a Python method."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, Scope):
            if attribute in obj:
                return obj[attribute]
            return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        if isinstance(obj, Scope) and isinstance(argument, str):
            return self.getattr(obj, argument)
        return super().getitem(obj, argument)


_JINJA = WorkflowSandbox(undefined=WorkflowUndefined, autoescape=False)


@lru_cache(maxsize=1024)
def _parse_template(text: str) -> nodes.Template:
    try:
        tree = _JINJA.parse(_quote_step_names(text))
    except TemplateSyntaxError as error:
        raise ExpressionError(f"invalid template (line {error.lineno}): {error.message}") from None
    problems = static_template_problems(tree)
    if problems:
        raise ExpressionError("the template would be too large: " + "; ".join(problems))
    return tree


@lru_cache(maxsize=1024)
def compile_template(text: str) -> Any:
    """Parse a template once, refusing blow-ups visible without running it."""
    _parse_template(text)
    try:
        return _JINJA.from_string(_quote_step_names(text))
    except TemplateSyntaxError as error:
        raise ExpressionError(f"invalid template (line {error.lineno}): {error.message}") from None


def scoped(variables: dict[str, Any]) -> dict[str, Any]:
    """Template variables as :class:`Scope` mappings (made where the template is rendered, so
    what travels to a worker process is plain data)."""
    out = dict(variables)
    if isinstance(variables.get("input"), dict):
        out["input"] = Scope("input", variables["input"])
    if isinstance(variables.get("steps"), dict):
        out["steps"] = Scope("steps", {
            name: Scope(f"steps.{name}", step) if isinstance(step, dict) else step
            for name, step in variables["steps"].items()})
    return out


def render_template(text: str, variables: dict[str, Any]) -> str:
    """Render a template, its output bounded; raises ExpressionError in the workflow's words."""
    try:
        return render_bounded(compile_template(text), scoped(variables))
    except ExpressionError:
        raise
    except UndefinedError as error:
        raise ExpressionError(f"rendering the template failed: {error}") from None
    except (SecurityError, BoundExceeded) as error:
        raise ExpressionError(f"rendering the template failed: {error}") from None
    except Exception as error:
        raise ExpressionError(f"rendering the template failed: {type(error).__name__}: {error}") from None


# --- evaluating from the controller ---------------------------------------------------------------


class Expressions(Protocol):
    """Where a run's conditions and templates are evaluated."""

    async def condition(self, expression: str, variables: dict[str, Any]) -> bool: ...

    async def render(self, text: str, variables: dict[str, Any]) -> str: ...


class InlineExpressions:
    """Evaluates in the caller's process (tests; tools that render one template)."""

    async def condition(self, expression: str, variables: dict[str, Any]) -> bool:
        return evaluate_condition(expression, variables)

    async def render(self, text: str, variables: dict[str, Any]) -> str:
        return render_template(text, variables)

    def close(self) -> None:
        pass


def _narrow(variables: dict[str, Any], refs: set[Reference]) -> dict[str, Any]:
    """Only the steps an expression names go to the worker (outputs may be large), unless it
    reads ``steps`` as a whole."""
    steps = variables.get("steps")
    if not isinstance(steps, dict):
        return variables
    named = {r.name for r in refs if r.root == "steps"}
    return {**variables, "steps": {n: s for n, s in steps.items() if n in named}}


def _uses_steps_whole(text: str) -> bool:
    return re.search(r"\bsteps\b(?!\s*[.\[])", _quote_step_names(text)) is not None


class WorkerExpressions:
    """Evaluates in :class:`~kagent.workflow.bounded.ExpressionWorker` processes: the
    controller's event loop (its Lease renewals, the webhook) never runs an author's expression,
    and one that runs too long or too big fails its step with a clear reason."""

    def __init__(self, worker: ExpressionWorker | None = None) -> None:
        self.worker = worker or ExpressionWorker(preload=(__name__,))

    async def _call(self, function: Any, text: str, variables: dict[str, Any], *,
                    condition: bool) -> Any:
        what = "the condition" if condition else "the template"
        refs = references(text, condition=condition)  # parse errors and static bounds: here
        if not _uses_steps_whole(text):
            variables = _narrow(variables, refs)
        try:
            return await self.worker.call(function, text, variables)
        except BoundExceeded as error:
            raise ExpressionError(f"evaluating {what} {_short(text)} stopped: {error}") from None

    async def condition(self, expression: str, variables: dict[str, Any]) -> bool:
        return bool(await self._call(evaluate_condition, expression, variables, condition=True))

    async def render(self, text: str, variables: dict[str, Any]) -> str:
        return str(await self._call(render_template, text, variables, condition=False))

    def close(self) -> None:
        self.worker.close()


def _short(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")
