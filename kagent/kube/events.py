"""Kubernetes Events on condition transitions and failures, so `kubectl describe` tells the story."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.models.core_v1 import EventSource, ObjectReference
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Event

from kagent.api.labels import EVENT_COMPONENT as COMPONENT

log = logging.getLogger("kagent.kube.events")


async def post_event(
    client: AsyncClient, involved: dict[str, Any], type_: str, reason: str, message: str
) -> None:
    """Record an Event about ``involved`` (apiVersion, kind, metadata). Never raises."""
    meta = involved.get("metadata", {})
    now = datetime.now(UTC)
    event = Event(
        metadata=ObjectMeta(
            name=f"{meta.get('name')}.{uuid.uuid4().hex[:12]}", namespace=meta.get("namespace")
        ),
        involvedObject=ObjectReference(
            apiVersion=involved.get("apiVersion"),
            kind=involved.get("kind"),
            name=meta.get("name"),
            namespace=meta.get("namespace"),
            uid=meta.get("uid"),
            resourceVersion=meta.get("resourceVersion"),
        ),
        reason=reason,
        message=message[:1024],
        type=type_,
        source=EventSource(component=COMPONENT),
        firstTimestamp=now,
        lastTimestamp=now,
        count=1,
        reportingComponent=COMPONENT,
    )
    try:
        await client.create(event)
    except ApiError:
        log.warning("could not post event %s on %s", reason, meta.get("name"))


class EventRecorder:
    """Posts Events off the reconcile path, as client-go's event broadcaster does: a bounded
    queue (when full, an Event is dropped and logged rather than slowing reconciles), a few
    senders, and the same (object, type, reason, message) recorded at most once per
    ``repeat_seconds`` so a failing object cannot flood the namespace."""

    def __init__(self, client: AsyncClient, *, capacity: int = 2000, senders: int = 2,
                 repeat_seconds: float = 600.0, remembered: int = 10_000) -> None:
        self.client = client
        self.senders = senders
        self.repeat_seconds = repeat_seconds
        self.remembered = remembered
        self.dropped = 0
        self._queue: asyncio.Queue[tuple[dict[str, Any], str, str, str]] = asyncio.Queue(capacity)
        self._recent: OrderedDict[tuple[str, str, str, str], float] = OrderedDict()

    def record(self, involved: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """Queue an Event about ``involved`` (apiVersion, kind, metadata); never blocks."""
        meta = involved.get("metadata") or {}
        key = (str(meta.get("uid") or meta.get("name")), type_, reason, message)
        now = time.monotonic()
        seen = self._recent.get(key)
        if seen is not None and now - seen < self.repeat_seconds:
            return
        self._recent[key] = now
        self._recent.move_to_end(key)
        while len(self._recent) > self.remembered:
            self._recent.popitem(last=False)
        try:
            self._queue.put_nowait((involved, type_, reason, message))
        except asyncio.QueueFull:
            self.dropped += 1
            log.warning("event queue full: dropped %s on %s", reason, meta.get("name"))

    async def run(self) -> None:
        """Send queued Events until cancelled."""

        async def sender() -> None:
            while True:
                involved, type_, reason, message = await self._queue.get()
                try:
                    await post_event(self.client, involved, type_, reason, message)
                except Exception as error:  # noqa: BLE001 - e.g. the API server unreachable
                    log.warning("could not post event %s: %s", reason, type(error).__name__)
                finally:
                    self._queue.task_done()

        await asyncio.gather(*(sender() for _ in range(self.senders)))

    async def flush(self) -> None:
        """Wait until every queued Event was sent (tests)."""
        await self._queue.join()
