"""The reconcile loop every kind shares: watch-fed cache → work queue → reconciler → Result.

Watch events only *queue keys* (level-based, as controller-runtime does): a Kagent object queues
itself (not for status-only changes of Agents, Tools and Memories), a child queues the Agent that
controls it, and any change queues the objects that depend on the changed one (see
:class:`DependencyIndex`). Workers take keys from the queue and run the kind's reconciler, which
keeps the contract of :mod:`kagent.kube.reconcile`; this module turns its :class:`Result` into
requeues, the dependency index, Events, metrics and logs — the same way for every kind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import httpx2
from lightkube import AsyncClient

from kagent.api.base import API_VERSION
from kagent.controller.agents import AgentReconciler
from kagent.controller.cache import (
    CHILD_KINDS,
    ControllerCache,
    is_status_only,
    owner_key,
    same_view,
)
from kagent.controller.index import DependencyIndex
from kagent.controller.metrics import (
    CACHED_OBJECTS,
    IS_LEADER,
    QUEUE_DEPTH,
    RECONCILE_DURATION,
    RECONCILE_ERRORS,
    RECONCILES,
)
from kagent.controller.queue import WorkQueue
from kagent.controller.references import McpDiscovery, ReferenceReconciler
from kagent.controller.settings import ControllerSettings
from kagent.controller.workflows import WorkflowReconciler
from kagent.kube.events import EventRecorder
from kagent.kube.informer import DELETED, MODIFIED, Object, resource_version
from kagent.kube.reconcile import ObjectKey, Reconciler, Result

log = logging.getLogger("kagent.controller")

RECONCILED_KINDS = ("Agent", "Tool", "Memory", "Workflow", "WorkflowRun")
SPEC_DRIVEN_KINDS = frozenset({"Agent", "Tool", "Memory"})
"""Kinds whose own reconcile depends only on their spec, so status-only changes do not queue it."""
FAILURE_MESSAGE_LIMIT = 500


class WorkflowsAdapter:
    """The workflow reconciler seen through the shared contract.

    Until the workflow engine returns a :class:`Result` itself, it records its own dependencies
    and timers; this adapter only passes its requeue time on."""

    def __init__(self, workflows: WorkflowReconciler) -> None:
        self.workflows = workflows

    async def reconcile(self, key: ObjectKey) -> Result:
        kind, namespace, name = key
        return Result(requeue_after=await self.workflows.handle(kind, namespace, name))


class Controller:
    """Owns the cache, the queue, the dependency index and one reconciler per kind."""

    def __init__(self, client: AsyncClient, settings: ControllerSettings, http: httpx2.AsyncClient,
                 discover_mcp: McpDiscovery | None = None) -> None:
        self.client = client
        self.settings = settings
        self.queue: WorkQueue[ObjectKey] = WorkQueue()
        self.index = DependencyIndex()
        self.cache = ControllerCache(http, self.on_event, on_keda_change=self.keda_changed)
        self.events = EventRecorder(client)
        self.agents = AgentReconciler(client, self.cache, settings.image)
        references = ReferenceReconciler(client, self.cache, discover_mcp)
        self.workflows = WorkflowReconciler(client, self.index, self.enqueue)
        workflows = WorkflowsAdapter(self.workflows)
        self.reconcilers: dict[str, Reconciler] = {
            "Agent": self.agents, "Tool": references, "Memory": references,
            "Workflow": workflows, "WorkflowRun": workflows,
        }

    # --- queueing ---------------------------------------------------------------------------

    def enqueue(self, key: ObjectKey) -> None:
        self.queue.add(key)
        QUEUE_DEPTH.set(len(self.queue))

    def enqueue_dependents(self, key: ObjectKey) -> None:
        for dependent in self.index.dependents(key):
            self.enqueue(dependent)

    def on_event(self, kind: str, event_type: str, old: Object | None, new: Object | None) -> None:
        """Route one cache change to the keys it concerns."""
        obj = new if new is not None else old
        if obj is None:
            return
        if event_type != MODIFIED:
            store = self.cache.store(kind)
            CACHED_OBJECTS.labels(kind).set(len(store) if store is not None else 0)
        meta = obj.get("metadata") or {}
        key = (kind, str(meta.get("namespace") or ""), str(meta.get("name")))
        if kind in RECONCILED_KINDS:
            if event_type == DELETED:
                self.index.forget(key)
                if kind == "WorkflowRun":
                    self.workflows.deleted(key[1], key[2])
            elif not (kind in SPEC_DRIVEN_KINDS and is_status_only(event_type, old, new)):
                self.enqueue(key)
            self.enqueue_dependents(key)
        elif kind == "Secret":
            if event_type == DELETED or resource_version(old) != resource_version(new):
                self.enqueue_dependents(key)
        elif kind in CHILD_KINDS:
            if event_type == DELETED:
                self.agents.applied.forget(key)
            elif event_type == MODIFIED and same_view(old, new):
                return  # e.g. an HPA's or PDB's status: nothing the controller reads changed
            owner = owner_key(obj)
            if owner is not None:
                self.enqueue(owner)

    def keda_changed(self) -> None:
        """KEDA was installed or removed: every Agent's autoscaler may change."""
        for agent in self.cache.list("Agent"):
            self.enqueue(("Agent", agent["metadata"]["namespace"], agent["metadata"]["name"]))

    # --- reconciling ------------------------------------------------------------------------

    async def handle(self, key: ObjectKey) -> float | None:
        """Run the kind's reconciler and act on its Result; raises to have the key retried."""
        kind, namespace, name = key
        started = time.perf_counter()
        try:
            result = await self.reconcilers[kind].reconcile(key)
        except Exception as error:
            RECONCILE_ERRORS.labels(kind).inc()
            RECONCILES.labels(kind, "error").inc()
            log.exception("reconciling %s %s/%s failed; will retry", kind, namespace, name)
            self._record(key, "Warning", "ReconcileFailed", _describe(error))
            raise
        finally:
            RECONCILE_DURATION.labels(kind).observe(time.perf_counter() - started)
            QUEUE_DEPTH.set(len(self.queue))
        RECONCILES.labels(kind, "success").inc()
        if result.gone:
            self.index.forget(key)
            return None
        if result.dependencies is not None:
            self.index.record(key, set(result.dependencies))
        for transition in result.transitions:
            self._record(key, transition.event_type, transition.reason,
                         f"{transition.type}={transition.status}: {transition.message}")
        resync = self.settings.resync_seconds
        return resync if result.requeue_after is None else min(result.requeue_after, resync)

    def _record(self, key: ObjectKey, type_: str, reason: str, message: str) -> None:
        kind, namespace, name = key
        cached = self.cache.get(kind, namespace, name)
        if cached is None:
            return
        involved: dict[str, Any] = {"apiVersion": API_VERSION, "kind": kind, "metadata": cached["metadata"]}
        self.events.record(involved, type_, reason, message)

    async def lead(self) -> None:
        """Run as the leader: fill the cache (which queues every object), then reconcile."""
        IS_LEADER.set(1)
        events = asyncio.create_task(self.events.run(), name="events")
        self.agents.forget_all()
        try:
            await self.cache.start()
            log.info("cache synced: %s", ", ".join(f"{k} {len(i.store)}" for k, i in self.cache.informers.items()))
            await self.queue.run(self.handle, self.settings.workers)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("the controller stopped")
            raise
        finally:
            IS_LEADER.set(0)
            events.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await events
            await self.cache.stop()
            await self.workflows.shutdown()


def _describe(error: Exception) -> str:
    text = f"{type(error).__name__}: {error}".replace("\n", " ")
    return text[:FAILURE_MESSAGE_LIMIT]
