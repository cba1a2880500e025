"""The workflow engine as the controller sees it: two level-based entry points, one per kind,
over the parts that do the work.

- :mod:`kagent.workflow.lifecycle`: admission, queueing and clean-up of a WorkflowRun;
- :mod:`kagent.workflow.executor`: executing an admitted run (one asyncio task per run);
- :mod:`kagent.workflow.workflowstatus`: a Workflow's status;
- :mod:`kagent.workflow.store`: the cluster I/O they share (typed status writes);
- pure decisions in :mod:`~kagent.workflow.state`, :mod:`~kagent.workflow.plan` and
  :mod:`~kagent.workflow.expressions`.

Only the leader runs an engine; its runs' status is the record a new leader resumes from.
"""

from __future__ import annotations

from collections.abc import Callable

from lightkube import AsyncClient
from opentelemetry import trace

from kagent.agentclient import AgentClient, Answer
from kagent.workflow.executor import AGENT_WAIT_LIMIT, AgentCaller, RunServices
from kagent.workflow.expressions import Expressions, WorkerExpressions
from kagent.workflow.lifecycle import RunKey, RunLifecycle
from kagent.workflow.plan import PlanCache
from kagent.workflow.resolver import AgentResolver
from kagent.workflow.store import KubeRunStore, RunStore
from kagent.workflow.workflowstatus import WorkflowOutcome, WorkflowStatusReconciler


class A2ACaller:
    """Calls agents over A2A through one pooled client owned by the engine."""

    def __init__(self) -> None:
        self._client: AgentClient | None = None

    async def __call__(self, url: str, agent: str, message: str, *, timeout: float,
                       message_id: str, headers: dict[str, str] | None = None) -> Answer:
        if self._client is None:  # made on first use, inside the engine's event loop
            self._client = AgentClient()
        return await self._client.ask(url, agent, message, timeout=timeout, message_id=message_id,
                                      headers=headers)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


class WorkflowEngine:
    """Runs and Workflows of the current leader."""

    def __init__(self, client: AsyncClient | None, resolver: AgentResolver,
                 caller: AgentCaller | None = None, *,
                 store: RunStore | None = None,
                 on_change: Callable[[str, str], None] | None = None,
                 record_dependencies: Callable[[RunKey, set[tuple[str, str, str]]], None] | None = None,
                 requeue_run: Callable[[str, str], None] | None = None,
                 run_settled: Callable[[str, str], None] | None = None,
                 record_workflow_agents: Callable[[str, str, set[str]], None] | None = None,
                 tracer_provider: trace.TracerProvider | None = None,
                 expressions: Expressions | None = None,
                 agent_wait: float = AGENT_WAIT_LIMIT) -> None:
        from kagent.workflow.tracing import controller_tracer_provider

        if store is None:
            assert client is not None, "give a Kubernetes client or a store"
            store = KubeRunStore(client)
        self.store = store
        self.caller = caller or A2ACaller()
        tracer = (tracer_provider or controller_tracer_provider()).get_tracer("kagent.workflow")
        self.expressions = expressions or WorkerExpressions()
        self.services = RunServices(store, resolver, self.caller, tracer, self.expressions, agent_wait)
        self.plans = PlanCache()
        self.workflows = WorkflowStatusReconciler(store, self.plans, record_workflow_agents)
        notify = on_change or (lambda namespace, workflow: None)

        def runs_changed(namespace: str, workflow: str) -> None:
            self.workflows.runs_changed(namespace, workflow)
            notify(namespace, workflow)

        self.runs = RunLifecycle(
            self.services, self.plans,
            on_change=runs_changed,
            record_dependencies=record_dependencies or (lambda key, deps: None),
            requeue_run=requeue_run or (lambda namespace, name: None),
            run_settled=run_settled,
        )

    async def reconcile_run(self, namespace: str, name: str) -> float | None:
        """Bring a WorkflowRun forward; seconds after which to look at it again, if any.
        Raises RunGone when the run disappeared under the engine."""
        return await self.runs.reconcile(namespace, name)

    async def reconcile_workflow(self, namespace: str, name: str) -> WorkflowOutcome:
        """Write a Workflow's status; its pending runs (to look at again), its agents and the
        changes of its conditions."""
        return await self.workflows.reconcile(namespace, name)

    def forget(self, namespace: str, name: str) -> None:
        """The run was deleted: stop it without writing anything."""
        self.runs.forget(namespace, name)

    async def shutdown(self) -> None:
        """Leadership lost: stop every run quietly (the next leader resumes them)."""
        await self.runs.shutdown()
        if isinstance(self.caller, A2ACaller):
            await self.caller.aclose()
        close = getattr(self.expressions, "close", None)
        if close is not None:
            close()  # worker processes start again on the next use
