"""Leader election on a coordination.k8s.io Lease, as client-go does it.

Every controller replica serves the webhook; only the holder of the Lease reconciles. A leader
that cannot renew within the lease duration stops reconciling before anyone else can take over,
so two replicas never work at once; a killed leader is replaced once its lease expires.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.models.coordination_v1 import LeaseSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.coordination_v1 import Lease

from kagent.kube.incluster import owner_references

log = logging.getLogger("kagent.controller.leader")


def _now() -> datetime:
    return datetime.now(UTC)


class LeaderElector:
    def __init__(
        self,
        client: AsyncClient,
        namespace: str,
        name: str,
        identity: str,
        lease_seconds: int = 15,
        renew_seconds: float = 5.0,
        retry_seconds: float = 2.0,
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_seconds = lease_seconds
        self.renew_seconds = renew_seconds
        self.retry_seconds = retry_seconds
        self.is_leader = False

    async def _try_acquire_or_renew(self) -> bool:
        now = _now()
        try:
            lease = await self.client.get(Lease, self.name, namespace=self.namespace)
        except ApiError as error:
            if error.status.code != 404:
                raise
            lease = Lease(
                metadata=ObjectMeta(name=self.name, namespace=self.namespace,
                                    ownerReferences=owner_references(self.namespace)),
                spec=LeaseSpec(
                    holderIdentity=self.identity,
                    leaseDurationSeconds=self.lease_seconds,
                    acquireTime=now,
                    renewTime=now,
                    leaseTransitions=0,
                ),
            )
            try:
                await self.client.create(lease)
                return True
            except ApiError as create_error:
                if create_error.status.code == 409:
                    return False
                raise
        spec = lease.spec or LeaseSpec()
        holder = spec.holderIdentity
        renewed = spec.renewTime
        duration = spec.leaseDurationSeconds or self.lease_seconds
        expired = renewed is None or renewed + timedelta(seconds=duration) < now
        if holder not in (self.identity, None, "") and not expired:
            return False
        if holder != self.identity:
            spec.acquireTime = now
            spec.leaseTransitions = (spec.leaseTransitions or 0) + 1
        spec.holderIdentity = self.identity
        spec.leaseDurationSeconds = self.lease_seconds
        spec.renewTime = now
        lease.spec = spec
        try:
            await self.client.replace(lease)  # resourceVersion makes this a compare-and-swap
        except ApiError as error:
            if error.status.code == 409:
                return False
            raise
        return True

    async def run(self, lead: Callable[[], Awaitable[None]]) -> None:
        """Wait for the lease, then run ``lead()`` while renewing it; stop it if renewal fails."""
        while True:
            try:
                acquired = await self._try_acquire_or_renew()
            except Exception:  # noqa: BLE001 - the apiserver may be briefly unreachable
                log.exception("leader election: could not reach the Lease")
                acquired = False
            if not acquired:
                await asyncio.sleep(self.retry_seconds)
                continue
            log.info("became the leader (%s)", self.identity)
            self.is_leader = True
            task = asyncio.create_task(lead())
            try:
                await self._renew_until_lost(task)
            finally:
                self.is_leader = False
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            log.warning("lost leadership (%s)", self.identity)

    async def _renew_until_lost(self, task: asyncio.Task[None]) -> None:
        last_renewal = _now()
        while not task.done():
            await asyncio.sleep(self.renew_seconds)
            try:
                if await self._try_acquire_or_renew():
                    last_renewal = _now()
                    continue
                return  # someone else holds it
            except Exception:  # noqa: BLE001
                log.exception("leader election: renewal failed")
            # Give up before the lease can expire for the others.
            if _now() - last_renewal > timedelta(seconds=self.lease_seconds * 2 / 3):
                return

    async def release(self) -> None:
        """Hand the lease back on a clean shutdown so a successor starts at once."""
        if not self.is_leader:
            return
        try:
            lease = await self.client.get(Lease, self.name, namespace=self.namespace)
            if lease.spec and lease.spec.holderIdentity == self.identity:
                lease.spec.holderIdentity = None
                lease.spec.renewTime = None
                await self.client.replace(lease)
        except ApiError:
            log.warning("could not release the lease")
