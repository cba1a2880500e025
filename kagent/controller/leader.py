"""Leader election on a coordination.k8s.io Lease, with client-go's semantics.

Every controller replica serves the webhook; only the holder of the Lease reconciles. What keeps
two replicas from working at once, whatever their clocks say (as client-go's leaderelection):

- a follower never compares the holder's ``renewTime`` with its own clock: it notes *when it
  observed* the Lease record change, and takes over only after ``lease_seconds`` of its own
  monotonic time have passed with no change;
- the leader renews every ``retry_seconds``, each attempt bounded, and stops leading once
  ``renew_deadline`` (shorter than the lease) has passed since its last successful renewal —
  before any follower can consider the lease expired;
- the moment leadership is lost, all the leader's work is cancelled;
- every write of the Lease is a compare-and-swap on its resourceVersion;
- the elector runs on its own thread, with its own event loop and its own client
  (:class:`ElectionThread`, :func:`election_client`): a renewal never waits for a connection
  behind the controller's other traffic (large WorkflowRun status writes, a busy pool), nor for
  the controller's event loop to finish parsing a large answer, and so never lags past its
  deadline while the controller is merely busy.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.models.coordination_v1 import LeaseSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.coordination_v1 import Lease

from kagent.kube import async_client
from kagent.kube.incluster import owner_references

log = logging.getLogger("kagent.controller.leader")

STOP_TIMEOUT = 30.0
"""How long the cancelled work may take to unwind once leadership is lost."""


ELECTION_REQUEST_TIMEOUT = 10.0
"""A Lease request's own timeout; each attempt is bounded tighter still by the renew deadline."""


def election_client(kubeconfig: Path | None = None) -> AsyncClient:
    """A client for leader election alone. Sharing the controller's client would put Lease
    renewals in the same connection pool as the status writes of every run: with the pool busy
    a renewal waits for a connection and the leader loses the Lease while it is healthy."""
    return async_client(kubeconfig, timeout=ELECTION_REQUEST_TIMEOUT)


def _wall_clock() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class LeaseRecord:
    """What the Lease says; a change of any part means its holder is alive."""

    holder: str | None
    renew_time: datetime | None
    acquire_time: datetime | None
    transitions: int
    duration: int

    @classmethod
    def of(cls, lease: Lease) -> LeaseRecord:
        spec = lease.spec or LeaseSpec()
        return cls(spec.holderIdentity or None, spec.renewTime, spec.acquireTime,
                   spec.leaseTransitions or 0, spec.leaseDurationSeconds or 0)


class LeaderElector:
    def __init__(
        self,
        client: AsyncClient,
        namespace: str,
        name: str,
        identity: str,
        lease_seconds: int = 15,
        renew_deadline: float | None = None,
        retry_seconds: float | None = None,
        clock: Callable[[], datetime] = _wall_clock,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_seconds = lease_seconds
        # client-go's defaults are 15 s / 10 s / 2 s: keep their proportions.
        self.renew_deadline = renew_deadline if renew_deadline is not None else lease_seconds * 2 / 3
        self.retry_seconds = retry_seconds if retry_seconds is not None else min(2.0, lease_seconds / 5)
        if not 0 < self.retry_seconds < self.renew_deadline < lease_seconds:
            raise ValueError("leader election needs retry < renew deadline < lease duration, got "
                             f"{self.retry_seconds} / {self.renew_deadline} / {lease_seconds}")
        self.clock = clock
        self.monotonic = monotonic
        self.is_leader = False
        self._has_led = False
        self._observed: LeaseRecord | None = None
        self._observed_at = 0.0

    def _observe(self, record: LeaseRecord) -> None:
        if record != self._observed:
            self._observed = record
            self._observed_at = self.monotonic()

    async def try_acquire_or_renew(self) -> bool:
        """One attempt, as client-go's tryAcquireOrRenew: True if we hold the lease after it."""
        now = self.clock()
        try:
            lease = await self.client.get(Lease, self.name, namespace=self.namespace)
        except ApiError as error:
            if error.status.code != 404:
                raise
            return await self._create(now)
        record = LeaseRecord.of(lease)
        self._observe(record)
        held_by_other = record.holder not in (None, self.identity)
        duration = record.duration or self.lease_seconds
        if held_by_other and self._observed_at + duration > self.monotonic():
            return False
        spec = lease.spec or LeaseSpec()
        if record.holder != self.identity:
            spec.acquireTime = now
            spec.leaseTransitions = record.transitions + 1
        spec.holderIdentity = self.identity
        spec.leaseDurationSeconds = self.lease_seconds
        spec.renewTime = now
        lease.spec = spec
        try:
            updated = await self.client.replace(lease)  # resourceVersion: a compare-and-swap
        except ApiError as error:
            if error.status.code == 409:
                return False
            raise
        self._observe(LeaseRecord.of(updated))
        return True

    async def _create(self, now: datetime) -> bool:
        lease = Lease(
            metadata=ObjectMeta(name=self.name, namespace=self.namespace,
                                ownerReferences=owner_references(self.namespace)),
            spec=LeaseSpec(holderIdentity=self.identity, leaseDurationSeconds=self.lease_seconds,
                           acquireTime=now, renewTime=now, leaseTransitions=0),
        )
        try:
            created = await self.client.create(lease)
        except ApiError as error:
            if error.status.code == 409:
                return False
            raise
        self._observe(LeaseRecord.of(created))
        return True

    async def _attempt(self, timeout: float) -> bool | None:
        """One bounded attempt: True/False as above, None if it failed or took too long."""
        try:
            return await asyncio.wait_for(self.try_acquire_or_renew(), max(timeout, 0.01))
        except TimeoutError:
            log.warning("leader election: the Lease did not answer within %.1fs", timeout)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001 - the apiserver may be briefly unreachable
            log.warning("leader election: could not reach the Lease: %s", error)
        return None

    async def run(self, lead: Callable[[], Awaitable[None]]) -> None:
        """Wait for the lease, then run ``lead()`` while renewing it; cancel it the moment the
        lease is lost. Repeats until cancelled."""
        while True:
            if not await self._attempt(self.retry_seconds):
                await asyncio.sleep(self.retry_seconds)
                continue
            acquired_at = self.monotonic()
            log.info("became the leader (%s)", self.identity)
            self.is_leader = self._has_led = True
            task = asyncio.create_task(lead(), name="leader-work")
            try:
                await self._renew_until_lost(task, acquired_at)
            finally:
                self.is_leader = False
                task.cancel()
                try:
                    await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), STOP_TIMEOUT)
                except TimeoutError:
                    log.error("the leader's work did not stop within %.0fs", STOP_TIMEOUT)
            log.warning("lost leadership (%s)", self.identity)

    async def _renew_until_lost(self, task: asyncio.Task[None], last_renewal: float) -> None:
        while not task.done():
            await asyncio.wait({task}, timeout=self.retry_seconds)
            if task.done():
                return
            left = last_renewal + self.renew_deadline - self.monotonic()
            outcome = await self._attempt(left)
            if outcome:
                last_renewal = self.monotonic()
            elif outcome is False:
                log.warning("another replica holds the lease")
                return
            elif self.monotonic() - last_renewal >= self.renew_deadline:
                log.warning("could not renew the lease within %.1fs", self.renew_deadline)
                return

    async def release(self) -> None:
        """Hand the lease back on a clean shutdown so a successor starts at once."""
        if not self._has_led:
            return
        try:
            lease = await self.client.get(Lease, self.name, namespace=self.namespace)
            if lease.spec and lease.spec.holderIdentity == self.identity:
                lease.spec.holderIdentity = None
                lease.spec.renewTime = None
                await self.client.replace(lease)
        except ApiError:
            log.warning("could not release the lease")


