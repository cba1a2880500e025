"""A watch-fed cache of one kind, as client-go's reflector and informer keep it.

List (in pages), then watch from the list's resourceVersion with bookmarks; every change updates
the :class:`Store` and calls the handler with (event type, old, new). A watch that ends is
resumed from the last resourceVersion seen; one the server no longer can resume (410 Gone) is
replaced by a fresh list, and objects that vanished meanwhile are reported DELETED, so the store
never keeps an object that no longer exists.

Each kind has a *transform* (client-go's ``TransformFunc``) that keeps only the fields its readers
need: objects are decoded, trimmed and the full body dropped, so memory grows with what the
controller reads, not with what the cluster stores. Stored objects are shared views: readers
must never mutate them.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx2
import msgspec

log = logging.getLogger("kagent.kube.informer")

Object = dict[str, Any]
Transform = Callable[[Object], Object]
Handler = Callable[[str, "Object | None", "Object | None"], None]
"""(event type, old, new): ADDED (None, new), MODIFIED (old, new), DELETED (last known, None)."""

ADDED, MODIFIED, DELETED = "ADDED", "MODIFIED", "DELETED"


def keep_all(obj: Object) -> Object:
    return obj


@dataclass(frozen=True)
class WatchSpec:
    """What to watch: one kind, optionally narrowed by selectors, and how to trim it."""

    kind: str
    api_version: str
    """``v1``, ``apps/v1``, ``kagent.dev/v1alpha1`` …"""
    plural: str
    namespaced: bool = True
    label_selector: str | None = None
    field_selector: str | None = None
    transform: Transform = field(default=keep_all, compare=False)

    @property
    def path(self) -> str:
        """The collection across all namespaces."""
        group, _, version = self.api_version.rpartition("/")
        base = f"/apis/{self.api_version}" if group else f"/api/{version}"
        return f"{base}/{self.plural}"

    def selectors(self) -> dict[str, str]:
        params = {}
        if self.label_selector:
            params["labelSelector"] = self.label_selector
        if self.field_selector:
            params["fieldSelector"] = self.field_selector
        return params


class KindNotServed(Exception):
    """The API server does not serve this kind (its CRD is not installed)."""


class Store:
    """The objects of one kind, by (namespace, name)."""

    def __init__(self) -> None:
        self._items: dict[tuple[str, str], Object] = {}
        self.deletions = 0
        """How many objects were deleted so far: lets a writer tell whether anything vanished
        while its own write was in flight."""

    def get(self, namespace: str, name: str) -> Object | None:
        return self._items.get((namespace, name))

    def list(self, namespace: str | None = None) -> Iterator[Object]:
        for (ns, _), obj in list(self._items.items()):
            if namespace is None or ns == namespace:
                yield obj

    def keys(self) -> list[tuple[str, str]]:
        return list(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def _set(self, key: tuple[str, str], obj: Object) -> Object | None:
        old = self._items.get(key)
        self._items[key] = obj
        return old

    def _pop(self, key: tuple[str, str]) -> Object | None:
        old = self._items.pop(key, None)
        if old is not None:
            self.deletions += 1
        return old

    def replace_if_unchanged(self, namespace: str, name: str, expected_version: str | None,
                             obj: Object) -> bool:
        """Store ``obj`` (our own write's answer) only if the cached object is still the one at
        ``expected_version``: the watch event for our write then comes later and overwrites it
        with the same content, while any newer event has already won."""
        current = self._items.get((namespace, name))
        if current is None or resource_version(current) != expected_version:
            return False
        self._items[(namespace, name)] = obj
        return True


def object_key(obj: Object) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def resource_version(obj: Object | None) -> str | None:
    if obj is None:
        return None
    return (obj.get("metadata") or {}).get("resourceVersion")


class _ListMeta(msgspec.Struct):
    resourceVersion: str = ""
    continue_: str | None = msgspec.field(name="continue", default=None)


class _List(msgspec.Struct):
    metadata: _ListMeta = msgspec.field(default_factory=_ListMeta)
    items: list[msgspec.Raw] = msgspec.field(default_factory=list)


class _Event(msgspec.Struct):
    type: str
    object: msgspec.Raw


class _Gone(Exception):
    """The watch cannot resume from our resourceVersion: list again."""


_decode = msgspec.json.Decoder().decode
_decode_list = msgspec.json.Decoder(_List).decode
_decode_event = msgspec.json.Decoder(_Event).decode


class Informer:
    """Keeps a :class:`Store` of one kind in step with the API server; see the module docstring."""

    def __init__(
        self,
        http: httpx2.AsyncClient,
        spec: WatchSpec,
        handler: Handler | None = None,
        *,
        page_size: int = 500,
        watch_seconds: int = 300,
        max_backoff: float = 30.0,
    ) -> None:
        self.http = http
        self.spec = spec
        self.handler = handler
        self.store = Store()
        self.synced = asyncio.Event()
        self.page_size = page_size
        self.watch_seconds = watch_seconds
        self.max_backoff = max_backoff
        self.lists = 0
        """How many full lists were made (1 + relists after 410 Gone)."""

    async def run(self) -> None:
        """List and watch until cancelled. Raises :class:`KindNotServed` if the kind is not
        (or no longer) served; other errors are retried with backoff."""
        failures = 0
        while True:
            try:
                version = await self._list()
                self.synced.set()
                failures = 0
                await self._watch(version)
            except (KindNotServed, asyncio.CancelledError):
                raise
            except _Gone:
                log.info("%s: watch too old, listing again", self.spec.kind)
            except Exception as error:  # noqa: BLE001 - any failure: back off and list again
                failures += 1
                delay = min(self.max_backoff, 0.5 * 2 ** min(failures, 8)) * random.uniform(0.8, 1.2)
                log.warning("%s: list/watch failed (%s); retrying in %.1fs", self.spec.kind,
                            _describe(error), delay)
                await asyncio.sleep(delay)

    # --- list -------------------------------------------------------------------------------

    async def _list(self) -> str:
        fresh: dict[tuple[str, str], Object] = {}
        params = {"limit": str(self.page_size), **self.spec.selectors()}
        version = ""
        while True:
            response = await self.http.get(self.spec.path, params=params)
            _raise_for(response, self.spec)
            page = _decode_list(response.content)
            for raw in page.items:
                obj = self._trim(_decode(raw))
                if obj is not None:
                    fresh[object_key(obj)] = obj
            version = page.metadata.resourceVersion
            if not page.metadata.continue_:
                break
            params["continue"] = page.metadata.continue_
        self.lists += 1
        self._replace(fresh)
        return version

    def _replace(self, fresh: dict[tuple[str, str], Object]) -> None:
        for key in [k for k in self.store.keys() if k not in fresh]:
            old = self.store._pop(key)
            self._notify(DELETED, old, None)
        for key, obj in fresh.items():
            old = self.store._set(key, obj)
            if old is None:
                self._notify(ADDED, None, obj)
            elif resource_version(old) != resource_version(obj):
                self._notify(MODIFIED, old, obj)

    # --- watch ------------------------------------------------------------------------------

    async def _watch(self, version: str) -> None:
        """Watch from ``version``; a dropped connection resumes from the last version seen.
        Returns (raises _Gone) when the server can no longer resume: the caller lists again."""
        dropped = 0
        while True:
            seconds = int(self.watch_seconds * random.uniform(1.0, 1.2))
            params = {"watch": "1", "resourceVersion": version, "allowWatchBookmarks": "true",
                      "timeoutSeconds": str(seconds), **self.spec.selectors()}
            timeout = httpx2.Timeout(10.0, read=seconds + 30.0)
            try:
                async with self.http.stream("GET", self.spec.path, params=params, timeout=timeout) as response:
                    if response.status_code >= 400:
                        await response.aread()
                        _raise_for(response, self.spec)
                    async for line in response.aiter_lines():
                        if line:
                            version = self._on_line(line, version)
                            dropped = 0
            except httpx2.TransportError as error:
                dropped += 1
                if dropped > 5:
                    raise
                delay = min(self.max_backoff, 0.2 * 2 ** dropped)
                log.info("%s: watch dropped (%s); resuming in %.1fs", self.spec.kind, _describe(error), delay)
                await asyncio.sleep(delay)

    def _on_line(self, line: str, version: str) -> str:
        event = _decode_event(line)
        if event.type == "ERROR":
            status = _decode(event.object)
            if status.get("code") == 410:
                raise _Gone()
            raise RuntimeError(f"watch error: {status.get('message')}")
        obj = _decode(event.object)
        new_version = resource_version(obj) or version
        if event.type == "BOOKMARK":
            return new_version
        trimmed = self._trim(obj)
        if trimmed is None:
            return new_version
        key = object_key(trimmed)
        if event.type == DELETED:
            old = self.store._pop(key)
            self._notify(DELETED, old or trimmed, None)
        else:
            old = self.store._set(key, trimmed)
            self._notify(ADDED if old is None else MODIFIED, old, trimmed)
        return new_version

    # --- helpers ----------------------------------------------------------------------------

    def _trim(self, obj: Object) -> Object | None:
        try:
            return self.spec.transform(obj)
        except Exception:  # noqa: BLE001 - one odd object must not stop the cache
            log.exception("%s: could not read %s; skipped", self.spec.kind, object_key(obj))
            return None

    def _notify(self, event_type: str, old: Object | None, new: Object | None) -> None:
        if self.handler is None:
            return
        try:
            self.handler(event_type, old, new)
        except Exception:  # noqa: BLE001 - a handler bug must not stop the cache
            log.exception("%s: event handler failed", self.spec.kind)


def _raise_for(response: httpx2.Response, spec: WatchSpec) -> None:
    if response.status_code == 404:
        raise KindNotServed(f"{spec.kind} ({spec.api_version}) is not served")
    if response.status_code == 410:
        raise _Gone()
    response.raise_for_status()


def _describe(error: Exception) -> str:
    if isinstance(error, httpx2.HTTPStatusError):
        return f"HTTP {error.response.status_code}: {error.response.text[:200]}"
    return f"{type(error).__name__}: {error}"[:300]
