"""Workflow and WorkflowRun keys from the work queue, handed to the workflow engine.

A thin adapter that keeps the reconciler contract (:mod:`kagent.kube.reconcile`): the engine
(``kagent.workflow.engine``) decides and owns the run tasks; this module connects it to the
controller: the watch-fed cache (Workflows and Agents are read from it), the dependency index (a
Workflow, and a run waiting for an Agent, are looked at again when the Agent changes), the queue
(a finished run frees a slot, so its Workflow and pending runs are looked at again), per-key
timers (a run's deadline or TTL) and the Result (a Workflow's condition changes become Events).

Runs themselves are read from the API server, not the cache: a run's status is the engine's
only record, written by the engine itself moments before, and a cached copy a moment old would
show a finished run as still Running (and have it resumed).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from lightkube import AsyncClient

from lightkube.types import PatchType

from kagent.api.base import parse_duration
from kagent.api.workflow import WorkflowStatus
from kagent.controller.cache import ControllerCache, trim_kagent
from kagent.controller.index import DependencyIndex, ObjectKey
from kagent.kube import KAGENT_RESOURCES
from kagent.kube.reconcile import Result
from kagent.workflow.resolver import AgentNotReady
from kagent.workflow.engine import WorkflowEngine
from kagent.workflow.executor import AGENT_WAIT_LIMIT, AgentCaller
from kagent.workflow.resolver import AgentResolver, ClusterAgentResolver
from kagent.workflow.scheduler import Clock, Scheduler
from kagent.workflow.store import KubeRunStore, RunGone, merge_patch


WORKFLOW_STATUS_DELAY = 0.5
"""A Workflow's run counts follow its runs' changes this much later, so a burst of changes
(many runs starting or ending at once) is counted once."""


def agent_wait_from_environment(environ: Mapping[str, str] | None = None) -> float:
    """``KAGENT_WORKFLOW_AGENT_WAIT`` (a duration such as 10m): how long a run waits for an
    agent that is missing or not Ready before it fails naming the agent."""
    text = (os.environ if environ is None else environ).get("KAGENT_WORKFLOW_AGENT_WAIT")
    return parse_duration(text).total_seconds() if text else AGENT_WAIT_LIMIT


SCHEDULE_CLOCK_ENV = "KAGENT_SCHEDULE_CLOCK"
"""For tests only: ``ORIGIN*SPEED`` makes the schedules' clock run SPEED times faster than the
wall clock from ORIGIN (see :class:`kagent.workflow.scheduler.Clock`)."""


def schedule_clock_from_environment(environ: Mapping[str, str] | None = None) -> Clock:
    return Clock.parse((os.environ if environ is None else environ).get(SCHEDULE_CLOCK_ENV))


class CachedRunStore(KubeRunStore):
    """The engine's store with Workflows and Agents read from the controller's cache (runs
    still from the API server: see the module docstring). A Workflow status write puts the
    answer into the cache, so the next look compares against what was written."""

    def __init__(self, client: AsyncClient, cache: ControllerCache) -> None:
        super().__init__(client)
        self.cache = cache

    async def get_workflow(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.cache.get("Workflow", namespace, name)

    async def agent_names(self, namespace: str) -> set[str] | None:
        return {str(a["metadata"]["name"]) for a in self.cache.list("Agent", namespace)}

    async def write_workflow_status(self, namespace: str, name: str, status: WorkflowStatus) -> str | None:
        if not isinstance(status, WorkflowStatus):
            raise TypeError(f"a Workflow status must be a WorkflowStatus, not {type(status).__name__}")
        cached = self.cache.get("Workflow", namespace, name)
        answer = await self.client.patch(KAGENT_RESOURCES["Workflow"].Status, name,
                                         {"status": merge_patch(status)},
                                         namespace=namespace, patch_type=PatchType.MERGE)
        written = answer.to_dict() if hasattr(answer, "to_dict") else dict(answer)
        store = self.cache.store("Workflow")
        if store is not None and cached is not None:
            store.replace_if_unchanged(namespace, name, cached["metadata"].get("resourceVersion"),
                                       trim_kagent(written))
        return (written.get("metadata") or {}).get("resourceVersion")


class CachedAgentResolver(ClusterAgentResolver):
    """Agents' readiness from the controller's cache instead of a request per look."""

    cache: ControllerCache | None = None

    async def _agent(self, namespace: str, name: str) -> dict[str, Any]:
        if self.cache is None:
            return await super()._agent(namespace, name)
        found = self.cache.get("Agent", namespace, name)
        if found is None:
            raise AgentNotReady(f'Agent "{name}" does not exist')
        return found


class WorkflowReconciler:
    def __init__(self, client: AsyncClient, index: DependencyIndex,
                 enqueue: Callable[[ObjectKey], None], resolver: AgentResolver | None = None,
                 caller: AgentCaller | None = None, cache: ControllerCache | None = None) -> None:
        self.index = index
        self.enqueue = enqueue
        self._timers: dict[ObjectKey, tuple[float, asyncio.TimerHandle]] = {}
        if resolver is None:
            resolver = CachedAgentResolver.from_environment(client)
            resolver.cache = cache
        self.engine = WorkflowEngine(
            client, resolver, caller,
            store=CachedRunStore(client, cache) if cache is not None else None,
            on_change=lambda namespace, workflow: self.look_again(
                ("Workflow", namespace, workflow), WORKFLOW_STATUS_DELAY),
            record_dependencies=lambda key, deps: index.record(("WorkflowRun", *key), deps),
            requeue_run=lambda namespace, name: enqueue(("WorkflowRun", namespace, name)),
            run_settled=lambda namespace, name: self.drop_timer(("WorkflowRun", namespace, name)),
            agent_wait=agent_wait_from_environment(),
        )
        self.scheduler = Scheduler(client, self.engine.store, schedule_clock_from_environment())

    async def reconcile(self, key: ObjectKey) -> Result:
        """The reconciler contract: a Workflow's Result carries the Agents it depends on and
        its condition changes (Events); its schedules' next slot and a run's looks again come
        from their own timers (its deadline, TTL, queue), since the work queue keeps the first
        delay it is given."""
        kind, namespace, name = key
        if kind == "Workflow":
            outcome = await self.engine.reconcile_workflow(namespace, name)
            for run in outcome.pending:
                self.enqueue(("WorkflowRun", namespace, run))
            next_slot = await self.scheduler.reconcile(namespace, name)
            if next_slot is not None:
                self.look_again(key, next_slot)
            return Result(dependencies=frozenset(("Agent", namespace, a) for a in outcome.agents),
                          transitions=outcome.transitions)
        try:
            after = await self.engine.reconcile_run(namespace, name)
        except RunGone:
            self.deleted(namespace, name)
            return Result.forget()
        if after is not None:
            self.look_again(("WorkflowRun", namespace, name), after)
        return Result()

    async def handle(self, kind: str, namespace: str, name: str) -> float | None:
        """Reconcile one key and record what its Result asks (for callers without the
        controller's runner)."""
        result = await self.reconcile((kind, namespace, name))
        if result.dependencies is not None:
            self.index.record((kind, namespace, name), set(result.dependencies))
        return result.requeue_after

    def look_again(self, key: ObjectKey, after: float) -> None:
        """Queue the key after ``after`` seconds, unless it is already due sooner. (The work
        queue keeps the first delay it was given — the periodic resync — but a run's deadline
        or TTL needs its own, earlier, look.)"""
        due = time.monotonic() + after
        current = self._timers.get(key)
        if current is not None and current[0] <= due:
            return
        if current is not None:
            current[1].cancel()

        def fire() -> None:
            self._timers.pop(key, None)
            self.enqueue(key)

        self._timers[key] = (due, asyncio.get_running_loop().call_later(after, fire))

    def drop_timer(self, key: ObjectKey) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer[1].cancel()

    def deleted(self, namespace: str, name: str) -> None:
        self.drop_timer(("WorkflowRun", namespace, name))
        self.engine.forget(namespace, name)
        self.index.forget(("WorkflowRun", namespace, name))

    async def shutdown(self) -> None:
        for _, timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        await self.engine.shutdown()
