"""Workflow and WorkflowRun keys from the work queue, handed to the workflow engine.

A thin adapter: the engine (``kagent.workflow.engine``) decides and owns the run tasks; this
module connects it to the controller: the dependency index (a run waiting for an Agent is looked
at again when the Agent changes), the queue (a finished run frees a slot, so its Workflow and
pending runs are looked at again) and per-key timers (a run's deadline or TTL).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from lightkube import AsyncClient

from kagent.controller.index import DependencyIndex, ObjectKey
from kagent.workflow.engine import WorkflowEngine
from kagent.workflow.executor import AgentCaller
from kagent.workflow.resolver import AgentResolver, ClusterAgentResolver
from kagent.workflow.store import RunGone


WORKFLOW_STATUS_DELAY = 0.5
"""A Workflow's run counts follow its runs' changes this much later, so a burst of changes
(many runs starting or ending at once) is counted once."""


class WorkflowReconciler:
    def __init__(self, client: AsyncClient, index: DependencyIndex,
                 enqueue: Callable[[ObjectKey], None], resolver: AgentResolver | None = None,
                 caller: AgentCaller | None = None) -> None:
        self.index = index
        self.enqueue = enqueue
        self._timers: dict[ObjectKey, tuple[float, asyncio.TimerHandle]] = {}
        self.engine = WorkflowEngine(
            client, resolver or ClusterAgentResolver.from_environment(client), caller,
            on_change=lambda namespace, workflow: self.look_again(
                ("Workflow", namespace, workflow), WORKFLOW_STATUS_DELAY),
            record_dependencies=lambda key, deps: index.record(("WorkflowRun", *key), deps),
            requeue_run=lambda namespace, name: enqueue(("WorkflowRun", namespace, name)),
            run_settled=lambda namespace, name: self.drop_timer(("WorkflowRun", namespace, name)),
        )

    async def handle(self, kind: str, namespace: str, name: str) -> float | None:
        if kind == "Workflow":
            for run in await self.engine.reconcile_workflow(namespace, name):
                self.enqueue(("WorkflowRun", namespace, run))
            return None
        try:
            after = await self.engine.reconcile_run(namespace, name)
        except RunGone:
            self.deleted(namespace, name)
            return None
        if after is not None:
            self.look_again(("WorkflowRun", namespace, name), after)
        return None

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