class ElectionThread:
    """A :class:`LeaderElector` on a thread of its own, leading on the caller's event loop.

    The elector (made by ``make_elector`` on the election thread, with a client of its own) runs
    there; ``lead()`` runs on the loop that called :meth:`run`. Losing the Lease cancels
    ``lead()`` there and waits for it to unwind, exactly as a same-loop elector does; cancelling
    :meth:`run` stops the elector and hands the Lease back."""

    def __init__(self, make_elector: Callable[[], LeaderElector]) -> None:
        self.make_elector = make_elector
        self.elector: LeaderElector | None = None

    @property
    def is_leader(self) -> bool:
        return self.elector is not None and self.elector.is_leader

    async def run(self, lead: Callable[[], Awaitable[None]]) -> None:
        main = asyncio.get_running_loop()
        stop = threading.Event()
        failed: concurrent.futures.Future[None] = concurrent.futures.Future()
        thread = threading.Thread(target=self._thread_main, args=(main, lead, stop, failed),
                                  name="leader-election", daemon=True)
        thread.start()
        try:
            await asyncio.wrap_future(failed)  # only an elector that crashed ends this
        finally:
            stop.set()
            # The thread waits for lead() to unwind on this loop: keep the loop free meanwhile.
            await asyncio.to_thread(thread.join, STOP_TIMEOUT + 10)

    def _thread_main(self, main: asyncio.AbstractEventLoop, lead: Callable[[], Awaitable[None]],
                     stop: threading.Event, failed: concurrent.futures.Future[None]) -> None:
        try:
            asyncio.run(self._elect(main, lead, stop))
        except BaseException as error:  # noqa: BLE001 - handed to the caller's loop
            if not failed.done():
                failed.set_exception(error)
            return
        if not failed.done():
            failed.set_exception(RuntimeError("leader election stopped"))

    async def _elect(self, main: asyncio.AbstractEventLoop, lead: Callable[[], Awaitable[None]],
                     stop: threading.Event) -> None:
        elector = self.elector = self.make_elector()
        try:
            election = asyncio.create_task(elector.run(lambda: run_on(main, lead)))
            while not stop.is_set() and not election.done():
                await asyncio.wait({election}, timeout=0.1)
            if election.done():
                election.result()  # raises what stopped it
                return
            election.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await election
            await elector.release()
        finally:
            await elector.client.close()


async def run_on(loop: asyncio.AbstractEventLoop, work: Callable[[], Awaitable[None]]) -> None:
    """Run ``work()`` on another thread's ``loop`` as if it ran here: it ends when it ends there,
    and cancelling this cancels it there and waits until it has unwound."""
    here = asyncio.get_running_loop()
    finished: asyncio.Future[None] = here.create_future()
    started: concurrent.futures.Future[asyncio.Task[None]] = concurrent.futures.Future()

    def settle(task: asyncio.Task[None]) -> None:
        if finished.done():
            return
        if task.cancelled():
            finished.cancel()
        elif task.exception() is not None:
            finished.set_exception(task.exception())  # type: ignore[arg-type]
        else:
            finished.set_result(None)

    def launch() -> None:
        async def wrapped() -> None:
            await work()

        task = loop.create_task(wrapped(), name="leader-work")
        task.add_done_callback(lambda t: here.call_soon_threadsafe(settle, t))
        started.set_result(task)

    loop.call_soon_threadsafe(launch)
    try:
        await asyncio.shield(finished)
    except asyncio.CancelledError:
        if not finished.done():
            task = await asyncio.wrap_future(started)
            loop.call_soon_threadsafe(task.cancel)
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await finished
        raise
