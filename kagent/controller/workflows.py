"""Workflow and WorkflowRun keys from the work queue, handed to the workflow engine.

The engine (``kagent.workflow.engine``) owns the run tasks; this module connects it to the
controller: the dependency index (a run waiting for an Agent is looked at again when the Agent
changes) and the queue (a finished run frees a slot, so its Workflow and pending runs are looked
at again).
"""

from __future__ import annotations

from collections.abc import Callable

from lightkube import AsyncClient

from kagent.controller.index import DependencyIndex, ObjectKey
from kagent.workflow.engine import AgentCaller, RunGone, WorkflowEngine, a2a_caller
from kagent.workflow.resolver import AgentResolver, ClusterAgentResolver


class WorkflowReconciler:
    def __init__(self, client: AsyncClient, index: DependencyIndex,
                 enqueue: Callable[[ObjectKey], None], resolver: AgentResolver | None = None,
                 caller: AgentCaller = a2a_caller) -> None:
        self.index = index
        self.enqueue = enqueue
        self.engine = WorkflowEngine(
            client, resolver or ClusterAgentResolver.from_environment(client), caller,
            on_change=lambda namespace, workflow: enqueue(("Workflow", namespace, workflow)),
            record_dependencies=lambda key, deps: index.record(("WorkflowRun", *key), deps),
        )

    async def handle(self, kind: str, namespace: str, name: str) -> float | None:
        if kind == "Workflow":
            for run in await self.engine.reconcile_workflow(namespace, name):
                self.enqueue(("WorkflowRun", namespace, run))
            return None
        try:
            return await self.engine.reconcile(namespace, name)
        except RunGone:
            self.deleted(namespace, name)
            return None

    def deleted(self, namespace: str, name: str) -> None:
        self.engine.forget(namespace, name)
        self.index.forget(("WorkflowRun", namespace, name))

    async def shutdown(self) -> None:
        await self.engine.shutdown()
