"""The workflow engine: one asyncio task per active WorkflowRun, owned by the leader.

A run's task starts every step whose dependencies are done, concurrently, and writes the whole
run status (a merge patch on the status subresource, one writer per run) after every step
transition. The status is the only record: a new leader reads it and carries on — Succeeded and
Skipped steps are kept, a Running step is sent again with the same A2A message id (its
``taskId``, written before the request goes out), Pending steps start when they are ready.

Admission (concurrency policies, waiting for agents) happens in :meth:`WorkflowEngine.reconcile`,
called from the controller's work queue; the run task itself only executes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.types import PatchType
from opentelemetry import trace

from kagent.api.base import parse_duration
from kagent.api.workflow import WorkflowSpec, WorkflowStep
from kagent.kube.conditions import now_rfc3339
from kagent.kube.events import post_event
from kagent.kube import KAGENT_RESOURCES, apply, is_not_found
from kagent.workflow import metrics
from kagent.workflow.expressions import ExpressionError, evaluate_condition, render_template
from kagent.workflow.plan import PlanError, plan
from kagent.workflow.resolver import AgentNotReady, AgentResolver
from kagent.workflow.state import (
    DEPENDENCY_FAILED,
    admit,
    backoff_delay,
    bound_output,
    default_input,
    fails_fast,
    format_duration,
    loop_group,
    merge_steps,
    parse_choice,
    readiness,
    reset_for_iteration,
    retry_policy,
    router_prompt,
    sum_usage,
    template_variables,
)

log = logging.getLogger("kagent.workflow")

RunKey = tuple[str, str]
"""(namespace, name) of a WorkflowRun."""
AGENT_WAIT_SECONDS = 3.0
FINISHED = ("Succeeded", "Failed")


@dataclass
class Answer:
    text: str
    usage: dict[str, int] | None = None


class AgentCaller(Protocol):
    async def __call__(self, url: str, agent: str, message: str, *, timeout: float,
                       message_id: str) -> Answer: ...


async def a2a_caller(url: str, agent: str, message: str, *, timeout: float,
                     message_id: str) -> Answer:
    """Ask the agent over A2A (the same client agent-as-tool uses), with the model usage the
    runtime reports in its answer."""
    from kagent.agentclient import ask_agent_with_usage

    text, usage = await ask_agent_with_usage(url, agent, message, timeout=timeout,
                                             message_id=message_id)
    return Answer(text, usage or None)


class RunGone(Exception):
    """The run was deleted while the engine worked on it."""


class StepError(Exception):
    """A step attempt failed; ``retryable`` is False for mistakes no retry can fix."""

    def __init__(self, message: str, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


def _parse_time(text: str | None) -> float | None:
    if not text:
        return None
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def run_deadline(run: dict[str, Any], spec: WorkflowSpec) -> float | None:
    """Wall-clock deadline of the run: creation plus the Workflow's timeout (pending included)."""
    if not spec.timeout:
        return None
    created = _parse_time(run["metadata"].get("creationTimestamp")) or time.time()
    return created + parse_duration(spec.timeout).total_seconds()


def run_trace_context(uid: str) -> Any:
    """A parent context whose trace id is the run's uid, so the run keeps one trace even when a
    new leader resumes it (and the trace is found from the run: its uid without dashes)."""
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    try:
        trace_id = uuid.UUID(uid).int
    except ValueError:
        trace_id = int.from_bytes(hashlib.sha256(uid.encode()).digest()[:16], "big")
    span_id = (trace_id >> 64) or 1
    parent = SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    return trace.set_span_in_context(NonRecordingSpan(parent))


def workflow_agents(spec: WorkflowSpec) -> list[str]:
    """Every agent a run of the workflow may call, in order of first mention."""
    names: list[str] = []
    for step in spec.steps:
        candidates = [step.agent] if step.agent else []
        if step.route:
            candidates += [c.agent for c in step.route.cases or []]
            candidates += [step.route.default, step.route.router, *(step.route.choices or [])]
        names += [c for c in candidates if c and c not in names]
    return names


