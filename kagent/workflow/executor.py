"""Executing one admitted WorkflowRun: scheduling its steps, their attempts and retries, routing,
loops, and the outputs — one asyncio task per run, owned by the leader.

The run's status is the only record. It is written (one writer per run) whenever something
happened that a new leader must not lose, and the writes are combined where that loses nothing:
a step that finished and the steps that start because of it go out in one write. A new leader
resumes a run exactly: Succeeded and Skipped steps are kept, a Running step is sent again with
its recorded ``taskId`` (the A2A message id: the agent answers it once), Pending steps start when
ready.

An attempt's ``taskId`` is ``<run uid>-<step>-<attempt number>``, the number counted from the
status, so a first attempt whose record had not reached the status when its leader died is sent
again with the very same id. That lets a step's request go out while its record is being written
instead of after (a status write less on every step's path). A retry is written before it is
sent: its number depends on the failures before it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, Tracer

from kagent.agentclient import (
    FINAL_FAILURES,
    WORKFLOW_HEADER,
    AgentCallError,
    Answer,
    AnswerLost,
    WorkflowClaim,
)
from kagent.api.base import parse_duration
from kagent.api.workflow import (
    OutputReference,
    RunPhase,
    StepStatus,
    WorkflowRun,
    WorkflowRunStatus,
    WorkflowStep,
)
from kagent.kube.conditions import now_rfc3339
from kagent.workflow import metrics
from kagent.workflow.expressions import ExpressionError, Expressions, InlineExpressions
from kagent.workflow.plan import WorkflowPlan
from kagent.workflow.resolver import AgentNotReady, AgentResolver
from kagent.workflow.retry import attempt_started
from kagent.workflow.state import (
    DEPENDENCY_FAILED,
    STEP_OUTPUT_MAX,
    add_usage,
    backoff_delay,
    begin_attempt,
    bound_error,
    bound_output,
    default_input,
    fails_fast,
    loop_group,
    merge_steps,
    output_size,
    parse_choice,
    parse_time,
    readiness,
    reset_for_iteration,
    retry_policy,
    router_prompt,
    run_deadline,
    run_input,
    run_status,
    spill_slot,
    status_output_limit,
    template_variables,
)
from kagent.workflow.store import RunGone, RunStore, outputs_configmap, outputs_slot

log = logging.getLogger("kagent.workflow")

AGENT_WAIT_SECONDS = 3.0
"""How often a step whose agent is not Ready looks again."""
AGENT_WAIT_LIMIT = 600.0
"""How long a run waits for an agent that is missing or not Ready (before it starts, or for
one step) before it fails naming the agent; the Workflow's timeout may end it sooner."""
NO_STEP_TIMEOUT = 3600.0
MAX_RUNNING_STEPS = 32
"""Steps of one run in flight at once; more ready steps wait (Pending) for a slot, so a wide
fan-out does not send hundreds of requests at once to one agent."""


class AgentCaller(Protocol):
    async def __call__(self, url: str, agent: str, message: str, *, timeout: float,
                       message_id: str, headers: dict[str, str] | None = None) -> Answer:
        """``headers``: extra request headers (the step's Workflow, for the agent's Budgets)."""
        ...


