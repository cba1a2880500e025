"""The controller's watch-fed cache: what it watches, what it keeps of each object, and how it
knows a child is already as wanted.

Watched: the five Kagent kinds, every Secret (key names and resourceVersion only, never a value),
each kind of child an Agent owns (label-selected: ``app.kubernetes.io/managed-by=kagent`` and
``kagent.dev/agent``), KEDA's ScaledObjects while their API is served, and KEDA's CRD to notice
it coming and going. Reconcilers read only from here; they write through the API.

Trimming (client-go's transforms): Kagent objects lose ``managedFields`` and kubectl's
last-applied annotation; children keep their identity, their controller owner, a fingerprint of
their content and, for Deployments, the few fields rollout status needs. That keeps memory in
proportion to what the controller reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import httpx2
import msgspec
from lightkube import AsyncClient
from lightkube.types import PatchType

from kagent.api import KINDS, AgentStatus
from kagent.api.base import API_VERSION
from kagent.api.memory import MemoryStatus
from kagent.api.tool import ToolStatus
from kagent.controller.render import AGENT_LABEL, CONFIG_HASH_ANNOTATION, MANAGED_BY
from kagent.kube import KAGENT_RESOURCES
from kagent.kube.informer import (
    MODIFIED,
    Informer,
    KindNotServed,
    Object,
    Store,
    WatchSpec,
    resource_version,
)
from kagent.kube.reconcile import ObjectKey

log = logging.getLogger("kagent.controller.cache")

FINGERPRINT = "kagent.dev/fingerprint"
"""Key of a child's content fingerprint in its cached view (a cache-only field)."""
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
KEDA_CRD = "scaledobjects.keda.sh"

CHILD_SELECTOR = ",".join([*(f"{k}={v}" for k, v in MANAGED_BY.items()), AGENT_LABEL])

EventSink = Callable[[str, str, "Object | None", "Object | None"], None]
"""(kind, event type, old, new) — see :data:`kagent.kube.informer.Handler`."""


# --- transforms ---------------------------------------------------------------------------------


def trim_kagent(obj: Object) -> Object:
    """A Kagent object without what the API server keeps for its own bookkeeping."""
    meta = dict(obj.get("metadata") or {})
    meta.pop("managedFields", None)
    annotations = meta.get("annotations")
    if annotations and LAST_APPLIED in annotations:
        meta["annotations"] = {k: v for k, v in annotations.items() if k != LAST_APPLIED}
    return {**obj, "metadata": meta}


def _identity(meta: dict[str, Any]) -> dict[str, Any]:
    return {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "generation",
                                 "deletionTimestamp") if k in meta}


def trim_secret(obj: Object) -> Object:
    """Which keys a Secret has and its version — never a value."""
    keys = {*(obj.get("data") or {}), *(obj.get("stringData") or {})}
    return {"metadata": _identity(obj.get("metadata") or {}), "keys": sorted(keys)}


def controller_owner(meta: dict[str, Any]) -> dict[str, Any] | None:
    return next((o for o in meta.get("ownerReferences") or [] if o.get("controller")), None)


def fingerprint(obj: Object) -> str:
    """A digest of everything in a child another writer could change that Kagent sets: spec
    (and data, rules …), labels and owners. Status, server bookkeeping and annotations are left
    out (Kagent sets no annotations on its children's metadata; the Deployment controller
    writes its revision there)."""
    meta = obj.get("metadata") or {}
    content = {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}
    content["metadata"] = {"labels": meta.get("labels"), "ownerReferences": meta.get("ownerReferences")}
    return hashlib.blake2b(msgspec.json.encode(content, order="sorted"), digest_size=12).hexdigest()


def trim_child(obj: Object) -> Object:
    meta = obj.get("metadata") or {}
    view: Object = {"metadata": _identity(meta), FINGERPRINT: fingerprint(obj)}
    owner = controller_owner(meta)
    if owner is not None:
        view["metadata"]["ownerReferences"] = [
            {k: owner.get(k) for k in ("apiVersion", "kind", "name", "uid", "controller")}
        ]
    return view


