"""Bounds on workflow expressions: CEL's static cost, templates that cannot blow up, and the
worker process that stops what slips past them."""

from __future__ import annotations

import asyncio
import time

import celpy
import pytest
from jinja2.sandbox import SecurityError

from kagent.workflow.bounded import (
    CEL_COST_BUDGET,
    BoundedSandbox,
    BoundExceeded,
    ExpressionWorker,
    cel_cost,
    render_bounded,
    static_template_problems,
)

ENV = celpy.Environment()
TEN = "[" + ",".join(str(i) for i in range(10)) + "]"


def nested_all(depth: int, over: str = TEN) -> str:
    text = "a > -1"
    for level in range(depth):
        text = f"{over}.all({'abcdefgh'[level]}, {text})"
    return text


def cost(text: str) -> int:
    return cel_cost(ENV.compile(text))


def test_ordinary_conditions_are_cheap() -> None:
    for text in ('steps.triage.output.contains("urgent")', "input.days > 1 && size(input.city) > 0",
                 'input.tags.exists(t, t == "vip")', '"abc".matches("a.*")'):
        assert cost(text) < CEL_COST_BUDGET / 5, text


def test_nested_comprehensions_cost_their_product() -> None:
    assert cost(nested_all(2)) < CEL_COST_BUDGET
    assert cost(nested_all(4)) > CEL_COST_BUDGET  # seconds of cel-python: refused
    assert cost(nested_all(3)) > 10 * cost(nested_all(2))


def test_comprehensions_over_run_data_are_budgeted_as_unknown_lists() -> None:
    assert cost("input.items.all(x, x > 0)") < CEL_COST_BUDGET
    assert cost("input.items.all(x, input.other.all(y, input.third.all(z, x + y + z > 0)))") > CEL_COST_BUDGET


def test_the_freezing_condition_from_the_report_is_over_budget() -> None:
    # 204 characters that took 13.8 s to evaluate.
    text = nested_all(5, "[1,2,3,4,5,6,7,8]")
    assert len(text) < 260
    assert cost(text) > CEL_COST_BUDGET


def test_a_template_cannot_multiply_a_string_past_the_limit() -> None:
    env = BoundedSandbox()
    template = env.from_string('{{ "ab" * 50000000 }}')
    started = time.perf_counter()
    with pytest.raises(SecurityError, match="over the limit"):
        template.render()
    assert time.perf_counter() - started < 1
    assert static_template_problems(env.parse('{{ "ab" * 50000000 }}'))
    assert static_template_problems(env.parse("{{ 10 ** 100000 }}"))
    assert not static_template_problems(env.parse('{{ "-" * 40 }} {{ input.x * 3 }}'))
    assert env.from_string('{{ "-" * 3 }}').render() == "---"


def test_template_output_is_cut_off_at_the_limit() -> None:
    template = BoundedSandbox().from_string('{% for i in range(100000) %}{{ "x" * 100 }}{% endfor %}')
    with pytest.raises(BoundExceeded, match="more than"):
        render_bounded(template, {})
    assert render_bounded(BoundedSandbox().from_string("hi {{ who }}"), {"who": "you"}) == "hi you"


def _sleep(seconds: float) -> str:
    time.sleep(seconds)
    return "woke"


def _allocate(megabytes: int) -> int:
    return len(bytearray(megabytes * 1024 * 1024))


def _fail() -> None:
    raise ValueError("no such step 'forcast'")


async def test_the_worker_stops_what_runs_too_long_and_recovers() -> None:
    worker = ExpressionWorker((__name__,), size=1, seconds=1.0, memory_bytes=512 * 1024 * 1024)
    try:
        assert await worker.call(_sleep, 0) == "woke"
        started = time.monotonic()
        with pytest.raises(BoundExceeded, match="did not finish within 1s"):
            await worker.call(_sleep, 30)
        assert time.monotonic() - started < 5
        assert await worker.call(_sleep, 0) == "woke"  # a new worker took its place
        with pytest.raises(BoundExceeded, match="out of memory"):
            await worker.call(_allocate, 2048)
        with pytest.raises(ValueError, match="forcast"):
            await worker.call(_fail)
        # The event loop stays free while a worker computes.
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(tick())
        await worker.call(_sleep, 0.5)
        ticker.cancel()
        assert ticks > 20
    finally:
        worker.close()


async def test_a_cancelled_evaluation_does_not_answer_the_next_call() -> None:
    """A run cancelled while its expression is evaluated: the worker is replaced, so the
    next call gets its own answer, not the abandoned one."""
    worker = ExpressionWorker((__name__,), size=1, seconds=5.0)
    try:
        abandoned = asyncio.create_task(worker.call(_sleep, 1))
        while not worker._all:  # the first worker takes a moment to start
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.3)  # it has the call now, and sleeps
        abandoned.cancel()
        with pytest.raises(asyncio.CancelledError):
            await abandoned
        assert await worker.call(_echo, "mine") == "mine"
    finally:
        worker.close()


def _echo(value: str) -> str:
    return value


def test_a_spawned_worker_does_not_run_the_command_line_again() -> None:
    """The controller runs as ``python -m kagent controller``; multiprocessing's spawn imports
    ``kagent.__main__`` as ``__mp_main__`` in each expression worker, which must not start a
    second controller (it did: two leaders with one identity)."""
    import subprocess
    import sys

    # A fresh interpreter, as a spawned worker is (and out of reach of pytest's import hooks).
    program = ("import runpy, sys; sys.argv = ['kagent', 'version']; "
               "runpy.run_module('kagent.__main__', run_name='__mp_main__'); print('nothing ran')")
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          timeout=60, check=False)
    assert (done.returncode, done.stdout) == (0, "nothing ran\n"), done.stderr
