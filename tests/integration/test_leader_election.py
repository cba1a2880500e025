"""One leader, provably: two electors whose clocks disagree by minutes never lead at once; a leader
that cannot renew in time stops before anyone else may start; a deposed leader's late status
write is refused by its resourceVersion precondition."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import lightkube
import pytest
from lightkube.core.exceptions import ApiError
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import ConfigMap

from kagent.api.labels import LEASE_NAME
from kagent.controller import operator
from kagent.controller.leader import LeaderElector
from kagent.controller.settings import ControllerSettings
from kagent.kube import async_client
from kagent.kube.client import patch_if_unchanged
from kagent.local.controlplane import ControlPlane, install_crds

pytestmark = pytest.mark.integration


def _skewed(offset: timedelta) -> Callable[[], datetime]:
    return lambda: datetime.now(UTC) + offset


class Stalls:
    """A client whose Lease writes hang while ``stalled`` is set: a leader cut off from the
    API server (the request never answers)."""

    def __init__(self, client: lightkube.AsyncClient) -> None:
        self.client = client
        self.stalled = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    async def replace(self, obj: Any, *args: Any, **kwargs: Any) -> Any:
        while self.stalled:
            await asyncio.sleep(0.05)
        return await self.client.replace(obj, *args, **kwargs)


async def test_skewed_clocks_and_a_stalled_leader_never_give_two_leaders(
        kube_client: lightkube.AsyncClient, namespace: str) -> None:
    intervals: dict[str, list[list[float]]] = {"ahead": [], "behind": []}

    def work(who: str) -> Callable[[], Any]:
        async def lead() -> None:
            intervals[who].append([time.monotonic(), float("inf")])
            try:
                await asyncio.Event().wait()
            finally:
                intervals[who][-1][1] = time.monotonic()
        return lead

    stalling = Stalls(kube_client)
    # One replica's clock is five minutes ahead, the other's five behind: comparing a remote
    # renewTime with the local clock would let "ahead" take the lease at once.
    ahead = LeaderElector(kube_client, namespace, "leader", "ahead", lease_seconds=3,
                          clock=_skewed(timedelta(minutes=5)))
    behind = LeaderElector(stalling, namespace, "leader", "behind", lease_seconds=3,  # type: ignore[arg-type]
                           clock=_skewed(timedelta(minutes=-5)))
    behind_task = asyncio.create_task(behind.run(work("behind")))
    while not behind.is_leader:
        await asyncio.sleep(0.05)
    ahead_task = asyncio.create_task(ahead.run(work("ahead")))
    await asyncio.sleep(8)  # several lease durations: "behind" renews, "ahead" must wait
    assert behind.is_leader and not ahead.is_leader
    assert intervals["ahead"] == []

    stalling.stalled = True  # "behind" can no longer renew: it must stop within its deadline
    stalled_at = time.monotonic()
    # Wait for the new leader's work itself to start: is_leader is set the moment the Lease is
    # won, one loop turn before the work task first runs.
    while not intervals["ahead"]:
        await asyncio.sleep(0.05)
        assert time.monotonic() - stalled_at < 30
    assert ahead.is_leader and not behind.is_leader
    stopped = intervals["behind"][-1][1]
    started = intervals["ahead"][-1][0]
    assert stopped - stalled_at <= behind.renew_deadline + behind.retry_seconds + 0.5
    assert stopped < started, "the stalled leader was still working when the other took over"
    stalling.stalled = False
    await asyncio.sleep(4)
    for task in (ahead_task, behind_task):
        task.cancel()
    await asyncio.gather(ahead_task, behind_task, return_exceptions=True)
    # Never two at once, over the whole run.
    spans = sorted(span for spans in intervals.values() for span in spans)
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert end <= start


async def test_a_deposed_leaders_late_write_is_refused(kube_client: lightkube.AsyncClient,
                                                       namespace: str) -> None:
    created = await kube_client.create(ConfigMap(metadata=ObjectMeta(name="state", namespace=namespace),
                                                 data={"written-by": "nobody"}))
    seen = created.metadata.resourceVersion
    # The new leader writes first...
    await patch_if_unchanged(kube_client, ConfigMap, "state", namespace, {"data": {"written-by": "new"}},
                             resource_version=seen)
    # ...and the old one's write, based on what it read before, is refused.
    with pytest.raises(ApiError) as refused:
        await patch_if_unchanged(kube_client, ConfigMap, "state", namespace,
                                 {"data": {"written-by": "old"}}, resource_version=seen)
    assert refused.value.status.code == 409
    current = await kube_client.get(ConfigMap, "state", namespace=namespace)
    assert current.data == {"written-by": "new"}


POOL_SIZE = 100
"""httpx's default connection limit, which the controller's client keeps."""


async def test_the_lease_is_renewed_while_the_controller_is_saturated_or_its_loop_is_busy(
        control_plane: ControlPlane, kube_client: lightkube.AsyncClient,
        kube_sync_client: lightkube.Client, namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The controller runs in this process. First its main client's every connection is held by
    a long request (as ~300 KB WorkflowRun status writes hold them): the Lease is still taken
    and renewed again and again. Then its event loop is kept busy for longer than the renew
    deadline (as parsing large answers keeps it): the Lease is renewed all along, by the same
    holder, with no new transition."""
    from kagent import agentclient

    install_crds(control_plane)
    # What the controller sets for its process, put back after the test.
    monkeypatch.setenv("KUBECONFIG", str(control_plane.kubeconfig))
    monkeypatch.setattr(agentclient, "_default_credentials", agentclient._default_credentials)
    main = async_client(control_plane.kubeconfig, timeout=60)

    async def hold_a_connection() -> None:
        async for _ in main.watch(ConfigMap, namespace=namespace):
            pass

    holders = [asyncio.create_task(hold_a_connection()) for _ in range(POOL_SIZE)]
    settings = ControllerSettings(namespace=namespace, identity="saturated", metrics_port=None,
                                  kubeconfig=control_plane.kubeconfig, webhook=None,
                                  lease_seconds=3)
    controller = asyncio.create_task(operator.run(settings, client=main))
    try:
        await asyncio.sleep(1)
        # The main client has no connection left: its requests wait for the pool.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(main.get(ConfigMap, "kube-root-ca.crt", namespace=namespace), 3)
        renewals: list[datetime] = []
        deadline = time.monotonic() + 60
        while len(renewals) < 5:
            assert time.monotonic() < deadline, f"the Lease was renewed only at {renewals}"
            assert not controller.done(), controller
            try:
                lease = await kube_client.get(Lease, LEASE_NAME, namespace=namespace)
            except ApiError as error:
                if error.status.code != 404:
                    raise
                await asyncio.sleep(0.2)
                continue
            assert lease.spec.holderIdentity == "saturated"
            renewed = lease.spec.renewTime
            if not renewals or renewed != renewals[-1]:
                renewals.append(renewed)
            await asyncio.sleep(0.3)
        assert renewals == sorted(renewals) and len(set(renewals)) == len(renewals)
        assert all(not h.done() for h in holders), "a held connection was let go"

        # The event loop busy for 2.5 renew deadlines: a thread watches the Lease meanwhile.
        seen: list[tuple[str, datetime, int]] = []
        busy = threading.Event()

        def watch_lease() -> None:
            while busy.is_set():
                spec = kube_sync_client.get(Lease, LEASE_NAME, namespace=namespace).spec
                seen.append((spec.holderIdentity, spec.renewTime, spec.leaseTransitions or 0))
                time.sleep(0.2)

        transitions = (await kube_client.get(Lease, LEASE_NAME, namespace=namespace)).spec.leaseTransitions
        busy.set()
        watcher = threading.Thread(target=watch_lease)
        watcher.start()
        time.sleep(settings.lease_seconds * 2 / 3 * 2.5)  # noqa: ASYNC251 - blocks the controller's loop
        busy.clear()
        watcher.join()
        assert {holder for holder, _, _ in seen} == {"saturated"}
        assert {count for _, _, count in seen} == {transitions or 0}
        during = sorted({renewed for _, renewed, _ in seen})
        assert len(during) >= 3, f"renewed only at {during} while the loop was busy"
        assert not controller.done(), controller
    finally:
        controller.cancel()
        await asyncio.gather(controller, return_exceptions=True)
        for holder in holders:
            holder.cancel()
        await asyncio.gather(*holders, return_exceptions=True)
        await main.close()
    # Cancelled, the controller handed the Lease back.
    released = await kube_client.get(Lease, LEASE_NAME, namespace=namespace)
    assert released.spec.holderIdentity is None