def trim_deployment(obj: Object) -> Object:
    """Also what rollout status needs (see :func:`kagent.controller.status.deployment_rollout`)."""
    view = trim_child(obj)
    spec = obj.get("spec") or {}
    template_annotations = ((spec.get("template") or {}).get("metadata") or {}).get("annotations") or {}
    view["spec"] = {"template": {"metadata": {"annotations": {
        k: v for k, v in template_annotations.items() if k == CONFIG_HASH_ANNOTATION}}}}
    if "replicas" in spec:
        view["spec"]["replicas"] = spec["replicas"]
    status = obj.get("status") or {}
    view["status"] = {k: status[k] for k in ("observedGeneration", "replicas", "updatedReplicas",
                                             "readyReplicas", "availableReplicas") if k in status}
    return view


def trim_crd(obj: Object) -> Object:
    conditions = (obj.get("status") or {}).get("conditions") or []
    established = any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)
    return {"metadata": _identity(obj.get("metadata") or {}), "established": established}


# --- what is watched ----------------------------------------------------------------------------

KAGENT_WATCHES = tuple(
    WatchSpec(kind.kind_name, API_VERSION, kind.plural, transform=trim_kagent) for kind in KINDS
)
SECRET_WATCH = WatchSpec("Secret", "v1", "secrets", transform=trim_secret)
CHILD_WATCHES = (
    WatchSpec("ServiceAccount", "v1", "serviceaccounts", label_selector=CHILD_SELECTOR, transform=trim_child),
    WatchSpec("ConfigMap", "v1", "configmaps", label_selector=CHILD_SELECTOR, transform=trim_child),
    WatchSpec("Deployment", "apps/v1", "deployments", label_selector=CHILD_SELECTOR,
              transform=trim_deployment),
    WatchSpec("Service", "v1", "services", label_selector=CHILD_SELECTOR, transform=trim_child),
    WatchSpec("HorizontalPodAutoscaler", "autoscaling/v2", "horizontalpodautoscalers",
              label_selector=CHILD_SELECTOR, transform=trim_child),
    WatchSpec("PodDisruptionBudget", "policy/v1", "poddisruptionbudgets", label_selector=CHILD_SELECTOR,
              transform=trim_child),
)
SCALED_OBJECT_WATCH = WatchSpec("ScaledObject", "keda.sh/v1alpha1", "scaledobjects",
                                label_selector=CHILD_SELECTOR, transform=trim_child)
KEDA_CRD_WATCH = WatchSpec("CustomResourceDefinition", "apiextensions.k8s.io/v1",
                           "customresourcedefinitions", namespaced=False,
                           field_selector=f"metadata.name={KEDA_CRD}", transform=trim_crd)
CHILD_KINDS = frozenset(w.kind for w in (*CHILD_WATCHES, SCALED_OBJECT_WATCH))
ALL_WATCHES = (*KAGENT_WATCHES, SECRET_WATCH, *CHILD_WATCHES, SCALED_OBJECT_WATCH, KEDA_CRD_WATCH)


def same_view(old: Object | None, new: Object | None) -> bool:
    """Whether two trimmed views differ only in resourceVersion: the change was in a field the
    controller does not keep, so it need not look."""
    if old is None or new is None:
        return False
    def unversioned(view: Object) -> Object:
        meta = {k: v for k, v in (view.get("metadata") or {}).items() if k != "resourceVersion"}
        return {**view, "metadata": meta}

    return unversioned(old) == unversioned(new)


def owner_key(child: Object) -> ObjectKey | None:
    """The Agent that controls a child, from its controller owner reference."""
    meta = child.get("metadata") or {}
    owner = controller_owner(meta)
    if owner is None or owner.get("kind") != "Agent" or not str(owner.get("apiVersion", "")).startswith("kagent.dev/"):
        return None
    return ("Agent", str(meta.get("namespace")), str(owner.get("name")))