class RunExecutor:
    """Executes one run from whatever its status records."""

    def __init__(self, engine: WorkflowEngine, run: dict[str, Any], spec: WorkflowSpec) -> None:
        self.engine = engine
        self.run = run
        self.spec = spec
        self.namespace = run["metadata"]["namespace"]
        self.name = run["metadata"]["name"]
        self.uid = run["metadata"].get("uid") or self.name
        self.workflow = run["spec"]["workflowRef"]["name"]
        self.input: dict[str, Any] = run["spec"].get("input") or {}
        self.status: dict[str, Any] = dict(run.get("status") or {})
        self.steps = merge_steps(spec, self.status.get("steps"))
        self.outputs: dict[str, str] = {s["name"]: s.get("output") or "" for s in self.steps}
        self.large: dict[str, str] = {}
        self.lock = asyncio.Lock()
        self.stop_reason: tuple[str, str] | None = None
        self.task: asyncio.Task[None] | None = None
        self.deps = plan(spec)
        self.deadline = run_deadline(run, spec)

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        self.task = asyncio.create_task(self.main(), name=f"workflowrun-{self.namespace}-{self.name}")
        self.task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:  # e.g. the apiserver unreachable for long: look at the run again
            log.error("run %s/%s stopped unexpectedly: %r; it will be resumed", self.namespace,
                      self.name, error)
        self.engine.requeue_run(self.namespace, self.name)

    def stop(self, reason: str, message: str) -> None:
        """End the run as Failed with ``reason``; in-flight steps are cancelled."""
        if self.task is not None and not self.task.done() and self.stop_reason is None:
            self.stop_reason = (reason, message)
            self.task.cancel()

    def step(self, name: str) -> dict[str, Any]:
        return next(s for s in self.steps if s["name"] == name)

    def spec_step(self, name: str) -> WorkflowStep:
        return next(s for s in self.spec.steps if s.name == name)

    async def main(self) -> None:
        with self.engine.tracer.start_as_current_span(
            "workflow.run", context=run_trace_context(self.uid), attributes={"kagent.workflow": self.workflow, "kagent.run": self.name,
                                        "k8s.namespace.name": self.namespace},
        ):
            try:
                await self.load_outputs()
                remaining = None if self.deadline is None else max(self.deadline - time.time(), 0)
                try:
                    await asyncio.wait_for(self.execute(), remaining)
                except TimeoutError:
                    await self.finish_stopped("Timeout", f"the run did not finish within {self.spec.timeout}")
            except RunGone:
                return
            except asyncio.CancelledError:
                if self.stop_reason is None:
                    raise  # leadership lost or the run deleted: the next leader resumes it
                current = asyncio.current_task()
                if current is not None:
                    current.uncancel()
                await self.finish_stopped(*self.stop_reason)

    async def load_outputs(self) -> None:
        """Full texts of cut outputs, from the ConfigMap they were kept in."""
        if not any(s.get("outputRef") for s in self.steps):
            return
        from lightkube.resources.core_v1 import ConfigMap

        try:
            cm = await self.engine.client.get(ConfigMap, self.outputs_configmap, namespace=self.namespace)
        except ApiError as error:
            if not is_not_found(error):
                raise
            return
        self.large = dict(cm.data or {})
        for step in self.steps:
            ref = step.get("outputRef")
            if ref and ref.get("key") in self.large:
                self.outputs[step["name"]] = self.large[ref["key"]]

    @property
    def outputs_configmap(self) -> str:
        return f"{self.name}-outputs"[:253]

    # --- scheduling -------------------------------------------------------------------------

    async def execute(self) -> None:
        tasks: dict[str, asyncio.Task[bool]] = {}
        try:
            for step in self.steps:
                if step.get("phase") == "Running":  # in flight when the last leader stopped
                    tasks[step["name"]] = asyncio.create_task(self.run_step(step["name"], resume=True))
            while True:
                changed = self.schedule(tasks)
                if changed:
                    await self.flush()
                    continue
                if not tasks:
                    break
                done, _ = await asyncio.wait(tasks.values(), return_when=asyncio.FIRST_COMPLETED)
                for name, task in list(tasks.items()):
                    if task in done:
                        del tasks[name]
                        if not task.result() and fails_fast(self.spec):
                            await self.cancel_steps(tasks, f"cancelled: step {name} failed")
                            tasks.clear()
                            await self.finish("Failed", "StepFailed",
                                              f"step {name} failed: {self.step(name).get('error')}")
                            return
            failed = [s["name"] for s in self.steps if s.get("phase") == "Failed"]
            if failed:
                await self.finish("Failed", "StepFailed", "failed steps: " + ", ".join(failed))
            else:
                await self.finish_succeeded()
        finally:
            for task in tasks.values():
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks.values(), return_exceptions=True)

    def schedule(self, tasks: dict[str, asyncio.Task[bool]]) -> bool:
        """Skip blocked steps and steps whose ``when`` is false; start ready steps. Returns
        whether a step was skipped (the status must be written)."""
        ready = readiness(self.deps, self.steps)
        changed = False
        for name in ready.blocked:
            self.step(name).update(phase="Skipped", error=DEPENDENCY_FAILED, finishedAt=now_rfc3339())
            changed = True
        for name in ready.ready:
            if name in tasks:
                continue
            when = self.spec_step(name).when
            if when is not None:
                try:
                    go = evaluate_condition(when, self.variables())
                except ExpressionError as error:
                    self.step(name).update(phase="Failed", error=str(error), finishedAt=now_rfc3339())
                    changed = True
                    continue
                if not go:
                    self.step(name).update(phase="Skipped", error=None, finishedAt=now_rfc3339())
                    self.outputs[name] = ""
                    changed = True
                    continue
            tasks[name] = asyncio.create_task(self.run_step(name))
        return changed

    async def cancel_steps(self, tasks: dict[str, asyncio.Task[bool]], why: str) -> None:
        for task in tasks.values():
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
        self.mark_running_failed(why)

    def mark_running_failed(self, why: str) -> None:
        for step in self.steps:
            if step.get("phase") == "Running":
                step.update(phase="Failed", error=why, finishedAt=now_rfc3339())

    def variables(self) -> dict[str, Any]:
        return template_variables(self.input, self.steps, self.outputs)

    # --- one step ---------------------------------------------------------------------------

    async def run_step(self, name: str, resume: bool = False) -> bool:
        """Run a step with its retries; True when it succeeded."""
        spec_step = self.spec_step(name)
        policy = retry_policy(self.spec, spec_step)
        failures = 0
        with self.engine.tracer.start_as_current_span(
                "workflow.step", attributes={"kagent.step": name, "kagent.run": self.name}):
            while True:
                step = self.step(name)
                if not (resume and step.get("taskId")):
                    attempts = int(step.get("attempts") or 0) + 1
                    step.update(phase="Running", attempts=attempts,
                                taskId=f"{self.uid}-{name}-{attempts}",
                                startedAt=step.get("startedAt") or now_rfc3339(), finishedAt=None)
                    await self.flush()
                resume = False
                started = time.perf_counter()
                try:
                    answer, agent = await self.attempt(spec_step, step)
                except (asyncio.CancelledError, RunGone):
                    raise
                except Exception as error:  # noqa: BLE001 - a failed agent fails the step, not the engine
                    metrics.STEP_DURATION.labels(self.workflow, "failure").observe(time.perf_counter() - started)
                    failures += 1
                    retryable = not isinstance(error, StepError) or error.retryable
                    step["error"] = str(error) or type(error).__name__
                    if retryable and failures <= policy.limit:
                        await self.flush()
                        await asyncio.sleep(backoff_delay(policy, failures))
                        continue
                    step.update(phase="Failed", finishedAt=now_rfc3339())
                    await self.flush()
                    return False
                metrics.STEP_DURATION.labels(self.workflow, "success").observe(time.perf_counter() - started)
                await self.record_success(spec_step, step, agent, answer)
                return True

    async def attempt(self, spec_step: WorkflowStep, step: dict[str, Any]) -> tuple[Answer, str]:
        variables = self.variables()
        try:
            if spec_step.input is not None:
                content = render_template(spec_step.input, variables)
            else:
                content = default_input(self.spec, self.deps, spec_step.name, self.input, self.outputs)
        except ExpressionError as error:
            raise StepError(str(error), retryable=False) from None
        agent = spec_step.agent or await self.route(spec_step, step, content, variables)
        if step.get("agent") != agent:
            step["agent"] = agent
            await self.flush()
        timeout = parse_duration(spec_step.timeout).total_seconds() if spec_step.timeout else None
        try:
            answer = await asyncio.wait_for(
                self.call(agent, content, message_id=step["taskId"], timeout=timeout), timeout
            )
        except TimeoutError:
            raise StepError(f"the attempt did not finish within {spec_step.timeout}") from None
        return answer, agent

    async def route(self, spec_step: WorkflowStep, step: dict[str, Any], content: str,
                    variables: dict[str, Any]) -> str:
        route = spec_step.route
        assert route is not None
        if route.cases:
            for case in route.cases:
                try:
                    if evaluate_condition(case.when, {**variables, "content": content}):
                        return case.agent
                except ExpressionError as error:
                    raise StepError(str(error), retryable=False) from None
            if route.default:
                return route.default
            raise StepError("no route case matched and the route has no default", retryable=False)
        assert route.router is not None
        choices = list(route.choices or [])
        answer = await self.call(route.router, router_prompt(content, choices),
                                 message_id=f"{step['taskId']}-router", timeout=None)
        choice = parse_choice(answer.text, choices)
        if choice is None:
            raise StepError(f"router {route.router} answered {answer.text[:200]!r}, which is not "
                            f"one of {', '.join(choices)}")
        return choice

    async def call(self, agent: str, message: str, *, message_id: str,
                   timeout: float | None) -> Answer:
        while True:
            try:
                url = await self.engine.resolver.resolve(self.namespace, agent)
                break
            except AgentNotReady as error:  # wait for it (the run's deadline bounds the wait)
                log.info("run %s/%s waits: %s", self.namespace, self.name, error)
                await asyncio.sleep(AGENT_WAIT_SECONDS)
        return await self.engine.caller(url, agent, message, timeout=timeout or 3600.0,
                                        message_id=message_id)

    async def record_success(self, spec_step: WorkflowStep, step: dict[str, Any], agent: str,
                             answer: Answer) -> None:
        name = spec_step.name
        text, cut = bound_output(answer.text)
        self.outputs[name] = answer.text
        if cut:
            self.large[name] = answer.text
            await self.save_large_outputs()
        usage = dict(step.get("usage") or {})
        for key, value in (answer.usage or {}).items():
            usage[key] = int(usage.get(key) or 0) + int(value)
        step.update(phase="Succeeded", output=text, error=None, finishedAt=now_rfc3339(),
                    outputRef={"configMap": self.outputs_configmap, "key": name} if cut else None,
                    usage=usage or None)
        if spec_step.loop is not None:
            self.decide_loop(spec_step, step)
        await self.flush()

    def decide_loop(self, spec_step: WorkflowStep, step: dict[str, Any]) -> None:
        """After a loop step's iteration: finish, or send its group round again. Done before the
        status is written, so a restart never loses the decision."""
        loop = spec_step.loop
        assert loop is not None
        iterations = int(step.get("iterations") or 0) + 1
        step["iterations"] = iterations
        try:
            done = evaluate_condition(loop.until, self.variables())
        except ExpressionError as error:
            step.update(phase="Failed", error=str(error))
            return
        if done:
            return
        if iterations >= loop.max_iterations:
            return
        group = loop_group(self.spec, spec_step)
        self.steps = reset_for_iteration(self.steps, group)

    async def save_large_outputs(self) -> None:
        manifest = {
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {
                "name": self.outputs_configmap, "namespace": self.namespace,
                "labels": {"app.kubernetes.io/managed-by": "kagent", "kagent.dev/workflowrun": self.name[:63]},
                "ownerReferences": [{"apiVersion": "kagent.dev/v1alpha1", "kind": "WorkflowRun",
                                     "name": self.name, "uid": self.uid, "controller": True}],
            },
            "data": dict(self.large),
        }
        await apply(self.engine.client, manifest)

    # --- status -----------------------------------------------------------------------------

    def status_body(self) -> dict[str, Any]:
        steps = [{k: v for k, v in s.items() if v is not None} for s in self.steps]
        body = {**self.status, "steps": steps, "usage": sum_usage(steps)}
        started = _parse_time(body.get("startedAt"))
        finished = _parse_time(body.get("finishedAt")) or time.time()
        if started is not None:
            body["duration"] = format_duration(finished - started)
        return body

    async def flush(self) -> None:
        """Write the whole status (one writer per run, so no resourceVersion is needed)."""
        async with self.lock:
            body = self.status_body()
            await self.engine.patch_status(self.namespace, self.name, body)

    async def finish(self, phase: str, reason: str, message: str,
                     output: dict[str, Any] | None = None) -> None:
        finished = now_rfc3339()
        self.status.update(phase=phase, reason=reason, message=message, finishedAt=finished)
        for step in self.steps:
            if step.get("phase", "Pending") == "Pending":  # never started: it will not run now
                step.update(phase="Skipped", error=f"not run: the run ended ({reason})",
                            finishedAt=finished)
        if output is not None:
            self.status["output"] = output
        await self.flush()
        outcome = "succeeded" if phase == "Succeeded" else reason
        metrics.RUNS.labels(self.workflow, phase, reason).inc()
        started = _parse_time(self.status.get("startedAt"))
        if started is not None:
            metrics.RUN_DURATION.labels(self.workflow, outcome).observe(max(time.time() - started, 0))
        await self.engine.post(self.run, "Normal" if phase == "Succeeded" else "Warning", reason, message)

    async def finish_stopped(self, reason: str, message: str) -> None:
        self.mark_running_failed(f"stopped: {message}")
        await self.finish("Failed", reason, message)

    async def finish_succeeded(self) -> None:
        variables = self.variables()
        try:
            if self.spec.output:
                output = {key: render_template(text, variables) for key, text in self.spec.output.items()}
            else:
                last = [s["name"] for s in self.steps if s.get("phase") == "Succeeded"]
                output = {"result": self.outputs.get(last[-1], "")} if last else {}
        except ExpressionError as error:
            await self.finish("Failed", "OutputFailed", str(error))
            return
        bounded: dict[str, Any] = {}
        for key, value in output.items():
            text, cut = bound_output(value)
            bounded[key] = text
            if cut:
                self.large[f"output.{key}"] = value
        if len(bounded) != len(output) or any(f"output.{k}" in self.large for k in output):
            await self.save_large_outputs()
        await self.finish("Succeeded", "Succeeded", "all steps finished", bounded)


