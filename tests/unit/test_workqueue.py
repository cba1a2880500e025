"""The controller's work queue: dedup, no concurrent processing of one key, retries."""

from __future__ import annotations

import asyncio

from kagent.controller.queue import WorkQueue


async def test_dedup_and_no_concurrent_processing() -> None:
    queue: WorkQueue[str] = WorkQueue()
    running: set[str] = set()
    seen: list[str] = []
    overlap = False

    async def handler(key: str) -> None:
        nonlocal overlap
        if key in running:
            overlap = True
        running.add(key)
        seen.append(key)
        await asyncio.sleep(0.05)
        running.discard(key)
        return None

    for _ in range(5):
        queue.add("a")
    queue.add("b")
    task = asyncio.create_task(queue.run(handler, workers=4))
    await asyncio.sleep(0.01)
    queue.add("a")  # while "a" is processing: processed once more afterwards
    await asyncio.sleep(0.2)
    await queue.drained()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert sorted(seen) == ["a", "a", "b"]
    assert not overlap


async def test_failures_are_retried_with_backoff() -> None:
    queue: WorkQueue[str] = WorkQueue(base_delay=0.01, max_delay=0.05)
    attempts = 0

    async def handler(key: str) -> None:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise RuntimeError("boom")
        return None

    queue.add("x")
    task = asyncio.create_task(queue.run(handler, workers=1))
    for _ in range(100):
        if attempts >= 3:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert attempts == 3
    assert queue.retry_delay("x") == 0.01  # success reset the backoff


async def test_a_sooner_requeue_replaces_a_later_one() -> None:
    queue: WorkQueue[str] = WorkQueue()
    seen: list[str] = []

    async def handler(key: str) -> None:
        seen.append(key)
        return None

    queue.add_after("k", 300.0)
    queue.add_after("k", 0.02)
    queue.add_after("k", 60.0)  # later than what is pending: ignored
    task = asyncio.create_task(queue.run(handler, workers=1))
    await asyncio.sleep(0.1)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert seen == ["k"]
