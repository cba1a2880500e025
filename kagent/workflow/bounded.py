"""Bounds for the expressions a Workflow author writes, so one author cannot freeze the controller.

Conditions are CEL (cel-python, a pure-Python interpreter that spends about 30 µs per node it
evaluates) and text templates are Jinja. Both run in the controller, which also renews its
leader Lease and serves the admission webhook. Three bounds keep them in their place:

- **A static cost budget for CEL**, checked at admission: the cost of an expression is the number
  of nodes it may evaluate, where a comprehension (``all``, ``exists``, ``exists_one``, ``map``,
  ``filter``) costs its body once per element — the length of a literal list, or
  :data:`UNKNOWN_LIST_SIZE` for a value from the run's input or a step's output. Nested
  comprehensions over run data therefore exceed the budget, as they do in Kubernetes' own CEL.
- **Templates that cannot build huge strings**: ``*`` and ``**`` are checked before they run,
  output is cut off at :data:`TEMPLATE_OUTPUT_LIMIT`, and constant blow-ups are refused at
  admission.
- **Evaluation in a worker process** (:class:`ExpressionWorker`) with a wall-clock limit and a
  memory limit: what slips past the static checks (a regular expression that backtracks, nested
  loops in a template) fails its step with a clear reason, and the worker is replaced; the
  controller's event loop never runs the expression itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import multiprocessing.connection
import operator
import resource
from collections.abc import Callable
from typing import Any

from jinja2 import nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

CEL_COST_BUDGET = 10_000
"""Nodes a condition may evaluate: about a third of a second of cel-python at worst."""
UNKNOWN_LIST_SIZE = 100
"""How many elements a comprehension over run data is assumed to visit."""
TEMPLATE_OUTPUT_LIMIT = 1024 * 1024
"""Characters a template may produce (a step's input, a run's output value)."""
EVALUATION_SECONDS = 2.0
"""Wall-clock limit of one evaluation in the worker."""
WORKER_MEMORY_BYTES = 1024 * 1024 * 1024
"""Address space of the worker process; a template that tries to build more fails."""
STARTUP_SECONDS = 60.0
"""How long a new worker may take to start (a fresh interpreter importing Jinja and cel-python)."""
MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})


class BoundExceeded(ValueError):
    """An expression over one of its bounds; the message says which and what to do."""


# --- CEL cost -------------------------------------------------------------------------------------


def cel_cost(tree: Any) -> int:
    """The static cost of a parsed CEL expression (a lark tree from ``celpy.Environment.compile``)."""
    return _cost(tree)[0]


def _is_tree(node: Any) -> bool:
    return hasattr(node, "data") and hasattr(node, "children")


def _cost(node: Any) -> tuple[int, int]:
    """(cost, size): cost in nodes evaluated; size the number of elements if it is a list/map."""
    if not _is_tree(node):
        return 1, UNKNOWN_LIST_SIZE  # a token: a literal or an identifier (run data)
    children = node.children
    if node.data in ("list_lit", "map_lit"):
        inner = [_cost(c) for c in children]
        elements = children[0].children if children and _is_tree(children[0]) else []
        size = len(elements) // (2 if node.data == "map_lit" else 1)
        return 1 + sum(c for c, _ in inner), size
    if node.data == "member_dot_arg" and len(children) == 3:
        receiver, method, arguments = children
        receiver_cost, receiver_size = _cost(receiver)
        args = [_cost(a) for a in (arguments.children if _is_tree(arguments) else [])]
        if str(method) in MACROS and len(args) >= 2:
            body = sum(c for c, _ in args[1:])
            size = receiver_size if str(method) in ("map", "filter") else 1
            return receiver_cost + receiver_size * (body + 1), size
        return 1 + receiver_cost + sum(c for c, _ in args), UNKNOWN_LIST_SIZE
    if node.data == "literal":
        return 1, 1
    costs = [_cost(c) for c in children]
    if len(costs) == 1:
        return costs[0]  # a pass-through level of the grammar
    return 1 + sum(c for c, _ in costs), UNKNOWN_LIST_SIZE


def check_cel_cost(tree: Any, expression: str) -> None:
    cost = cel_cost(tree)
    if cost > CEL_COST_BUDGET:
        raise BoundExceeded(
            f"the condition may evaluate about {cost} steps, over the budget of {CEL_COST_BUDGET}: "
            "avoid comprehensions (all, exists, map, filter) nested over run data")


# --- templates ------------------------------------------------------------------------------------


def _size(value: Any) -> int | None:
    return len(value) if isinstance(value, (str, bytes, list, tuple)) else None


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox, whose ``*`` and ``**`` refuse to build something huge."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator_name: str, left: Any, right: Any) -> Any:
        if operator_name == "*":
            for sequence, times in ((left, right), (right, left)):
                size = _size(sequence)
                if size is not None and isinstance(times, int) and size * times > TEMPLATE_OUTPUT_LIMIT:
                    raise SecurityError(f"the template would build {size * times} characters, "
                                        f"over the limit of {TEMPLATE_OUTPUT_LIMIT}")
        if operator_name == "**" and isinstance(right, int) and abs(right) > 64:
            raise SecurityError("the template raises to a power above 64")
        return super().call_binop(context, operator_name, left, right)


_CONSTANT_MUL = {nodes.Mul: operator.mul}


def static_template_problems(tree: nodes.Template) -> list[str]:
    """Blow-ups visible without running the template: a constant sequence multiplied past the
    output limit, a constant power too high."""
    problems = []
    for node in tree.find_all((nodes.Mul, nodes.Pow)):
        left, right = node.left, node.right
        if not (isinstance(left, nodes.Const) and isinstance(right, nodes.Const)):
            continue
        if isinstance(node, nodes.Pow):
            if isinstance(right.value, int) and abs(right.value) > 64:
                problems.append("a constant raised to a power above 64")
            continue
        for sequence, times in ((left.value, right.value), (right.value, left.value)):
            size = _size(sequence)
            if size is not None and isinstance(times, int) and size * times > TEMPLATE_OUTPUT_LIMIT:
                problems.append(f"a constant multiplied to {size * times} characters, over the "
                                f"limit of {TEMPLATE_OUTPUT_LIMIT}")
    return problems


def render_bounded(template: Any, variables: dict[str, Any]) -> str:
    """Render, stopping as soon as the output passes :data:`TEMPLATE_OUTPUT_LIMIT`."""
    parts: list[str] = []
    produced = 0
    for chunk in template.generate(**variables):
        produced += len(chunk)
        if produced > TEMPLATE_OUTPUT_LIMIT:
            raise BoundExceeded(f"the template produced more than {TEMPLATE_OUTPUT_LIMIT} characters")
        parts.append(chunk)
    return "".join(parts)


# --- the worker process ---------------------------------------------------------------------------


def _worker_main(connection: multiprocessing.connection.Connection, memory_bytes: int,
                 preload: tuple[str, ...]) -> None:
    """Serve evaluations until the pipe closes: (function, args) in, ("ok"|"error", value) out.
    The modules the functions live in are imported first, so no call pays for an import."""
    import importlib

    for module in preload:
        importlib.import_module(module)
    with contextlib.suppress(ValueError, OSError):  # a lower hard limit already in place
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    connection.send(("ready", None))
    while True:
        try:
            function, args = connection.recv()
        except EOFError:
            return
        try:
            connection.send(("ok", function(*args)))
        except MemoryError:
            connection.send(("error", BoundExceeded("the expression ran out of memory")))
        except Exception as error:  # noqa: BLE001 - sent back to be raised in the caller
            connection.send(("error", error))


class ExpressionWorker:
    """A pool of worker processes that evaluate expressions with a time limit.

    A call waits for a free worker (at most ``size`` evaluations run at once), sends the
    function and its arguments, and waits up to ``seconds``; a worker that does not answer in
    time is killed and replaced. The event loop only waits on a pipe.
    """

    def __init__(self, preload: tuple[str, ...] = (), size: int = 2,
                 seconds: float = EVALUATION_SECONDS, memory_bytes: int = WORKER_MEMORY_BYTES) -> None:
        self.preload = preload
        self.seconds = seconds
        self.memory_bytes = memory_bytes
        self._idle: asyncio.Queue[tuple[Any, multiprocessing.connection.Connection] | None] = asyncio.Queue()
        for _ in range(size):
            self._idle.put_nowait(None)  # a slot; its process starts on first use
        self._context = multiprocessing.get_context("spawn")
        self._all: set[Any] = set()

    def _start(self) -> tuple[Any, multiprocessing.connection.Connection]:
        ours, theirs = self._context.Pipe()
        process = self._context.Process(target=_worker_main,
                                        args=(theirs, self.memory_bytes, self.preload),
                                        daemon=True, name="kagent-expressions")
        process.start()
        theirs.close()
        self._all.add(process)
        if not ours.poll(STARTUP_SECONDS):
            self._kill(process, ours)
            raise BoundExceeded(f"the expression worker did not start within {STARTUP_SECONDS:g}s")
        ours.recv()  # "ready"
        return process, ours

    async def call(self, function: Callable[..., Any], *args: Any) -> Any:
        slot = await self._idle.get()
        try:
            if slot is None or not slot[0].is_alive():
                slot = await asyncio.to_thread(self._start)
            process, connection = slot
            try:
                connection.send((function, args))
            except OSError:  # the worker died since its last call: start another
                self._kill(process, connection)
                slot = await asyncio.to_thread(self._start)
                process, connection = slot
                connection.send((function, args))
            ready = asyncio.Event()
            loop = asyncio.get_running_loop()
            descriptor = connection.fileno()
            loop.add_reader(descriptor, ready.set)
            try:
                await asyncio.wait_for(ready.wait(), self.seconds)
            except TimeoutError:
                timed_out = True
            else:
                timed_out = False
            finally:
                loop.remove_reader(descriptor)  # before the pipe closes: its number is reused
            if timed_out:
                self._kill(process, connection)
                slot = None
                raise BoundExceeded(f"the expression did not finish within {self.seconds:g}s; "
                                    "simplify it")
            try:
                outcome, value = connection.recv()
            except EOFError:
                self._kill(process, connection)
                slot = None
                raise BoundExceeded("the expression's worker died (out of memory?)") from None
            if outcome == "error":
                raise value
            return value
        finally:
            self._idle.put_nowait(slot)

    def _kill(self, process: Any, connection: multiprocessing.connection.Connection) -> None:
        process.kill()
        process.join(5)
        connection.close()
        self._all.discard(process)

    def close(self) -> None:
        for process in list(self._all):
            process.kill()
            process.join(5)
        self._all.clear()