class WorkflowEngine:
    """Admission and the run tasks of the current leader."""

    def __init__(self, client: AsyncClient, resolver: AgentResolver,
                 caller: AgentCaller = a2a_caller,
                 on_change: Callable[[str, str], None] | None = None,
                 record_dependencies: Callable[[RunKey, set[tuple[str, str, str]]], None] | None = None,
                 tracer_provider: trace.TracerProvider | None = None,
                 requeue_run: Callable[[str, str], None] | None = None) -> None:
        from kagent.workflow.tracing import controller_tracer_provider

        self.tracer = (tracer_provider or controller_tracer_provider()).get_tracer("kagent.workflow")
        self.client = client
        self.resolver = resolver
        self.caller = caller
        self.on_change = on_change or (lambda namespace, workflow: None)
        self.record_dependencies = record_dependencies or (lambda key, deps: None)
        self.requeue_run = requeue_run or (lambda namespace, name: None)
        self.executors: dict[RunKey, RunExecutor] = {}
        self._admission: dict[tuple[str, str], asyncio.Lock] = {}

    @property
    def run_type(self) -> Any:
        return KAGENT_RESOURCES["WorkflowRun"]

    # --- cluster access ---------------------------------------------------------------------

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return (await self.client.get(KAGENT_RESOURCES[kind], name, namespace=namespace)).to_dict()
        except ApiError as error:
            if is_not_found(error):
                return None
            raise

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        for attempt in range(6):
            try:
                await self.client.patch(self.run_type.Status, name, {"status": status},
                                        namespace=namespace, patch_type=PatchType.MERGE)
                return
            except ApiError as error:
                if is_not_found(error):
                    raise RunGone(f"WorkflowRun {namespace}/{name} no longer exists") from None
                if attempt == 5:
                    raise
            except Exception:  # a dropped connection: the write is retried, as it is idempotent
                if attempt == 5:
                    raise
            await asyncio.sleep(0.2 * 2**attempt)

    async def post(self, run: dict[str, Any], type_: str, reason: str, message: str) -> None:
        await post_event(self.client, run, type_, reason, message)

    # --- reconcile --------------------------------------------------------------------------

    def forget(self, namespace: str, name: str) -> None:
        """The run was deleted: stop its steps without writing anything."""
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

    async def reconcile(self, namespace: str, name: str) -> float | None:
        """Bring one run forward; returns seconds after which to look again."""
        key = (namespace, name)
        run = await self.get("WorkflowRun", namespace, name)
        if run is None:
            self.forget(namespace, name)
            return None
        status = run.get("status") or {}
        phase = status.get("phase")
        workflow_name = run["spec"]["workflowRef"]["name"]
        executor = self.executors.get(key)
        if executor is not None and executor.task is not None and executor.task.done():
            self.executors.pop(key, None)
            self.on_change(namespace, workflow_name)
            executor = None
        if phase in FINISHED:
            return await self.collect_garbage(run)
        if executor is not None:
            if run["spec"].get("cancel"):
                executor.stop("Cancelled", "the run was cancelled")
            return None
        workflow = await self.get("Workflow", namespace, workflow_name)
        if workflow is None:
            message = f'Workflow "{workflow_name}" does not exist'
            if phase == "Running":  # deleted while the run was under way: nothing to resume
                await self.end(run, "WorkflowNotFound", message)
                return None
            await self.set_pending(run, "WorkflowNotFound", message)
            return 10.0
        try:
            spec = WorkflowSpec.model_validate(workflow["spec"])
            plan(spec)
        except (ValueError, PlanError) as error:
            await self.end(run, "InvalidWorkflow", str(error))
            return None
        if run["spec"].get("cancel"):
            await self.end(run, "Cancelled", "the run was cancelled")
            return None
        deadline = run_deadline(run, spec)
        if deadline is not None and time.time() >= deadline:
            await self.end(run, "Timeout", f"the run did not finish within {spec.timeout}")
            return None
        if phase == "Running":  # admitted by an earlier leader: resume
            self.start(run, spec)
            return None
        agents = workflow_agents(spec)
        self.record_dependencies(key, {("Agent", namespace, a) for a in agents}
                                 | {("Workflow", namespace, workflow_name)})
        for agent in agents:
            try:
                await self.resolver.resolve(namespace, agent)
            except AgentNotReady as error:
                await self.set_pending(run, "WaitingForAgent", str(error))
                return self._recheck(deadline, AGENT_WAIT_SECONDS * 2)
        return await self.admit(run, spec, workflow, deadline)

    def _recheck(self, deadline: float | None, every: float) -> float:
        if deadline is None:
            return every
        return max(min(every, deadline - time.time()), 0.1)

    async def admit(self, run: dict[str, Any], spec: WorkflowSpec, workflow: dict[str, Any],
                    deadline: float | None) -> float | None:
        namespace, name = run["metadata"]["namespace"], run["metadata"]["name"]
        workflow_name = workflow["metadata"]["name"]
        lock = self._admission.setdefault((namespace, workflow_name), asyncio.Lock())
        async with lock:
            if spec.concurrency is None:
                self.start_admitted(run, spec, workflow)
                await self.mark_running(run, workflow)
                return None
            runs = await self.runs_of(namespace, workflow_name)
            running = [(r["metadata"]["creationTimestamp"], r["metadata"]["name"]) for r in runs
                       if r["metadata"]["name"] != name and (
                           (r.get("status") or {}).get("phase") == "Running"
                           or (namespace, r["metadata"]["name"]) in self.executors)]
            pending = [(r["metadata"]["creationTimestamp"], r["metadata"]["name"]) for r in runs
                       if (r.get("status") or {}).get("phase") in (None, "Pending")
                       and not r["spec"].get("cancel")
                       and (namespace, r["metadata"]["name"]) not in self.executors]
            decision = admit(name, spec.concurrency.limit, spec.concurrency.policy, running, pending)
            if decision.action == "wait":
                await self.set_pending(run, "Queued", f"waiting for one of {len(running)} running "
                                       f"runs to finish (limit {spec.concurrency.limit})")
                return self._recheck(deadline, 30.0)
            if decision.action == "reject":
                await self.end(run, "ConcurrencyLimit", f"{len(running)} runs are already running "
                               f"(limit {spec.concurrency.limit})")
                return None
            if decision.action == "replace" and decision.replace:
                await self.replace(namespace, decision.replace, name)
            self.start_admitted(run, spec, workflow)
            await self.mark_running(run, workflow)
        self.on_change(namespace, workflow_name)
        return None

    async def replace(self, namespace: str, old: str, new: str) -> None:
        message = f"replaced by run {new} (concurrency policy replace)"
        executor = self.executors.get((namespace, old))
        if executor is not None and executor.task is not None and not executor.task.done():
            executor.stop("Replaced", message)
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(executor.task), 10)
            return
        run = await self.get("WorkflowRun", namespace, old)
        if run is not None:
            await self.end(run, "Replaced", message)

    async def runs_of(self, namespace: str, workflow: str) -> list[dict[str, Any]]:
        runs = []
        async for obj in self.client.list(self.run_type, namespace=namespace):
            raw = obj.to_dict()
            if raw["spec"]["workflowRef"]["name"] == workflow:
                runs.append(raw)
        return runs

    def start_admitted(self, run: dict[str, Any], spec: WorkflowSpec, workflow: dict[str, Any]) -> None:
        status = dict(run.get("status") or {})
        status.update(phase="Running", reason="Running", message="the run is executing",
                      startedAt=status.get("startedAt") or now_rfc3339(),
                      workflowGeneration=workflow["metadata"].get("generation"),
                      observedGeneration=run["metadata"].get("generation"))
        run = {**run, "status": status}
        self.start(run, spec, start_task=False)

    async def mark_running(self, run: dict[str, Any], workflow: dict[str, Any]) -> None:
        """Write the admission (phase Running) before any step starts, then start the task."""
        key = (run["metadata"]["namespace"], run["metadata"]["name"])
        executor = self.executors[key]
        await executor.flush()
        metrics.RUNS_STARTED.labels(executor.workflow).inc()
        await self.post(run, "Normal", "Started", f"run of Workflow {executor.workflow} started")
        executor.start()

    def start(self, run: dict[str, Any], spec: WorkflowSpec, start_task: bool = True) -> None:
        key = (run["metadata"]["namespace"], run["metadata"]["name"])
        if key in self.executors:
            return
        executor = RunExecutor(self, run, spec)
        self.executors[key] = executor
        if start_task:
            executor.start()

    async def set_pending(self, run: dict[str, Any], reason: str, message: str) -> None:
        status = run.get("status") or {}
        if (status.get("phase"), status.get("reason"), status.get("message")) == ("Pending", reason, message):
            return
        await self.patch_status(run["metadata"]["namespace"], run["metadata"]["name"],
                                {"phase": "Pending", "reason": reason, "message": message})
        if status.get("reason") != reason:
            await self.post(run, "Normal", reason, message)
        self.on_change(run["metadata"]["namespace"], run["spec"]["workflowRef"]["name"])

    async def end(self, run: dict[str, Any], reason: str, message: str) -> None:
        """Fail a run that has no task (never started, or its task is gone)."""
        status = dict(run.get("status") or {})
        steps = [
            {**s, "phase": "Failed", "error": f"stopped: {message}", "finishedAt": now_rfc3339()}
            if s.get("phase") == "Running" else s
            for s in status.get("steps") or []
        ]
        patch = {"phase": "Failed", "reason": reason, "message": message, "finishedAt": now_rfc3339()}
        if steps:
            patch["steps"] = steps
        await self.patch_status(run["metadata"]["namespace"], run["metadata"]["name"], patch)
        workflow = run["spec"]["workflowRef"]["name"]
        metrics.RUNS.labels(workflow, "Failed", reason).inc()
        await self.post(run, "Warning", reason, message)
        self.on_change(run["metadata"]["namespace"], workflow)

    async def collect_garbage(self, run: dict[str, Any]) -> float | None:
        """Delete a finished run ``ttlSecondsAfterFinished`` after it finished."""
        namespace = run["metadata"]["namespace"]
        workflow = await self.get("Workflow", namespace, run["spec"]["workflowRef"]["name"])
        ttl = ((workflow or {}).get("spec") or {}).get("ttlSecondsAfterFinished")
        finished = _parse_time((run.get("status") or {}).get("finishedAt"))
        if ttl is None or finished is None:
            return None
        left = finished + ttl - time.time()
        if left > 0:
            return left + 0.5
        try:
            await self.client.delete(self.run_type, run["metadata"]["name"], namespace=namespace)
        except ApiError as error:
            if not is_not_found(error):
                raise
        return None

    # --- Workflow status --------------------------------------------------------------------

    async def reconcile_workflow(self, namespace: str, name: str) -> list[str]:
        """Count the Workflow's running and pending runs into its status; returns the names of
        its pending runs (to look at again: a slot may have freed up, or it now exists)."""
        workflow = await self.get("Workflow", namespace, name)
        if workflow is None:
            return []
        runs = await self.runs_of(namespace, name)
        phases = [(r.get("status") or {}).get("phase") for r in runs]
        pending = [r["metadata"]["name"] for r, p in zip(runs, phases, strict=True) if p in (None, "Pending")]
        status = workflow.get("status") or {}
        accepted = ("True", "Valid", "the workflow is valid")
        try:
            plan(WorkflowSpec.model_validate(workflow["spec"]))
        except (ValueError, PlanError) as error:
            accepted = ("False", "Invalid", str(error))
        conditions = [c for c in status.get("conditions") or [] if c.get("type") != "Accepted"]
        old = next((c for c in status.get("conditions") or [] if c.get("type") == "Accepted"), None)
        generation = workflow["metadata"].get("generation")
        if old and (old.get("status"), old.get("reason"), old.get("message"),
                    old.get("observedGeneration")) == (*accepted, generation):
            conditions.append(old)
        else:
            conditions.append({"type": "Accepted", "status": accepted[0], "reason": accepted[1],
                               "message": accepted[2], "observedGeneration": generation,
                               "lastTransitionTime": now_rfc3339()})
        wanted = {"observedGeneration": generation, "running": phases.count("Running"),
                  "pending": len(pending), "conditions": conditions}
        metrics.QUEUE_DEPTH.labels(namespace, name).set(len(pending))
        if any(status.get(k) != v for k, v in wanted.items() if k != "conditions") or old is None or (
                old not in conditions):
            await self.client.patch(KAGENT_RESOURCES["Workflow"].Status, name, {"status": wanted},
                                    namespace=namespace, patch_type=PatchType.MERGE)
        return pending

