"""A work queue in the style of client-go's: a key is queued at most once, is never processed by
two workers at once, and failed keys come back after an exponential backoff."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

Key = TypeVar("Key", bound=Hashable)


class WorkQueue(Generic[Key]):
    def __init__(self, base_delay: float = 0.5, max_delay: float = 300.0) -> None:
        self._queue: asyncio.Queue[Key] = asyncio.Queue()
        self._queued: set[Key] = set()
        self._processing: set[Key] = set()
        self._dirty: set[Key] = set()
        self._failures: dict[Key, int] = {}
        self._timers: dict[Key, asyncio.TimerHandle] = {}
        self._base_delay = base_delay
        self._max_delay = max_delay

    def add(self, key: Key) -> None:
        """Queue a key; a key being processed is queued again once its worker is done."""
        if key in self._processing:
            self._dirty.add(key)
            return
        if key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)

    def add_after(self, key: Key, delay: float) -> None:
        """Queue a key after a delay; if it is already waiting, the sooner time wins."""
        loop = asyncio.get_running_loop()
        pending = self._timers.get(key)
        if pending is not None:
            if pending.when() <= loop.time() + delay:
                return
            pending.cancel()

        def fire() -> None:
            self._timers.pop(key, None)
            self.add(key)

        self._timers[key] = loop.call_later(delay, fire)

    def retry_delay(self, key: Key) -> float:
        failures = self._failures.get(key, 0)
        return min(self._base_delay * (2**failures), self._max_delay)

    def __len__(self) -> int:
        return self._queue.qsize()

    async def _process_one(self, handler: Callable[[Key], Awaitable[float | None]]) -> None:
        key = await self._queue.get()
        self._queued.discard(key)
        self._processing.add(key)
        try:
            requeue_after = await handler(key)
        except asyncio.CancelledError:
            raise
        except Exception:
            delay = self.retry_delay(key)
            self._failures[key] = self._failures.get(key, 0) + 1
            self.add_after(key, delay)
        else:
            self._failures.pop(key, None)
            if requeue_after:
                self.add_after(key, requeue_after)
        finally:
            self._processing.discard(key)
            self._queue.task_done()
            if key in self._dirty:
                self._dirty.discard(key)
                self.add(key)

    async def run(self, handler: Callable[[Key], Awaitable[float | None]], workers: int) -> None:
        """Process keys with ``workers`` concurrent workers until cancelled.

        The handler returns seconds after which to look at the key again, or None; an exception
        requeues the key with backoff (the handler is expected to have logged it).
        """

        async def worker() -> None:
            while True:
                await self._process_one(handler)

        tasks = [asyncio.create_task(worker()) for _ in range(workers)]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            for timer in self._timers.values():
                timer.cancel()
            self._timers.clear()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*tasks, return_exceptions=True)

    async def drained(self) -> None:
        """Wait until nothing is queued or being processed (for tests and benchmarks)."""
        while self._queued or self._processing or self._dirty:
            await asyncio.sleep(0.01)