# --- the cache ----------------------------------------------------------------------------------


class ControllerCache:
    """Informers for everything the controller reads; an :class:`~kagent.kube.reconcile.ObjectReader`.

    KEDA's ScaledObject informer runs only while KEDA's CRD is Established; ``keda_available``
    is True once that informer has synced, so reconciles never decide on a half-filled cache.
    """

    def __init__(self, http: httpx2.AsyncClient, sink: EventSink,
                 on_keda_change: Callable[[], None] = lambda: None) -> None:
        self.http = http
        self.sink = sink
        self.on_keda_change = on_keda_change
        self.informers: dict[str, Informer] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._keda_task: asyncio.Task[None] | None = None
        self._reset()

    def _reset(self) -> None:
        """Fresh, empty informers (a new leader must not trust what it saw before)."""
        self.informers = {spec.kind: self._informer(spec)
                          for spec in (*KAGENT_WATCHES, SECRET_WATCH, *CHILD_WATCHES, KEDA_CRD_WATCH)}

    def _informer(self, spec: WatchSpec) -> Informer:
        def handler(event_type: str, old: Object | None, new: Object | None) -> None:
            if spec.kind == "CustomResourceDefinition":
                self._keda_crd_changed(new)
            self.sink(spec.kind, event_type, old, new)

        return Informer(self.http, spec, handler)

    # --- reading ----------------------------------------------------------------------------

    def store(self, kind: str) -> Store | None:
        informer = self.informers.get(kind)
        return informer.store if informer is not None else None

    def get(self, kind: str, namespace: str, name: str) -> Object | None:
        store = self.store(kind)
        return store.get(namespace, name) if store is not None else None

    def list(self, kind: str, namespace: str | None = None) -> Iterable[Object]:
        store = self.store(kind)
        return store.list(namespace) if store is not None else ()

    async def write_status(self, client: AsyncClient, cached: Object,
                           status: AgentStatus | ToolStatus | MemoryStatus) -> None:
        """The one way reconcilers write a Kagent object's status: only from its typed model.
        The answer goes into the cache until the watch delivers it, so the next reconcile
        compares against what was written instead of writing it again."""
        kind = {AgentStatus: "Agent", ToolStatus: "Tool", MemoryStatus: "Memory"}[type(status)]
        meta = cached["metadata"]
        answer = await client.patch(
            KAGENT_RESOURCES[kind].Status, meta["name"], {"status": status.to_wire()},
            namespace=meta["namespace"], patch_type=PatchType.MERGE,
        )
        store = self.store(kind)
        if store is not None and answer is not None:
            store.replace_if_unchanged(meta["namespace"], meta["name"], meta.get("resourceVersion"),
                                       trim_kagent(dict(answer)))

    @property
    def keda_available(self) -> bool:
        informer = self.informers.get("ScaledObject")
        return informer is not None and informer.synced.is_set()

    # --- running ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start every informer and wait until each has listed once (and KEDA's, if served)."""
        self._reset()
        for informer in list(self.informers.values()):
            self._tasks.append(asyncio.create_task(informer.run(), name=f"informer-{informer.spec.kind}"))
        await self.wait_synced()

    async def wait_synced(self, log_every: float = 30.0) -> None:
        """Until every informer has listed once; an informer that fails for good (its kind is
        not served) is raised. Says every ``log_every`` seconds who it is waiting for."""
        while True:
            waiting = [i for i in self.informers.values() if not i.synced.is_set()]
            if not waiting:
                return
            failed = [t for t in self._tasks if t.done() and not t.cancelled() and t.exception()]
            if failed:
                raise failed[0].exception()  # type: ignore[misc]
            waiters = [asyncio.create_task(i.synced.wait()) for i in waiting]
            done, _ = await asyncio.wait([*waiters, *self._tasks], timeout=log_every,
                                         return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()
            if not done:
                log.info("waiting for the cache to sync: %s", ", ".join(i.spec.kind for i in waiting))

    async def stop(self) -> None:
        tasks = [*self._tasks, *([self._keda_task] if self._keda_task else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self._keda_task = None
        self.informers.pop("ScaledObject", None)

    # --- KEDA comes and goes ----------------------------------------------------------------

    def _keda_crd_changed(self, crd: Object | None) -> None:
        established = bool(crd and crd.get("established"))
        if established and self._keda_task is None:
            informer = Informer(self.http, SCALED_OBJECT_WATCH,
                                lambda t, old, new: self.sink("ScaledObject", t, old, new))
            self.informers["ScaledObject"] = informer
            self._keda_task = asyncio.create_task(self._run_keda(informer), name="informer-ScaledObject")
        elif not established and self._keda_task is not None:
            self._keda_task.cancel()
            self._keda_task = None
            self.informers.pop("ScaledObject", None)
            log.info("KEDA's ScaledObject API is gone")
            self.on_keda_change()

    async def _run_keda(self, informer: Informer) -> None:
        """Run the ScaledObject informer; the API may lag its CRD by a moment."""
        announced = asyncio.create_task(self._announce_keda(informer))
        try:
            for attempt in range(1, 1_000_000):
                try:
                    await informer.run()
                except KindNotServed:
                    await asyncio.sleep(min(0.2 * attempt, 5.0))
        finally:
            announced.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await announced

    async def _announce_keda(self, informer: Informer) -> None:
        await informer.synced.wait()
        log.info("KEDA's ScaledObject API is served")
        self.on_keda_change()


# --- what was applied ---------------------------------------------------------------------------


def manifest_digest(manifest: dict[str, Any]) -> str:
    return hashlib.blake2b(msgspec.json.encode(manifest, order="sorted"), digest_size=12).hexdigest()


@dataclass(slots=True)
class _Applied:
    desired: str
    fingerprint: str
    base_version: str | None
    deletions: int


class AppliedChildren:
    """Remembers what this process applied to each child, so an unchanged child is not applied
    again on every reconcile: a child is up to date when the wanted manifest is the one last
    applied and the cached child still has the content the server answered (or the cache has
    simply not caught up with our write yet). Anything else — a spec change, another writer, a
    deletion, a restart of the controller — means one more server-side apply."""

    def __init__(self) -> None:
        self._applied: dict[ObjectKey, _Applied] = {}

    def up_to_date(self, key: ObjectKey, desired: str, store: Store | None) -> bool:
        record = self._applied.get(key)
        if record is None or record.desired != desired or store is None:
            return False
        cached = store.get(key[1], key[2])
        if cached is not None and cached.get(FINGERPRINT) == record.fingerprint:
            return True
        return resource_version(cached) == record.base_version and store.deletions == record.deletions

    def before_apply(self, key: ObjectKey, store: Store | None) -> tuple[str | None, int]:
        """What the cache holds just before a write (see :meth:`applied`)."""
        if store is None:
            return None, 0
        return resource_version(store.get(key[1], key[2])), store.deletions

    def applied(self, key: ObjectKey, desired: str, answer: Object, before: tuple[str | None, int]) -> None:
        self._applied[key] = _Applied(desired, fingerprint(answer), *before)

    def forget(self, key: ObjectKey) -> None:
        self._applied.pop(key, None)

    def __len__(self) -> int:
        return len(self._applied)


def is_status_only(event_type: str, old: Object | None, new: Object | None) -> bool:
    """A Kagent object changed only in status (or server bookkeeping): its own reconciler need
    not run again (controller-runtime's GenerationChangedPredicate)."""
    if event_type != MODIFIED or old is None or new is None:
        return False
    before, after = old.get("metadata") or {}, new.get("metadata") or {}
    return (before.get("generation") == after.get("generation")
            and before.get("uid") == after.get("uid")
            and before.get("deletionTimestamp") == after.get("deletionTimestamp"))
