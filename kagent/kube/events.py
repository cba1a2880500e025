"""Kubernetes Events on condition transitions, so `kubectl describe` tells the story."""

from __future__ import annotations

import logging
import uuid
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
