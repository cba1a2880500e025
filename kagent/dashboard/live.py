"""Kubernetes watches turned into batches of changes for the browser.

A :class:`Feed` follows several :class:`Source`\\ s (a kind in a namespace, optionally narrowed by
labels or fields) with the viewer's own client: it lists, sends the projected items, then
watches from the list's resourceVersion and sends what changes. A watch that expires (410 Gone)
or breaks is followed by a fresh list. Changes are coalesced per object and sent at most a few
times a second, so a burst of thousands of updates costs the browser a handful of renders, and
the memory held is bounded by the number of objects, never by the number of events.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx2
from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError

from kagent.dashboard.access import api_message

log = logging.getLogger("kagent.dashboard")

FLUSH_SECONDS = 0.2
LIST_CHUNK = 500
RETRY_SECONDS = (1.0, 2.0, 5.0, 10.0)

Projection = Callable[[dict[str, Any]], dict[str, Any] | None]


def _name(doc: dict[str, Any]) -> str:
    return str((doc.get("metadata") or {}).get("name", ""))


@dataclass(frozen=True)
class Source:
    """One kind to follow; ``project`` turns an object into what the page shows (None: leave it
    out)."""

    collection: str
    resource: Any
    kind: str
    project: Projection
    labels: dict[str, Any] | None = None
    fields: dict[str, Any] | None = None
    optional: bool = False
    """An API that may not be served (KEDA's): a 404 means no objects, not an error."""
    send: bool = True
    """False: kept for the server's own use (pods for metrics), never sent to the browser."""
    key: Callable[[dict[str, Any]], str] = _name


@dataclass
class Feed:
    """The live state of one page for one viewer, and the changes still to send."""

    client: AsyncClient
    namespace: str
    sources: list[Source]
    state: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    _ops: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _listed: set[str] = field(default_factory=set)
    listeners: list[Callable[[str], None]] = field(default_factory=list)
    """Called with a collection's name after it changed (the metrics poller listens)."""

    # --- what the page receives -------------------------------------------------------------

    def _queue(self, collection: str, key: str, op: dict[str, Any], send: bool = True) -> None:
        for listener in self.listeners:
            listener(collection)
        if not send:
            return
        self._ops.pop((collection, key), None)  # re-queued at the end: order follows time
        self._ops[(collection, key)] = op
        self._changed.set()

    def reset(self, collection: str, items: dict[str, dict[str, Any]], send: bool = True) -> None:
        self.state[collection] = items
        self._listed.add(collection)
        if send:
            for queued in [k for k in self._ops if k[0] == collection]:
                del self._ops[queued]
        self._queue(collection, "\0reset", {"op": "reset", "collection": collection,
                                            "items": list(items.values())}, send)

    def upsert(self, collection: str, key: str, item: dict[str, Any], send: bool = True) -> None:
        items = self.state.setdefault(collection, {})
        if items.get(key) == item:
            return
        items[key] = item
        self._queue(collection, key, {"op": "upsert", "collection": collection, "item": item},
                    send)

    def delete(self, collection: str, key: str, send: bool = True) -> None:
        if self.state.get(collection, {}).pop(key, None) is None:
            return
        self._queue(collection, key, {"op": "delete", "collection": collection, "name": key},
                    send)

    def problem(self, collection: str, op: str, message: str) -> None:
        """``forbidden`` (the viewer may not read it) or ``error`` (it cannot be read now)."""
        self._queue(collection, "\0status", {"op": op, "collection": collection,
                                             "message": message})

    def listed(self, collection: str) -> bool:
        return collection in self._listed

    async def batches(self) -> AsyncIterator[list[dict[str, Any]]]:
        """Every change since the last batch, at most every FLUSH_SECONDS."""
        while True:
            await self._changed.wait()
            self._changed.clear()
            ops, self._ops = list(self._ops.values()), {}
            if ops:
                yield ops
            await asyncio.sleep(FLUSH_SECONDS)

    # --- following the API server ---------------------------------------------------------

    async def run(self) -> None:
        await asyncio.gather(*(self.follow(source) for source in self.sources))

    async def follow(self, source: Source) -> None:
        failures = 0
        while True:
            try:
                version = await self._list(source)
                failures = 0
                await self._watch(source, version)
            except ApiError as error:
                code = error.status.code
                if code in (401, 403):
                    self.reset(source.collection, {}, send=False)
                    self.problem(source.collection, "forbidden", api_message(error))
                    return
                if code == 404 and source.optional:
                    self.reset(source.collection, {}, source.send)
                    return
                if code == 410:
                    continue  # the watch's version expired: list again
                failures += 1
                self.problem(source.collection, "error", api_message(error))
            except (httpx2.HTTPError, OSError) as error:
                failures += 1
                self.problem(source.collection, "error",
                             f"cannot reach the Kubernetes API server: {error}")
            await asyncio.sleep(RETRY_SECONDS[min(failures, len(RETRY_SECONDS)) - 1]
                                if failures else 0)

    def _project(self, source: Source, doc: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
        doc.setdefault("kind", source.kind)
        return source.key(doc), source.project(doc)

    async def _list(self, source: Source) -> str:
        listing = self.client.list(source.resource, namespace=self.namespace,
                                   labels=source.labels, fields=source.fields,
                                   chunk_size=LIST_CHUNK)
        items: dict[str, dict[str, Any]] = {}
        async for obj in listing:
            key, item = self._project(source, obj.to_dict())
            if item is not None:
                items[key] = item
        self.reset(source.collection, items, source.send)
        return listing.resourceVersion

    async def _watch(self, source: Source, version: str) -> None:
        from lightkube.types import on_error_raise

        async for kind, obj in self.client.watch(
                source.resource, namespace=self.namespace, labels=source.labels,
                fields=source.fields, resource_version=version, on_error=on_error_raise):
            key, item = self._project(source, obj.to_dict())
            if kind == "DELETED" or item is None:
                self.delete(source.collection, key, source.send)
            elif kind in ("ADDED", "MODIFIED"):
                self.upsert(source.collection, key, item, source.send)