class StepError(Exception):
    """A step attempt failed; ``retryable`` is False for mistakes no retry can fix."""

    def __init__(self, message: str, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass
class RunServices:
    """What an executor uses of the world: the store, where agents are and how to call them,
    the tracer its spans go to, where its expressions are evaluated (the controller: worker
    processes) and how long it waits for an agent that is not Ready."""

    store: RunStore
    resolver: AgentResolver
    caller: AgentCaller
    tracer: Tracer
    expressions: Expressions = field(default_factory=InlineExpressions)
    agent_wait: float = AGENT_WAIT_LIMIT


def run_trace_context(uid: str) -> Any:
    """A parent context whose trace id is the run's uid, so the run keeps one trace even when a
    new leader resumes it (and the trace is found from the run: its uid without dashes)."""
    try:
        trace_id = uuid.UUID(uid).int
    except ValueError:
        trace_id = int.from_bytes(hashlib.sha256(uid.encode()).digest()[:16], "big")
    span_id = (trace_id >> 64) or 1
    parent = SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    return trace.set_span_in_context(NonRecordingSpan(parent))


class RunExecutor:
    """Executes one run from whatever its status records."""

    def __init__(self, services: RunServices, run: WorkflowRun, plan: WorkflowPlan,
                 on_exit: Callable[[RunExecutor, bool], None] | None = None,
                 workflow_labels: dict[str, str] | None = None) -> None:
        self.services = services
        self.run = run
        self.plan = plan
        self.spec = plan.spec
        self.namespace = str(run.metadata.namespace)
        self.name = str(run.metadata.name)
        self.uid = run.metadata.uid or self.name
        self.workflow = run.spec.workflow_ref.name
        self.headers = {WORKFLOW_HEADER: WorkflowClaim(self.workflow, workflow_labels or {}).header()}
        """Sent with every call: the agent counts it against Budgets selecting this Workflow."""
        self.input: dict[str, Any] = run_input(self.spec, run.spec.input)
        self.status = (run.status or WorkflowRunStatus()).model_copy(update={"steps": None})
        self.steps = merge_steps(self.spec, run.status.steps if run.status else None)
        self.outputs: dict[str, str] = {s.name: s.output or "" for s in self.steps}
        self.large: dict[str, str] = {}
        """Full texts of outputs cut in the status, by key (step name, or output.<name>)."""
        self.placed: dict[str, int] = {}
        """Which outputs ConfigMap (slot) keeps each of them."""
        self.sizes: dict[str, int] = {}
        """Their sizes in bytes."""
        self.output_limit = status_output_limit(len(self.spec.steps) + max(len(self.spec.output or {}), 1))
        self.lock = asyncio.Lock()
        self.changes = 0
        """Calls of :meth:`flush` so far; ``written``: how many of them the last write carried.
        Flushes that queue behind a write are carried by the next one (a burst of steps
        finishing at once costs two writes, not one each)."""
        self.written = 0
        self.stop_reason: tuple[str, str] | None = None
        self.task: asyncio.Task[None] | None = None
        self.on_exit = on_exit
        self.entered = False
        self.finishing = False
        self.read_at = time.monotonic()
        """When the run was last seen as the cluster has it: read, or answered to a status
        write (see RunLifecycle.reconcile)."""
        self.deadline = run_deadline(attempt_started(run.status) or run.metadata.creation_timestamp,
                                     self.spec.timeout, time.time())

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        self.task = asyncio.create_task(self.main(), name=f"workflowrun-{self.namespace}-{self.name}")
        self.task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        """The task ended: ``on_exit`` hears whether it crashed (then the run is resumed).
        A cancelled task (leadership lost, run deleted) exits silently."""
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:  # e.g. the apiserver unreachable for long: look at the run again
            log.error("run %s/%s stopped unexpectedly: %r; it will be resumed", self.namespace,
                      self.name, error)
        if self.on_exit is not None:
            self.on_exit(self, error is not None)

    def stop(self, reason: str, message: str) -> None:
        """End the run as Failed with ``reason``; in-flight steps are cancelled. A run already
        writing its end keeps it."""
        if self.finishing:
            return
        if self.task is not None and not self.task.done() and self.stop_reason is None:
            self.stop_reason = (reason, message)
            if self.entered:  # else main sees the reason as it starts (a task cancelled
                self.task.cancel()  # before it ran would never get to write it)

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    def step(self, name: str) -> StepStatus:
        return next(s for s in self.steps if s.name == name)

    async def main(self) -> None:
        with self.services.tracer.start_as_current_span(
            "workflow.run", context=run_trace_context(self.uid),
            attributes={"kagent.workflow": self.workflow, "kagent.run": self.name,
                        "k8s.namespace.name": self.namespace},
        ):
            self.entered = True
            try:
                if self.stop_reason is not None:
                    raise asyncio.CancelledError
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
        if not any(s.output_ref for s in self.steps):
            return
        for configmap, data in (await self.services.store.load_outputs(self.run)).items():
            slot = outputs_slot(self.name, configmap)
            if slot is None:
                continue
            for key, text in data.items():
                self.large[key], self.placed[key], self.sizes[key] = text, slot, output_size(text)
        for step in self.steps:
            if step.output_ref and step.output_ref.key in self.large:
                self.outputs[step.name] = self.large[step.output_ref.key]

    # --- scheduling -------------------------------------------------------------------------

    async def schedule(self) -> tuple[list[str], bool]:
        """Settle every Pending step that can be settled now, in memory: skip blocked steps and
        steps whose ``when`` is false, fail steps whose ``when`` cannot be evaluated, and begin
        an attempt of every ready step. Returns the steps begun (to send) and whether anything
        changed (to write)."""
        begun: list[str] = []
        changed = False
        while True:
            ready = readiness(self.plan.deps, self.steps)
            settled = False
            now = now_rfc3339()
            for name in ready.blocked:
                step = self.step(name)
                step.phase, step.error, step.finished_at = "Skipped", DEPENDENCY_FAILED, now
                settled = True
            slots = MAX_RUNNING_STEPS - sum(s.phase == "Running" for s in self.steps)
            for name in ready.ready:
                if slots <= 0:
                    break  # the rest start as running steps finish
                spec_step = self.plan.steps[name]
                step = self.step(name)
                if spec_step.when is not None:
                    try:
                        go = await self.condition(spec_step.when, self.variables())
                    except ExpressionError as error:
                        step.phase, step.error, step.finished_at = "Failed", str(error), now
                        settled = True
                        continue
                    if not go:
                        step.phase, step.error, step.finished_at = "Skipped", None, now
                        self.outputs[name] = ""
                        settled = True
                        continue
                begin_attempt(step, self.uid, now, spec_step.agent)
                begun.append(name)
                slots -= 1
                changed = True
            if not settled:
                return begun, changed
            changed = True  # a settled step may make others ready (or blocked): look again

    async def execute(self) -> None:
        tasks: dict[str, asyncio.Task[bool]] = {}
        try:
            for step in self.steps:
                if step.phase == "Running":  # begun before: send it (again), same id
                    tasks[step.name] = asyncio.create_task(self.run_step(step.name))
            begun, changed = await self.schedule()
            while True:
                for name in begun:  # their requests go out while their record is written
                    tasks[name] = asyncio.create_task(self.run_step(name))
                if changed and tasks:  # else the finish writes it all at once
                    await self.flush()
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
                                              f"step {name} failed: {self.step(name).error}")
                            return
                begun, _ = await self.schedule()
                changed = True  # a step finished
            failed = [s.name for s in self.steps if s.phase == "Failed"]
            if failed:
                await self.finish("Failed", "StepFailed", "failed steps: " + ", ".join(failed))
            else:
                await self.finish_succeeded()
        finally:
            for task in tasks.values():
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks.values(), return_exceptions=True)

    async def cancel_steps(self, tasks: dict[str, asyncio.Task[bool]], why: str) -> None:
        for task in tasks.values():
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
        self.mark_running_failed(why)

    def mark_running_failed(self, why: str) -> None:
        now = now_rfc3339()
        for step in self.steps:
            if step.phase == "Running":
                step.phase, step.error, step.finished_at = "Failed", why, now

    def variables(self) -> dict[str, Any]:
        return template_variables(self.input, self.steps, self.outputs)

    async def condition(self, expression: str, variables: dict[str, Any]) -> bool:
        """Every CEL condition of a run is evaluated here, off the event loop and bounded."""
        return await self.services.expressions.condition(expression, variables)

    async def render(self, template: str, variables: dict[str, Any]) -> str:
        """Every template of a run is rendered here, off the event loop and bounded."""
        return await self.services.expressions.render(template, variables)

    # --- one step ---------------------------------------------------------------------------

    async def run_step(self, name: str) -> bool:
        """Run a begun step (its attempt recorded, in memory at least) with its retries; True
        when it succeeded. The step's final phase is written by the caller, with whatever it
        starts next."""
        spec_step = self.plan.steps[name]
        policy = retry_policy(self.spec, spec_step)
        failures = 0
        with self.services.tracer.start_as_current_span(
                "workflow.step", attributes={"kagent.step": name, "kagent.run": self.name}):
            step = self.step(name)
            if not step.task_id:  # recorded Running by a version that wrote no task id
                begin_attempt(step, self.uid, now_rfc3339(), spec_step.agent)
                await self.flush()
            while True:
                started = time.perf_counter()
                try:
                    answer, agent = await self.attempt(spec_step, step)
                except (asyncio.CancelledError, RunGone):
                    raise
                except Exception as error:  # noqa: BLE001 - a failed agent fails the step, not the engine
                    step = self.step(name)  # a loop may have reset it meanwhile
                    metrics.STEP_DURATION.labels(self.workflow, "failure").observe(time.perf_counter() - started)
                    failures += 1
                    retryable = (not isinstance(error, StepError) or error.retryable) and not (
                        isinstance(error, AgentCallError) and error.code in FINAL_FAILURES)
                    step.error = str(error) or type(error).__name__
                    if retryable and failures <= policy.limit:
                        await self.flush()
                        await asyncio.sleep(backoff_delay(policy, failures))
                        step = self.step(name)
                        if not isinstance(error, AnswerLost):  # else the same message id again:
                            begin_attempt(step, self.uid, now_rfc3339(), spec_step.agent)
                        await self.flush()  # an agent that ran it answers from its record
                        continue
                    step.phase, step.finished_at = "Failed", now_rfc3339()
                    return False
                metrics.STEP_DURATION.labels(self.workflow, "success").observe(time.perf_counter() - started)
                await self.record_success(spec_step, self.step(name), agent, answer)
                return True

    async def attempt(self, spec_step: WorkflowStep, step: StepStatus) -> tuple[Answer, str]:
        variables = self.variables()
        try:
            if spec_step.input is not None:
                content = await self.render(spec_step.input, variables)
            else:
                content = default_input(self.spec, self.plan.deps, spec_step.name, self.input, self.outputs)
        except ExpressionError as error:
            raise StepError(str(error), retryable=False) from None
        timeout = parse_duration(spec_step.timeout).total_seconds() if spec_step.timeout else None
        try:  # the router's call, waiting for agents and the call itself: all in the timeout
            answer, agent = await asyncio.wait_for(
                self.route_and_call(spec_step, step, content, variables, timeout), timeout)
        except TimeoutError:
            raise StepError(f"the attempt did not finish within {spec_step.timeout}") from None
        size = output_size(answer.text)
        if size > STEP_OUTPUT_MAX:
            raise StepError(f"Agent {agent!r} answered {size} bytes; a step's output may have at "
                            f"most {STEP_OUTPUT_MAX} (ask for a shorter answer)", retryable=False)
        return answer, agent

    async def route_and_call(self, spec_step: WorkflowStep, step: StepStatus, content: str,
                             variables: dict[str, Any], timeout: float | None) -> tuple[Answer, str]:
        agent = spec_step.agent or await self.route(spec_step, step, content, variables, timeout)
        if step.agent != agent:  # a routed step: say who runs it while it runs
            step.agent = agent
            await self.flush()
        task_id = step.task_id
        assert task_id is not None
        return await self.call(agent, content, message_id=task_id, timeout=timeout), agent

    async def route(self, spec_step: WorkflowStep, step: StepStatus, content: str,
                    variables: dict[str, Any], timeout: float | None = None) -> str:
        route = spec_step.route
        assert route is not None
        if route.cases:
            for case in route.cases:
                try:
                    if await self.condition(case.when, {**variables, "content": content}):
                        return case.agent
                except ExpressionError as error:
                    raise StepError(str(error), retryable=False) from None
            if route.default:
                return route.default
            raise StepError("no route case matched and the route has no default", retryable=False)
        assert route.router is not None
        choices = list(route.choices or [])
        answer = await self.call(route.router, router_prompt(content, choices),
                                 message_id=f"{step.task_id}-router", timeout=timeout)
        choice = parse_choice(answer.text, choices)
        if choice is None:
            raise StepError(f"router {route.router} answered {answer.text[:200]!r}, which is not "
                            f"one of {', '.join(choices)}")
        return choice

    async def call(self, agent: str, message: str, *, message_id: str,
                   timeout: float | None) -> Answer:
        """Call an agent, waiting (at most ``agent_wait``) while it is missing or not Ready."""
        give_up = time.monotonic() + self.services.agent_wait
        while True:
            try:
                url = await self.services.resolver.resolve(self.namespace, agent)
                break
            except AgentNotReady as error:
                if time.monotonic() >= give_up:
                    raise StepError(f"{error} (waited {self.services.agent_wait:g}s)",
                                    retryable=False) from None
                log.info("run %s/%s waits: %s", self.namespace, self.name, error)
                await asyncio.sleep(min(AGENT_WAIT_SECONDS, max(give_up - time.monotonic(), 0.05)))
        return await self.services.caller(url, agent, message, timeout=timeout or NO_STEP_TIMEOUT,
                                          message_id=message_id, headers=self.headers)

    async def record_success(self, spec_step: WorkflowStep, step: StepStatus, agent: str,
                             answer: Answer) -> None:
        """The answer into the step, in memory (the caller writes it with what it starts next);
        an answer too long for the status goes to the outputs ConfigMap first, so the status
        never points at text that is not stored."""
        name = spec_step.name
        text, cut = bound_output(answer.text, self.output_limit)
        self.outputs[name] = answer.text
        configmap = await self.keep_output(name, answer.text) if cut else None
        step.phase, step.output, step.error, step.finished_at = "Succeeded", text, None, now_rfc3339()
        step.output_ref = OutputReference(config_map=configmap, key=name) if configmap else None
        step.usage = add_usage(step.usage, answer.usage)
        step.model = answer.model or step.model
        if spec_step.loop is not None:
            await self.decide_loop(spec_step, step)

    async def decide_loop(self, spec_step: WorkflowStep, step: StepStatus) -> None:
        """After a loop step's iteration: finish, or send its group round again. Decided before
        the status is written, so a restart never loses the decision."""
        loop = spec_step.loop
        assert loop is not None
        step.iterations = (step.iterations or 0) + 1
        try:
            done = await self.condition(loop.until, self.variables())
        except ExpressionError as error:
            step.phase, step.error = "Failed", str(error)
            return
        if done or step.iterations >= loop.max_iterations:
            return
        self.steps = reset_for_iteration(self.steps, loop_group(self.spec, spec_step))

    # --- status -----------------------------------------------------------------------------

    async def flush(self) -> None:
        """Write the whole status (one writer per run, so no resourceVersion is needed). The
        API server answers with the run as it now is: a cancel asked for meanwhile is seen
        here, at once, by a run that is not finishing anyway."""
        self.changes += 1
        mine = self.changes
        async with self.lock:
            if self.written >= mine:  # a write that began after this call carried it: done
                return
            carried = self.changes
            cancel = await self.services.store.write_run_status(
                self.namespace, self.name, run_status(self.status, self.steps, time.time()))
            self.written = carried
            self.read_at = time.monotonic()  # the answer is the run as it now is: a fresh read
        if cancel and not self.finishing:
            self.stop("Cancelled", "the run was cancelled")

    async def finish(self, phase: RunPhase, reason: str, message: str,
                     output: dict[str, Any] | None = None) -> None:
        self.finishing = True
        finished = now_rfc3339()
        message = bound_error(message)
        self.status.phase, self.status.reason, self.status.message = phase, reason, message
        self.status.finished_at = finished
        for step in self.steps:
            if step.phase == "Pending":  # never started: it will not run now
                step.phase, step.finished_at = "Skipped", finished
                step.error = f"not run: the run ended ({reason})"
        if output is not None:
            self.status.output = output
        await self.flush()
        outcome = "succeeded" if phase == "Succeeded" else reason
        metrics.RUNS.labels(self.workflow, phase, reason).inc()
        started = parse_time(self.status.started_at)
        if started is not None:
            metrics.RUN_DURATION.labels(self.workflow, outcome).observe(max(time.time() - started, 0))
        await self.services.store.post_event(
            self.run, "Normal" if phase == "Succeeded" else "Warning", reason, message)

    async def finish_stopped(self, reason: str, message: str) -> None:
        self.mark_running_failed(f"stopped: {message}")
        await self.finish("Failed", reason, message)

    async def finish_succeeded(self) -> None:
        variables = self.variables()
        try:
            if self.spec.output:
                output = {key: await self.render(text, variables)
                          for key, text in self.spec.output.items()}
            else:
                last = [s.name for s in self.steps if s.phase == "Succeeded"]
                output = {"result": self.outputs.get(last[-1], "")} if last else {}
        except ExpressionError as error:
            await self.finish("Failed", "OutputFailed", str(error))
            return
        too_long = [k for k, v in output.items() if output_size(v) > STEP_OUTPUT_MAX]
        if too_long:
            await self.finish("Failed", "OutputFailed", f"output {too_long[0]} is longer than "
                              f"the {STEP_OUTPUT_MAX} bytes a run's output may have")
            return
        bounded: dict[str, Any] = {}
        for key, value in output.items():
            text, cut = bound_output(value, self.output_limit)
            bounded[key] = text
            if cut:
                await self.keep_output(f"output.{key}", value)
        await self.finish("Succeeded", "Succeeded", "all steps finished", bounded)

    async def keep_output(self, key: str, text: str) -> str:
        """Keep an output's full text in one of the run's outputs ConfigMaps (each under the
        size a ConfigMap may have); the name of the one it went to. Written before the status
        points at it, so the status never names text that is not stored."""
        old = self.placed.get(key)
        size = output_size(text)
        slot = spill_slot(self.placed, self.sizes, key, size)
        self.large[key], self.placed[key], self.sizes[key] = text, slot, size
        for changed in {slot, old} - {None}:
            assert changed is not None
            data = {k: v for k, v in self.large.items() if self.placed[k] == changed}
            await self.services.store.save_outputs(self.run, outputs_configmap(self.name, changed), data)
        return outputs_configmap(self.name, slot)
