"""Kubernetes watches turned into batches of changes for the browser.

A :class:`Feed` follows several :class:`Source`\\ s (a kind in a namespace, optionally narrowed by
labels or fields) with the viewer's own connection: it lists, sends the projected items, then
watches from the list's resourceVersion and sends what changes. A watch that expires (410 Gone)
or breaks is followed by a fresh list. Changes are coalesced per object and sent at most a few
times a second, so a burst of thousands of updates costs the browser a handful of renders, and
the memory held is bounded by the number of objects, never by the number of events.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx2
import msgspec
from lightkube.core.resource import api_info
from lightkube.core.selector import build_selector

from kagent.api.base import PrinterColumn
from kagent.dashboard.access import WATCH_SECONDS

log = logging.getLogger("kagent.dashboard")

FLUSH_SECONDS = 0.2
FIRST_BATCH_WAIT = 1.0
LINGER_SECONDS = 120.0
MAX_INFORMERS = 64
"""Informers one viewer keeps (pages open, or left less than LINGER_SECONDS ago)."""
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
    shape: Any = None
    """A msgspec Struct naming the only fields the projection reads (decoding skips the rest,
    e.g. the step outputs in a WorkflowRun's status); None decodes whole objects."""
    table: tuple[PrinterColumn, ...] | None = None
    """Ask the API server for its table of the kind (``kubectl get``'s own format) and rebuild
    each object from these printer columns and its metadata: the server then sends a few
    hundred bytes per object instead of the whole object (a WorkflowRun's step outputs), which
    makes listing thousands of runs several times faster. Only columns with a plain field path
    that is not a date (those come back as ages) are used."""


@dataclass
class Feed:
    """The live state of one page for one viewer, and the changes still to send."""

    informers: Informers
    """Where the page's sources are followed (shared with the viewer's other pages)."""
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
        self._listed.add(collection)
        self._queue(collection, "\0status", {"op": op, "collection": collection,
                                             "message": message})

    def listed(self, collection: str) -> bool:
        return collection in self._listed

    async def batches(self) -> AsyncIterator[list[dict[str, Any]]]:
        """Every change since the last batch, at most every FLUSH_SECONDS. The first batch
        waits (a little) for every source's first list, so a page draws once, complete."""
        deadline = asyncio.get_running_loop().time() + FIRST_BATCH_WAIT
        pending = {s.collection for s in self.sources if s.send}
        while not pending <= self._listed and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        while True:
            await self._changed.wait()
            self._changed.clear()
            ops, self._ops = list(self._ops.values()), {}
            if ops:
                yield ops
            await asyncio.sleep(FLUSH_SECONDS)

    # --- fed by the informers ---------------------------------------------------------------

    def _project(self, source: Source, doc: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
        doc.setdefault("kind", source.kind)
        return source.key(doc), source.project(doc)

    def receiver(self, source: Source) -> Callable[[str, Any], None]:
        """What an informer calls with its changes for ``source``."""
        def receive(change: str, payload: Any) -> None:
            if change == "reset":
                items = {}
                for doc in payload.values():
                    key, item = self._project(source, dict(doc))
                    if item is not None:
                        items[key] = item
                self.reset(source.collection, items, source.send)
            elif change in ("upsert", "delete"):
                key, item = self._project(source, dict(payload))
                if change == "delete" or item is None:
                    self.delete(source.collection, key, source.send)
                else:
                    self.upsert(source.collection, key, item, source.send)
            else:  # forbidden or error
                if change == "forbidden":
                    self.reset(source.collection, {}, send=False)
                if source.send or change == "forbidden":
                    self.problem(source.collection, change, str(payload))
        return receive

    async def run(self) -> None:
        """Follow every source until cancelled (the page closed)."""
        held = [self.informers.subscribe(self.namespace, source, self.receiver(source))
                for source in self.sources]
        try:
            await asyncio.Event().wait()
        finally:
            for informer, receive in held:
                self.informers.unsubscribe(informer, receive)


def _frozen(selector: dict[str, Any] | None, for_fields: bool = False) -> str:
    """A selector as the API server reads it: the same selector is the same informer."""
    return build_selector(selector, for_fields=for_fields) if selector else ""


@dataclass
class Informer:
    """One kind (narrowed by labels or fields) in one namespace, followed for one viewer: the
    objects as last seen (decoded to ``shape``) and the pages to tell about changes."""

    http: httpx2.AsyncClient
    namespace: str
    source: Source
    docs: dict[str, dict[str, Any]] = field(default_factory=dict)
    listed: bool = False
    trouble: tuple[str, str] | None = None
    subscribers: list[Callable[[str, Any], None]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    idle_since: float | None = None
    _table: TableReader | None = None
    """How the last list's table columns map onto fields (table sources only)."""

    def _tell(self, change: str, payload: Any) -> None:
        for receive in list(self.subscribers):
            receive(change, payload)

    def greet(self, receive: Callable[[str, Any], None]) -> None:
        """A new page gets what is known already."""
        if self.listed:
            receive("reset", self.docs)
        if self.trouble is not None:
            receive(*self.trouble)

    async def follow(self) -> None:
        source = self.source
        failures = 0
        while True:
            try:
                version = await self._list()
                failures = 0
                while True:
                    version = await self._watch(version)
            except Refused as refused:
                if refused.code in (401, 403):
                    self._trouble("forbidden", refused.message)
                    return
                if refused.code == 404 and source.optional:
                    self.docs, self.listed = {}, True
                    self._tell("reset", self.docs)
                    return
                if refused.code == 410:
                    continue  # the watch's version expired: list again
                failures += 1
                self._trouble("error", refused.message)
            except (httpx2.HTTPError, OSError) as error:
                failures += 1
                self._trouble("error", f"cannot reach the Kubernetes API server: {error}")
            except Exception as error:  # said, then tried again: a feed never goes quiet
                failures += 1
                log.exception("following %s failed", source.collection)
                self._trouble("error", f"{type(error).__name__}: {error}")
            await asyncio.sleep(RETRY_SECONDS[min(failures, len(RETRY_SECONDS)) - 1]
                                if failures else 0)

    def _trouble(self, op: str, message: str) -> None:
        self.trouble = (op, message)
        self._tell(op, message)

    def _params(self) -> dict[str, str]:
        params = {}
        if self.source.labels:
            params["labelSelector"] = build_selector(self.source.labels)
        if self.source.fields:
            params["fieldSelector"] = build_selector(self.source.fields, for_fields=True)
        return params

    def _headers(self) -> dict[str, str]:
        return {"Accept": TABLE_MEDIA_TYPE} if self.source.table is not None else {}

    async def _list(self) -> str:
        """List (in pages), replace what is known, return the list's resourceVersion."""
        started = asyncio.get_running_loop().time()
        decoder = _TABLE if self.source.table is not None else list_decoder(self.source.shape)
        docs: dict[str, dict[str, Any]] = {}
        # resourceVersion 0: served from the API server's watch cache (as client-go's
        # reflectors list), not read through from etcd page by page; the watch that follows
        # brings anything newer.
        params = {**self._params(), "resourceVersion": "0", "limit": str(LIST_CHUNK)}
        while True:
            response = await self.http.get(path_of(self.source.resource, self.namespace),
                                           params=params, headers=self._headers())
            check(response)
            page = decoder.decode(response.content)
            if self.source.table is not None:
                self._table = TableReader.of(self.source.table, page.columnDefinitions or [])
                for doc in self._table.rebuild(page.rows or []):
                    docs[_name(doc)] = doc
            for obj in getattr(page, "items", ()):
                doc = to_dict(obj)
                docs[_name(doc)] = doc
            if not page.metadata.get("continue"):
                break
            params = {**self._params(), "limit": str(LIST_CHUNK),
                      "continue": page.metadata["continue"]}
        self.docs, self.listed, self.trouble = docs, True, None
        log.debug("listed %d %s in %s in %.3fs", len(docs), self.source.kind, self.namespace,
                  asyncio.get_running_loop().time() - started)
        self._tell("reset", docs)
        return str(page.metadata.get("resourceVersion", ""))

    async def _watch(self, version: str) -> str:
        """Follow changes from ``version`` until the API server ends the watch; returns the
        version to go on from."""
        params = {**self._params(), "watch": "true", "resourceVersion": version,
                  "allowWatchBookmarks": "true", "timeoutSeconds": str(WATCH_SECONDS)}
        table = self._table
        async with self.http.stream("GET", path_of(self.source.resource, self.namespace),
                                    params=params, headers=self._headers()) as response:
            if response.status_code >= 400:
                await response.aread()
                check(response)
            async for line in response.aiter_lines():
                if not line.strip():
                    continue
                kind, obj = decode_event(line, self.source.shape, table)
                if kind == "ERROR":
                    raise Refused(int(obj.get("code") or 500),
                                  str(obj.get("message") or "watch failed"))
                if table is not None:
                    table, doc = table.rebuild_one(obj)
                    if doc is None:  # a bookmark or an empty table: only its version
                        version = str(obj.metadata.get("resourceVersion") or version)
                        continue
                else:
                    doc = to_dict(obj)
                version = str((doc.get("metadata") or {}).get("resourceVersion") or version)
                if kind == "BOOKMARK":
                    continue
                if kind == "DELETED":
                    self.docs.pop(_name(doc), None)
                    self._tell("delete", doc)
                else:
                    self.docs[_name(doc)] = doc
                    self._tell("upsert", doc)
        return version


@dataclass
class Informers:
    """Every viewer's informers: shared by the pages that show the same objects, and kept
    following for LINGER_SECONDS after the last page leaves, so moving between pages or
    reloading draws from memory instead of listing again. Bounded: the longest idle go first."""

    http: Callable[[], httpx2.AsyncClient]
    """The viewer's connection (looked up when an informer starts)."""
    viewer: str = ""
    limit: int = MAX_INFORMERS
    _all: dict[tuple[Any, ...], Informer] = field(default_factory=dict)

    def _key(self, namespace: str, source: Source) -> tuple[Any, ...]:
        return (namespace, source.resource, _frozen(source.labels),
                _frozen(source.fields, for_fields=True), source.shape, source.table,
                source.optional)

    def subscribe(self, namespace: str, source: Source, receive: Callable[[str, Any], None]
                  ) -> tuple[Informer, Callable[[str, Any], None]]:
        key = self._key(namespace, source)
        informer = self._all.get(key)
        if informer is None:
            informer = self._all[key] = Informer(self.http(), namespace, source)
        informer.subscribers.append(receive)
        informer.idle_since = None
        informer.greet(receive)
        if informer.task is None or informer.task.done():
            # The first page, or it stopped (refused: rights may have changed since): again.
            informer.task = asyncio.create_task(informer.follow())
        self._trim()
        return informer, receive

    def unsubscribe(self, informer: Informer, receive: Callable[[str, Any], None]) -> None:
        with contextlib.suppress(ValueError):
            informer.subscribers.remove(receive)
        if not informer.subscribers:
            informer.idle_since = asyncio.get_running_loop().time()
            asyncio.get_running_loop().call_later(LINGER_SECONDS, self._expire)

    def _expire(self) -> None:
        now = asyncio.get_running_loop().time()
        for key, informer in list(self._all.items()):
            if informer.idle_since is not None and now - informer.idle_since >= LINGER_SECONDS:
                self._stop(key)

    def _trim(self) -> None:
        idle = sorted((i.idle_since, k) for k, i in self._all.items() if i.idle_since is not None)
        while len(self._all) > self.limit and idle:
            self._stop(idle.pop(0)[1])

    def _stop(self, key: tuple[Any, ...]) -> None:
        informer = self._all.pop(key, None)
        if informer is not None and informer.task is not None:
            informer.task.cancel()

    def close(self) -> None:
        for key in list(self._all):
            self._stop(key)


class Refused(Exception):
    """The API server answered with an error status."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def check(response: httpx2.Response) -> None:
    if response.status_code < 400:
        return
    try:
        message = str(msgspec.json.decode(response.content).get("message"))
    except (msgspec.DecodeError, AttributeError):
        message = response.text[:500] or response.reason_phrase
    raise Refused(response.status_code, message)


def path_of(resource: Any, namespace: str) -> str:
    info = api_info(resource)
    group = info.resource.group
    base = f"/apis/{group}/{info.resource.version}" if group else f"/api/{info.resource.version}"
    return f"{base}/namespaces/{namespace}/{info.plural}"


def to_dict(obj: Any) -> dict[str, Any]:
    return obj if isinstance(obj, dict) else msgspec.to_builtins(obj)


@functools.cache
def list_decoder(shape: Any) -> msgspec.json.Decoder[Any]:
    """Decodes a list page, items as ``shape`` (only the fields it names are kept)."""
    item = shape or dict[str, Any]
    page = msgspec.defstruct("Page", [("metadata", dict[str, Any], {}),
                                      ("items", list[item], [])])  # type: ignore[valid-type]
    return msgspec.json.Decoder(page)


class _Event(msgspec.Struct):
    type: str
    object: msgspec.Raw


_EVENT = msgspec.json.Decoder(_Event)


@functools.cache
def item_decoder(shape: Any) -> msgspec.json.Decoder[Any]:
    return msgspec.json.Decoder(shape or dict[str, Any])


def decode_event(line: str | bytes, shape: Any, table: TableReader | None = None
                 ) -> tuple[str, Any]:
    """(type, object) of a watch event line; an ERROR's object (a Status) stays a dict; with a
    table reader, the object is a :class:`_Table`."""
    event = _EVENT.decode(line)
    if event.type == "ERROR":
        return event.type, msgspec.json.decode(event.object)
    if table is not None:
        return event.type, _TABLE.decode(event.object)
    return event.type, item_decoder(shape).decode(event.object)


# --- the API server's tables ---------------------------------------------------------------

TABLE_MEDIA_TYPE = "application/json;as=Table;g=meta.k8s.io;v=v1"
_PLAIN_PATH = re.compile(r"(\.[A-Za-z_][A-Za-z0-9_]*)+")


class _RowMetadata(msgspec.Struct, omit_defaults=True):
    """What a row's PartialObjectMetadata gives a page (managedFields are skipped unparsed)."""

    name: str = ""
    creationTimestamp: str | None = None
    generation: int | None = None
    resourceVersion: str | None = None
    labels: dict[str, str] | None = None


class _RowObject(msgspec.Struct):
    metadata: _RowMetadata = msgspec.field(default_factory=_RowMetadata)


class _Row(msgspec.Struct):
    cells: list[Any] = []
    object: _RowObject | None = None


class _ColumnDefinition(msgspec.Struct):
    name: str
    type: str = "string"


class _Table(msgspec.Struct):
    metadata: dict[str, Any] = {}
    columnDefinitions: list[_ColumnDefinition] | None = None
    """Sent with a list and a watch's first event; null afterwards."""
    rows: list[_Row] | None = None


_TABLE = msgspec.json.Decoder(_Table)


@dataclass(frozen=True)
class TableReader:
    """Rebuilds objects from the API server's table rows: each usable printer column's value
    set at its field path, beside the row's metadata."""

    columns: tuple[PrinterColumn, ...]
    paths: tuple[tuple[int, tuple[str, ...]], ...]
    """(cell index, field path) for each usable column."""

    @classmethod
    def of(cls, columns: tuple[PrinterColumn, ...], definitions: list[_ColumnDefinition]
           ) -> TableReader:
        wanted = {c.name: c for c in columns
                  if c.type != "date" and _PLAIN_PATH.fullmatch(c.json_path)}
        return cls(columns, tuple((index, tuple(wanted[d.name].json_path[1:].split(".")))
                                  for index, d in enumerate(definitions) if d.name in wanted))

    def rebuild(self, rows: list[_Row]) -> list[dict[str, Any]]:
        return [self._object(row) for row in rows if row.object is not None]

    def rebuild_one(self, table: _Table) -> tuple[TableReader, dict[str, Any] | None]:
        """A watch event's one-row table (with the columns again when they are sent)."""
        reader = TableReader.of(self.columns, table.columnDefinitions) \
            if table.columnDefinitions else self
        rows = reader.rebuild(table.rows or [])
        return reader, (rows[0] if rows else None)

    def _object(self, row: _Row) -> dict[str, Any]:
        assert row.object is not None
        doc: dict[str, Any] = {"metadata": msgspec.to_builtins(row.object.metadata)}
        for index, path in self.paths:
            value = row.cells[index] if index < len(row.cells) else None
            if value is None or value == "<none>":
                continue
            target = doc
            for part in path[:-1]:
                target = target.setdefault(part, {})
            target[path[-1]] = value
        return doc
