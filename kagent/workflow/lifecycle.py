"""A WorkflowRun's life around its execution: admission (waiting for agents, the Workflow's
concurrency policy: queue, reject or replace), the run's deadline, cancellation, and clean-up
of finished runs (``ttlSecondsAfterFinished``).

:meth:`RunLifecycle.reconcile` brings one run forward and says when to look at it again; it is
level-based (it reads the run and decides from what it finds), so it can be called any number of
times, by any leader. The executing itself is :class:`~kagent.workflow.executor.RunExecutor`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from kagent.api.workflow import WorkflowRun, WorkflowRunStatus
from kagent.kube.conditions import find_condition, now_rfc3339, set_condition
from kagent.workflow import metrics
from kagent.workflow.executor import RunExecutor, RunServices
from kagent.workflow.plan import PlanCache, WorkflowPlan
from kagent.workflow.resolver import AgentNotReady
from kagent.workflow.retry import RETRYING, RetryProblem, attempt_started, retry_status, wants_retry
from kagent.workflow.state import (
    FINISHED_RUN_PHASES,
    admit,
    bound_error,
    missing_inputs,
    missing_inputs_message,
    parse_time,
    run_deadline,
    stopped_step,
)
from kagent.workflow.store import RunSummary

RunKey = tuple[str, str]
"""(namespace, name) of a WorkflowRun."""
AGENT_RECHECK_SECONDS = 6.0
"""How often a run waiting for an agent looks again (an Agent's change also wakes it)."""
QUEUE_RECHECK_SECONDS = 30.0
"""How often a queued run looks again (a run of its Workflow ending here wakes it at once)."""
MISSING_WORKFLOW_RECHECK_SECONDS = 10.0
REPLACE_WAIT_SECONDS = 10.0
FINISHED_MEMORY = 1024
RUN_LIST_SECONDS = 1.0
RETRY_WAIT_SECONDS = 0.5
"""How soon a run whose retry came while its executor was still writing its end looks again."""
RUNNING_READ_SECONDS = 5.0
"""How often a run being executed is read again at most, to see a cancel during a long step
(its executor sees one at once in the answer to each of its status writes). A read is a
request to the API server today; served from a cache it could be read at every event."""


def recheck_after(deadline: float | None, every: float, now: float) -> float:
    """Seconds until the next look: ``every``, or sooner when the run's deadline comes first."""
    if deadline is None:
        return every
    return max(min(every, deadline - now), 0.1)


class RunLifecycle:
    """Admission, queueing and clean-up of the current leader's runs; holds their executors."""

    def __init__(self, services: RunServices, plans: PlanCache,
                 on_change: Callable[[str, str], None],
                 record_dependencies: Callable[[RunKey, set[tuple[str, str, str]]], None],
                 requeue_run: Callable[[str, str], None],
                 run_settled: Callable[[str, str], None] | None = None) -> None:
        self.services = services
        self.store = services.store
        self.plans = plans
        self.on_change = on_change
        self.record_dependencies = record_dependencies
        self.requeue_run = requeue_run
        self.run_settled = run_settled or (lambda namespace, name: None)
        """Nothing is due for a run until it changes: a look asked for earlier is not needed."""
        self.executors: dict[RunKey, RunExecutor] = {}
        self.finished: OrderedDict[RunKey, WorkflowPlan | None] = OrderedDict()
        """Runs that recently ended here, with the Workflow they ran (so their clean-up need
        not read it): a list of runs read before they ended does not count them running."""
        self._lists: dict[tuple[str, str], tuple[float, asyncio.Future[list[RunSummary]]]] = {}
        self.queued: dict[tuple[str, str], set[str]] = {}
        """Runs this leader put in a Workflow's queue, woken as soon as one of its runs ends."""
        self._admission: dict[tuple[str, str], asyncio.Lock] = {}

    # --- the executors ----------------------------------------------------------------------

    def forget(self, namespace: str, name: str) -> None:
        """The run was deleted: stop its steps without writing anything."""
        self.finished.pop((namespace, name), None)
        for (queue_namespace, _), waiting in self.queued.items():
            if queue_namespace == namespace:
                waiting.discard(name)
        executor = self.executors.pop((namespace, name), None)
        if executor is not None and executor.task is not None:
            executor.task.cancel()

    async def shutdown(self) -> None:
        """Leadership lost: stop quietly; the next leader resumes every run from its status."""
        tasks = [e.task for e in self.executors.values() if e.task is not None]
        self.executors.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def executor_for(self, run: WorkflowRun, plan: WorkflowPlan,
                     workflow: dict[str, Any] | None = None) -> RunExecutor:
        """The run's executor; ``workflow`` (as stored) gives the labels its calls carry."""
        key = (str(run.metadata.namespace), str(run.metadata.name))
        executor = self.executors.get(key)
        if executor is None:
            labels = ((workflow or {}).get("metadata") or {}).get("labels") or {}
            executor = RunExecutor(self.services, run, plan, on_exit=self.exited,
                                   workflow_labels=dict(labels))
            self.executors[key] = executor
        return executor

    def exited(self, executor: RunExecutor, crashed: bool) -> None:
        """A run's task ended: its slot is free (the Workflow's queue may move). A crashed
        task's run is looked at again (and resumed); a finished one only if it has a TTL to
        keep."""
        key = (executor.namespace, executor.name)
        if self.executors.get(key) is executor:
            del self.executors[key]
        if crashed:  # resumed: it has not ended
            self.requeue_run(*key)
            return
        self.ended(key, executor.workflow, executor.plan)
        if executor.spec.ttl_seconds_after_finished is not None:
            self.requeue_run(*key)
        else:  # finished for good: the looks its steps' events asked for are not needed
            self.run_settled(*key)

    def ended(self, key: RunKey, workflow: str, plan: WorkflowPlan | None) -> None:
        """A run ended here: remember it, and wake its Workflow's queue (a slot may be free)."""
        self.finished[key] = plan
        self.finished.move_to_end(key)
        while len(self.finished) > FINISHED_MEMORY:
            self.finished.popitem(last=False)
        self.on_change(key[0], workflow)
        for waiting in sorted(self.queued.get((key[0], workflow), ())):
            self.requeue_run(key[0], waiting)

    # --- reconcile --------------------------------------------------------------------------

    async def reconcile(self, namespace: str, name: str) -> float | None:
        """Bring one run forward; returns seconds after which to look again.

        A run being executed changes with every step (each status write comes back as an
        event); it is read only when neither it was read nor its executor wrote its status in
        the last RUNNING_READ_SECONDS: the answer to a status write is the run as it is (its
        executor sees a cancel there), and this read sees one during a long step."""
        key = (namespace, name)
        executor = self.executors.get(key)
        if executor is not None and executor.running:
            if executor.finishing:  # writing its end: its exit looks again if there is more to do
                return None
            wait = executor.read_at + RUNNING_READ_SECONDS - time.monotonic()
            if wait > 0:
                return wait
            executor.read_at = time.monotonic()
        run = await self.store.get_run(namespace, name)
        if run is None:
            self.forget(namespace, name)
            return None
        status = run.status or WorkflowRunStatus()
        workflow_name = run.spec.workflow_ref.name
        executor = self.executors.get(key)
        if status.phase in FINISHED_RUN_PHASES:
            if wants_retry(run.spec.retry, status):
                if executor is not None:  # still writing its end: retried once it has left
                    return RETRY_WAIT_SECONDS
                return await self.retry(run, status)
            if executor is not None:  # still posting its last Event: its exit looks again
                return None
            return await self.collect_garbage(run, self.finished.get(key))
        if executor is not None:
            if run.spec.cancel:
                executor.stop("Cancelled", "the run was cancelled")
            return None
        workflow = await self.store.get_workflow(namespace, workflow_name)
        if workflow is None:
            message = f'Workflow "{workflow_name}" does not exist'
            if status.phase == "Running":  # deleted while the run was under way: nothing to resume
                await self.end(run, "WorkflowNotFound", message)
                return None
            await self.set_pending(run, "WorkflowNotFound", message)
            return MISSING_WORKFLOW_RECHECK_SECONDS
        try:
            plan = self.plans.for_workflow(workflow)
        except ValueError as error:
            await self.end(run, "InvalidWorkflow", str(error))
            return None
        if run.spec.cancel:
            await self.end(run, "Cancelled", "the run was cancelled")
            return None
        now = time.time()
        deadline = run_deadline(attempt_started(status) or run.metadata.creation_timestamp,
                                plan.spec.timeout, now)
        if deadline is not None and now >= deadline:
            await self.end(run, "Timeout", f"the run did not finish within {plan.spec.timeout}")
            return None
        if status.phase == "Running":  # admitted by an earlier leader: resume
            self.executor_for(run, plan, workflow).start()
            return None
        missing = missing_inputs(plan.spec, run.spec.input)
        if missing:  # the webhook refuses these when it knows the Workflow; created before it
            await self.end(run, "InvalidInput", missing_inputs_message(workflow_name, missing))
            return None
        self.record_dependencies(key, {("Agent", namespace, a) for a in plan.agents}
                                 | {("Workflow", namespace, workflow_name)})
        # the agents and the Workflow's other runs are read at once: both are needed to admit
        not_ready, runs = await asyncio.gather(
            self.first_agent_not_ready(namespace, plan),
            self.runs_of(namespace, workflow_name) if plan.spec.concurrency else _none())
        if not_ready is not None:
            waited = now - (waiting_since(status) or now)
            limit = self.services.agent_wait
            if waited >= limit:
                await self.end(run, "AgentNotReady", f"{not_ready} (waited {limit:g}s)")
                return None
            await self.set_pending(run, "WaitingForAgent", str(not_ready))
            return recheck_after(min(deadline or float("inf"), now + limit - waited + 0.1),
                                 AGENT_RECHECK_SECONDS, time.time())
        return await self.admit(run, plan, workflow, runs or [], deadline)

    async def runs_of(self, namespace: str, workflow: str) -> list[RunSummary]:
        """The Workflow's runs as admission needs them. One list serves every admission that
        asks within RUN_LIST_SECONDS (a burst of new runs costs a few lists, not one each):
        what changed here since is corrected from the executors and the ended runs."""
        key = (namespace, workflow)
        now = time.monotonic()
        shared = self._lists.get(key)
        if shared is None or now - shared[0] > RUN_LIST_SECONDS:
            self._lists = {k: v for k, v in self._lists.items() if now - v[0] <= RUN_LIST_SECONDS}
            listing = asyncio.ensure_future(self.store.runs_of(namespace, workflow))
            shared = self._lists[key] = (now, listing)

            def failed(done: asyncio.Future[list[RunSummary]], mine: Any = shared) -> None:
                if (done.cancelled() or done.exception() is not None) and self._lists.get(key) is mine:
                    del self._lists[key]

            listing.add_done_callback(failed)
        return await asyncio.shield(shared[1])

    async def first_agent_not_ready(self, namespace: str, plan: WorkflowPlan) -> AgentNotReady | None:
        for agent in plan.agents:
            try:
                await self.services.resolver.resolve(namespace, agent)
            except AgentNotReady as error:
                return error
        return None

    async def admit(self, run: WorkflowRun, plan: WorkflowPlan, workflow: dict[str, Any],
                    runs: list[RunSummary], deadline: float | None) -> float | None:
        """Start the run unless its Workflow's concurrency says otherwise. ``runs`` may be a
        moment old: a run admitted since is counted from the executors, under the lock."""
        namespace, name = str(run.metadata.namespace), str(run.metadata.name)
        workflow_name = run.spec.workflow_ref.name
        concurrency = plan.spec.concurrency
        lock = self._admission.setdefault((namespace, workflow_name), asyncio.Lock())
        async with lock:
            if concurrency is not None:
                running = [(r.created, r.name) for r in runs if r.name != name and (
                    (namespace, r.name) in self.executors
                    or (r.phase == "Running" and (namespace, r.name) not in self.finished))]
                pending = [(r.created, r.name) for r in runs
                           if r.phase in (None, "Pending") and not r.cancel
                           and (namespace, r.name) not in self.executors
                           and (namespace, r.name) not in self.finished]
                decision = admit(name, concurrency.limit, concurrency.policy, running, pending)
                if decision.action == "wait":
                    self.queued.setdefault((namespace, workflow_name), set()).add(name)
                    await self.set_pending(run, "Queued", f"waiting for one of {len(running)} running "
                                           f"runs to finish (limit {concurrency.limit})")
                    return recheck_after(deadline, QUEUE_RECHECK_SECONDS, time.time())
                if decision.action == "reject":
                    await self.end(run, "ConcurrencyLimit", f"{len(running)} runs are already running "
                                   f"(limit {concurrency.limit})")
                    return None
                if decision.action == "replace" and decision.replace:
                    await self.replace(namespace, decision.replace, name)
            await self.start(run, plan, workflow)
        self.on_change(namespace, workflow_name)
        return None

    async def start(self, run: WorkflowRun, plan: WorkflowPlan, workflow: dict[str, Any]) -> None:
        """Admit the run: one status write holds phase Running and the attempts of the steps
        that can start at once, then the executor sends them."""
        self.queued.get((str(run.metadata.namespace), run.spec.workflow_ref.name), set()).discard(
            str(run.metadata.name))
        status = (run.status or WorkflowRunStatus()).model_copy()
        status.phase, status.reason, status.message = "Running", "Running", "the run is executing"
        status.started_at = status.started_at or now_rfc3339()
        status.workflow_generation = workflow["metadata"].get("generation")
        status.observed_generation = run.metadata.generation
        if find_condition(status.conditions, AGENTS_READY) is not None:
            status.conditions = set_condition(status.conditions, AGENTS_READY, True, "Ready",
                                              "every agent the run calls is Ready",
                                              run.metadata.generation, now_rfc3339())
        executor = self.executor_for(run.model_copy(update={"status": status}), plan, workflow)
        try:
            await executor.schedule()
            await executor.flush()
        except BaseException:  # not admitted after all: the next reconcile tries again
            self.executors.pop((executor.namespace, executor.name), None)
            raise
        metrics.RUNS_STARTED.labels(executor.workflow).inc()
        executor.start()
        self.record_dependencies((executor.namespace, executor.name), set())  # no more waiting
        await self.store.post_event(run, "Normal", "Started", f"run of Workflow {executor.workflow} started")

    async def replace(self, namespace: str, old: str, new: str) -> None:
        message = f"replaced by run {new} (concurrency policy replace)"
        executor = self.executors.get((namespace, old))
        if executor is not None and executor.running:
            executor.stop("Replaced", message)
            assert executor.task is not None
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(executor.task), REPLACE_WAIT_SECONDS)
            return
        run = await self.store.get_run(namespace, old)
        if run is not None and (run.status is None or run.status.phase not in FINISHED_RUN_PHASES):
            await self.end(run, "Replaced", message)

    async def set_pending(self, run: WorkflowRun, reason: str, message: str) -> None:
        """Pending for ``reason``; the AgentsReady condition says since when it waits for an
        agent (the bound on that wait counts from there, whichever leader looks)."""
        status = run.status or WorkflowRunStatus()
        if (status.phase, status.reason, status.message) == ("Pending", reason, message):
            return
        pending = WorkflowRunStatus(phase="Pending", reason=reason, message=message)
        waiting = reason == "WaitingForAgent"
        if waiting or find_condition(status.conditions, AGENTS_READY) is not None:
            pending.conditions = set_condition(
                status.conditions, AGENTS_READY, not waiting, reason if waiting else "Ready",
                message if waiting else "every agent the run calls is Ready",
                run.metadata.generation, now_rfc3339())
        await self.store.write_run_status(str(run.metadata.namespace), str(run.metadata.name), pending)
        if status.reason != reason:
            await self.store.post_event(run, "Normal", reason, message)
        self.on_change(str(run.metadata.namespace), run.spec.workflow_ref.name)

    async def end(self, run: WorkflowRun, reason: str, message: str) -> None:
        """Fail a run that has no task (never started, or its task is gone)."""
        self.queued.get((str(run.metadata.namespace), run.spec.workflow_ref.name), set()).discard(
            str(run.metadata.name))
        status = run.status or WorkflowRunStatus()
        now = now_rfc3339()
        message = bound_error(message)
        ended = WorkflowRunStatus(phase="Failed", reason=reason, message=message, finished_at=now)
        if status.steps:
            ended.steps = [stopped_step(s, message, now) for s in status.steps]
        await self.store.write_run_status(str(run.metadata.namespace), str(run.metadata.name), ended)
        key = (str(run.metadata.namespace), str(run.metadata.name))
        self.record_dependencies(key, set())
        workflow = run.spec.workflow_ref.name
        metrics.RUNS.labels(workflow, "Failed", reason).inc()
        self.ended(key, workflow, None)
        await self.store.post_event(run, "Warning", reason, message)

    async def retry(self, run: WorkflowRun, status: WorkflowRunStatus) -> float | None:
        """Take up ``spec.retry`` of a finished run: one status write puts the run back to
        Pending with the steps to run again reset and the attempt recorded (so the request is
        taken up once, by whichever leader), then it is admitted like a new run. A retry that
        cannot be taken up (its Workflow gone or invalid, an unknown fromStep) is recorded as
        taken up, and the run stays Failed saying why."""
        namespace, name = str(run.metadata.namespace), str(run.metadata.name)
        retry = run.spec.retry
        assert retry is not None
        workflow_name = run.spec.workflow_ref.name
        workflow = await self.store.get_workflow(namespace, workflow_name)
        now = now_rfc3339()
        try:
            if workflow is None:
                raise RetryProblem("spec.workflowRef", f'Workflow "{workflow_name}" does not exist')
            try:
                plan = self.plans.for_workflow(workflow)
            except ValueError as error:
                raise RetryProblem("spec.workflowRef", f"Workflow {workflow_name} is invalid: {error}") from None
            retried = retry_status(status, plan, retry, now)
        except RetryProblem as problem:
            refused = WorkflowRunStatus(attempt=retry.attempt, reason="RetryRefused",
                                        message=bound_error(f"retry {retry.attempt} refused: {problem}"))
            await self.store.write_run_status(namespace, name, refused)
            await self.store.post_event(run, "Warning", "RetryRefused", str(refused.message))
            return None
        await self.store.write_run_status(namespace, name, retried)
        self.finished.pop((namespace, name), None)
        metrics.RUNS_RETRIED.labels(workflow_name).inc()
        await self.store.post_event(run, "Normal", RETRYING, str(retried.message))
        self.on_change(namespace, workflow_name)
        return 0.0  # admit it now, like a new run

    async def collect_garbage(self, run: WorkflowRun, plan: WorkflowPlan | None = None) -> float | None:
        """Delete a finished run ``ttlSecondsAfterFinished`` after it finished. ``plan`` is the
        Workflow the run just ran (so it need not be read again), if known."""
        namespace = str(run.metadata.namespace)
        if plan is not None:
            ttl = plan.spec.ttl_seconds_after_finished
        else:
            workflow = await self.store.get_workflow(namespace, run.spec.workflow_ref.name)
            ttl = ((workflow or {}).get("spec") or {}).get("ttlSecondsAfterFinished")
        finished = parse_time(run.status.finished_at if run.status else None)
        if ttl is None or finished is None:
            return None
        left = finished + ttl - time.time()
        if left > 0:
            return left + 0.5
        await self.store.delete_run(namespace, str(run.metadata.name))
        return None


AGENTS_READY = "AgentsReady"
"""A run's condition while it waits for agents (False since the wait began)."""


def waiting_since(status: WorkflowRunStatus) -> float | None:
    """When the run began to wait for an agent, if it is waiting (its AgentsReady condition)."""
    found = find_condition(status.conditions, AGENTS_READY)
    if found is None or found.status != "False":
        return None
    return parse_time(found.last_transition_time)


async def _none() -> None:
    return None
