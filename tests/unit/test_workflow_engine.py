"""The run executor against an in-memory status store and scripted agents: resuming from a
recorded status, idempotency keys, trace propagation, failures, retries and timeouts."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from opentelemetry import propagate
from opentelemetry.sdk.trace import TracerProvider

from kagent.api.workflow import WorkflowRun, WorkflowRunStatus, WorkflowStatus
from kagent.workflow.engine import WorkflowEngine
from kagent.workflow.executor import Answer, RunExecutor, RunServices
from kagent.workflow.plan import plan_workflow
from kagent.workflow.store import RunSummary, merge_patch


class Agents:
    """Scripted agents: ``replies[agent]`` is a function of the message (or an exception)."""

    def __init__(self, replies: dict[str, Any]) -> None:
        self.replies = replies
        self.calls: list[dict[str, Any]] = []

    async def __call__(self, url: str, agent: str, message: str, *, timeout: float,
                       message_id: str, headers: dict[str, str] | None = None) -> Answer:
        trace: dict[str, str] = {}
        propagate.inject(trace)
        self.calls.append({"agent": agent, "message": message, "id": message_id,
                           "traceparent": trace.get("traceparent"), "headers": headers})
        reply = self.replies[agent]
        if isinstance(reply, Exception):
            raise reply
        if asyncio.iscoroutinefunction(reply):
            return Answer(await reply(message))
        return Answer(reply(message))


class Resolver:
    async def resolve(self, namespace: str, name: str) -> str:
        return f"http://{name}"


class MemoryStore:
    """The engine's store in memory: every status write is kept as the merge patch the API
    server would get, and applied to the stored run as the API server would."""

    def __init__(self, runs: list[dict[str, Any]] | None = None,
                 workflows: list[dict[str, Any]] | None = None,
                 agents: set[str] | None = None) -> None:
        self.agents = agents
        """The Agents that exist (None: cannot tell, as if all did)."""
        self.runs = {(r["metadata"]["namespace"], r["metadata"]["name"]): r for r in runs or []}
        self.workflows = {(w["metadata"]["namespace"], w["metadata"]["name"]): w
                          for w in workflows or []}
        self.writes: list[dict[str, Any]] = []
        self.events: list[tuple[str, str]] = []
        self.outputs: dict[str, dict[str, str]] = {}
        """The outputs ConfigMaps: their data by name."""

    async def get_run(self, namespace: str, name: str) -> WorkflowRun | None:
        raw = self.runs.get((namespace, name))
        return None if raw is None else WorkflowRun.model_validate(raw)

    async def get_workflow(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.workflows.get((namespace, name))

    async def runs_of(self, namespace: str, workflow: str) -> list[RunSummary]:
        return [RunSummary(r["metadata"]["name"], r["metadata"]["creationTimestamp"],
                           (r.get("status") or {}).get("phase"), bool(r["spec"].get("cancel")))
                for (ns, _), r in self.runs.items()
                if ns == namespace and r["spec"]["workflowRef"]["name"] == workflow]

    async def agent_names(self, namespace: str) -> set[str] | None:
        return None if self.agents is None else set(self.agents)

    async def write_run_status(self, namespace: str, name: str, status: WorkflowRunStatus) -> bool:
        assert isinstance(status, WorkflowRunStatus)
        patch = merge_patch(status)
        await asyncio.sleep(0)  # a write takes a while: other tasks run before it lands
        WorkflowRunStatus.model_validate({k: v for k, v in patch.items() if v is not None})
        self.writes.append(patch)
        run = self.runs.get((namespace, name))
        if run is None:
            return False
        merged = {**(run.get("status") or {}), **patch}
        run["status"] = {k: v for k, v in merged.items() if v is not None}
        return bool(run["spec"].get("cancel"))

    async def write_workflow_status(self, namespace: str, name: str, status: WorkflowStatus) -> str:
        assert isinstance(status, WorkflowStatus)
        workflow = self.workflows[(namespace, name)]
        workflow["status"] = status.to_wire()
        version = str(int(workflow["metadata"].get("resourceVersion") or 0) + 1)
        workflow["metadata"]["resourceVersion"] = version
        return version

    async def post_event(self, run: WorkflowRun, type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason))

    async def save_outputs(self, run: WorkflowRun, configmap: str, outputs: dict[str, str]) -> None:
        self.outputs[configmap] = dict(outputs)

    async def load_outputs(self, run: WorkflowRun) -> dict[str, dict[str, str]]:
        return {name: dict(data) for name, data in self.outputs.items()}

    async def delete_run(self, namespace: str, name: str) -> None:
        self.runs.pop((namespace, name), None)

    @property
    def status(self) -> dict[str, Any]:
        return self.writes[-1]


def services(agents: Agents, store: MemoryStore | None = None) -> RunServices:
    return RunServices(store or MemoryStore(), Resolver(), agents,
                       TracerProvider().get_tracer("test"))


RUNNING = {"phase": "Running", "startedAt": "2026-01-01T00:00:00Z"}


def run_of(status: dict[str, Any] | None = RUNNING, name: str = "r", workflow: str = "wf",
           created: str = "2026-01-01T00:00:00Z", **inputs: Any) -> dict[str, Any]:
    """A run as the API server holds it; ``status=None`` for a new run."""
    run = {"metadata": {"namespace": "ns", "name": name, "uid": "uid" if name == "r" else f"uid-{name}",
                        "creationTimestamp": created},
           "spec": {"workflowRef": {"name": workflow}, "input": inputs}}
    if status is not None:
        run["status"] = dict(status)
    return run


def executor(spec: dict[str, Any], agents: Agents, run: dict[str, Any]) -> RunExecutor:
    return RunExecutor(services(agents), WorkflowRun.model_validate(run), plan_workflow(spec))


async def execute(spec: dict[str, Any], agents: Agents, run: dict[str, Any]) -> MemoryStore:
    runner = executor(spec, agents, run)
    await runner.main()
    store = runner.services.store
    assert isinstance(store, MemoryStore)
    return store


PIPELINE = {"steps": [{"name": "research", "agent": "researcher"},
                      {"name": "analyze", "agent": "analyst"},
                      {"name": "write", "agent": "writer"}]}
ECHO = {"researcher": lambda m: f"F({m})", "analyst": lambda m: f"A({m})",
        "writer": lambda m: f"W({m})"}


def steps(engine: MemoryStore) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in engine.status["steps"]}


async def test_pipeline_runs_in_order_with_one_trace() -> None:
    agents = Agents(ECHO)
    engine = await execute(PIPELINE, agents, run_of(topic="t"))
    assert engine.status["phase"] == "Succeeded"
    assert engine.status["output"] == {"result": "W(A(F(t)))"}
    assert [c["id"] for c in agents.calls] == ["uid-research-1", "uid-analyze-1", "uid-write-1"]
    trace_ids = {c["traceparent"].split("-")[1] for c in agents.calls}
    assert len(trace_ids) == 1 and all(c["traceparent"] for c in agents.calls)


async def test_the_trace_id_is_the_run_uid_so_a_resumed_run_keeps_its_trace() -> None:
    uid = "3f2b8c1e-0a4d-4e6f-9b7a-1c2d3e4f5a6b"
    traces = set()
    for _ in range(2):  # first leader, then a resumed run
        agents = Agents(ECHO)
        run = run_of(topic="t")
        run["metadata"]["uid"] = uid
        await execute(PIPELINE, agents, run)
        traces |= {c["traceparent"].split("-")[1] for c in agents.calls}
    assert traces == {uid.replace("-", "")}


async def test_resume_keeps_finished_steps_and_resends_the_in_flight_one_with_its_key() -> None:
    recorded = {"phase": "Running", "startedAt": "2026-01-01T00:00:00Z", "steps": [
        {"name": "research", "phase": "Succeeded", "attempts": 1, "output": "F(t)",
         "taskId": "uid-research-1"},
        {"name": "analyze", "phase": "Running", "attempts": 1, "taskId": "uid-analyze-1"},
        {"name": "write", "phase": "Pending", "attempts": 0},
    ]}
    agents = Agents(ECHO)
    engine = await execute(PIPELINE, agents, run_of(recorded, topic="t"))
    assert [(c["agent"], c["id"]) for c in agents.calls] == [
        ("analyst", "uid-analyze-1"), ("writer", "uid-write-1")]
    assert steps(engine)["analyze"]["attempts"] == 1
    assert engine.status["output"] == {"result": "W(A(F(t)))"}


async def test_retries_then_fail_fast_cancels_the_other_branch() -> None:
    async def slow(message: str) -> str:
        await asyncio.sleep(30)
        return "never"

    agents = Agents({"bad": RuntimeError("boom"), "slow": slow, "writer": ECHO["writer"]})
    spec = {"steps": [{"name": "a", "agent": "bad", "parallel": True,
                       "retry": {"limit": 2, "backoff": {"duration": "10ms"}}},
                      {"name": "b", "agent": "slow", "parallel": True},
                      {"name": "c", "agent": "writer"}]}
    engine = await asyncio.wait_for(execute(spec, agents, run_of()), 5)
    result = steps(engine)
    assert engine.status["phase"] == "Failed" and engine.status["reason"] == "StepFailed"
    assert result["a"]["attempts"] == 3 and result["a"]["error"] == "boom"
    assert result["b"]["phase"] == "Failed" and "cancelled" in result["b"]["error"]
    assert result["c"]["phase"] == "Skipped" and result["c"]["error"].startswith("not run")


async def test_continue_finishes_independent_branches_and_skips_dependents() -> None:
    agents = Agents({"bad": RuntimeError("boom"), "writer": ECHO["writer"]})
    spec = {"errorHandling": {"strategy": "continue"},
            "steps": [{"name": "a", "agent": "bad"},
                      {"name": "b", "agent": "writer", "dependsOn": ["a"]},
                      {"name": "c", "agent": "writer", "dependsOn": [], "input": "x"}]}
    engine = await execute(spec, agents, run_of())
    result = steps(engine)
    assert engine.status["phase"] == "Failed"
    assert result["b"]["phase"] == "Skipped" and result["c"]["output"] == "W(x)"


async def test_step_timeout_is_a_failed_attempt() -> None:
    async def slow(message: str) -> str:
        await asyncio.sleep(30)
        return "never"

    spec = {"steps": [{"name": "a", "agent": "slow", "timeout": "100ms"}]}
    engine = await asyncio.wait_for(execute(spec, Agents({"slow": slow}), run_of()), 5)
    assert steps(engine)["a"]["phase"] == "Failed"
    assert "did not finish within 100ms" in steps(engine)["a"]["error"]


async def test_run_timeout_fails_with_reason_timeout_and_no_step_running() -> None:
    async def slow(message: str) -> str:
        await asyncio.sleep(30)
        return "never"

    run = run_of()
    from datetime import UTC, datetime
    run["metadata"]["creationTimestamp"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    engine = await asyncio.wait_for(
        execute({"timeout": "1s", "steps": [{"name": "a", "agent": "slow"}]},
                Agents({"slow": slow}), run), 5)
    assert engine.status["reason"] == "Timeout"
    assert all(s["phase"] != "Running" for s in engine.status["steps"])


async def test_cancel_stops_in_flight_steps() -> None:
    started = asyncio.Event()

    async def slow(message: str) -> str:
        started.set()
        await asyncio.sleep(30)
        return "never"

    runner = executor({"steps": [{"name": "a", "agent": "slow"}]}, Agents({"slow": slow}), run_of())
    engine = runner.services.store
    assert isinstance(engine, MemoryStore)
    runner.start()
    await asyncio.wait_for(started.wait(), 5)
    runner.stop("Cancelled", "the run was cancelled")
    assert runner.task is not None
    await asyncio.wait_for(runner.task, 5)
    assert engine.status["reason"] == "Cancelled"
    assert steps(engine)["a"]["phase"] == "Failed"


async def test_loop_decision_is_written_with_the_iteration() -> None:
    reviews = iter(["REVISE", "REVISE", "APPROVED"])
    agents = Agents({"writer": ECHO["writer"], "reviewer": lambda m: next(reviews)})
    spec = {"steps": [{"name": "draft", "agent": "writer", "input": "{{ steps.review.output }}"},
                      {"name": "review", "agent": "reviewer",
                       "loop": {"until": 'steps.review.output == "APPROVED"',
                                "repeatFrom": "draft"}}]}
    engine = await execute(spec, agents, run_of())
    assert steps(engine)["review"]["iterations"] == 3
    assert [c["message"] for c in agents.calls if c["agent"] == "writer"] == ["", "REVISE", "REVISE"]
    # the write that records a non-final review already holds the reset group (and the next
    # iteration's first attempt, in the same write): a restart loses nothing
    after_review = [w for w in engine.writes
                    if any(s["name"] == "review" and s.get("iterations") == 1 for s in w["steps"])]
    draft, review = after_review[0]["steps"]
    assert review["phase"] == "Pending" and review["output"] == "REVISE"
    assert draft["phase"] == "Running" and draft["attempts"] == 2 and draft["taskId"] == "uid-draft-2"


@pytest.mark.parametrize(("answer", "agent"), [("billing", "billing"), ("nonsense", None)])
async def test_router_must_pick_from_its_choices(answer: str, agent: str | None) -> None:
    agents = Agents({"router": lambda m: answer, "billing": lambda m: "B", "support": lambda m: "S"})
    spec = {"steps": [{"name": "a", "input": "help",
                       "route": {"router": "router", "choices": ["billing", "support"]}}]}
    engine = await execute(spec, agents, run_of())
    if agent is None:
        assert steps(engine)["a"]["phase"] == "Failed"
        assert "not one of billing, support" in steps(engine)["a"]["error"]
    else:
        assert steps(engine)["a"]["agent"] == agent and steps(engine)["a"]["output"] == "B"


def workflow_of(spec: dict[str, Any], name: str = "wf") -> dict[str, Any]:
    return {"apiVersion": "kagent.dev/v1alpha1", "kind": "Workflow",
            "metadata": {"namespace": "ns", "name": name, "uid": f"uid-{name}", "generation": 1},
            "spec": spec}


def engine_of(store: MemoryStore, agents: Agents) -> WorkflowEngine:
    return WorkflowEngine(None, Resolver(), agents, store=store, tracer_provider=TracerProvider())


async def test_a_deleted_run_stops_its_steps_without_writing() -> None:
    started = asyncio.Event()

    async def slow(message: str) -> str:
        started.set()
        await asyncio.sleep(30)
        return "never"

    store = MemoryStore([run_of()], [workflow_of({"steps": [{"name": "a", "agent": "slow"}]})])
    engine = engine_of(store, Agents({"slow": slow}))
    assert await engine.reconcile_run("ns", "r") is None  # Running: resumed at once
    runner = engine.runs.executors[("ns", "r")]
    await asyncio.wait_for(started.wait(), 5)
    writes = len(store.writes)
    engine.forget("ns", "r")
    assert runner.task is not None
    await asyncio.gather(runner.task, return_exceptions=True)
    assert runner.task.cancelled() and len(store.writes) == writes
    assert not engine.runs.executors


def resume_id(status: dict[str, Any], name: str) -> str:
    """The message id a new leader would send for step ``name`` from this status."""
    step = next(s for s in status["steps"] if s["name"] == name) if status.get("steps") else {}
    if step.get("phase") == "Running" and step.get("taskId"):
        return step["taskId"]
    return f"uid-{name}-{int(step.get('attempts') or 0) + 1}"


async def test_every_call_is_the_one_a_new_leader_would_send_and_transitions_share_writes() -> None:
    """Whatever status has been written when a call goes out, a leader resuming from it sends
    the same message id (so the agent answers once); and a finished step is written together
    with the step it starts: a 5-step pipeline costs one write at admission, one per step
    boundary and one at the end."""
    store = MemoryStore([run_of(None, item="x")],
                        [workflow_of({"steps": [{"name": f"s{i}", "agent": "w"} for i in range(5)]})])
    resumable: list[bool] = []

    unrecorded: list[str] = []

    async def reply(message: str) -> str:
        call = agents.calls[-1]
        name = call["id"].split("-")[1]
        status = store.runs[("ns", "r")]["status"]
        resumable.append(resume_id(status, name) == call["id"])
        if status["steps"][int(name[1:])]["phase"] != "Running":
            unrecorded.append(name)  # sent while its record was still on its way
        await asyncio.sleep(0.001)
        return f"done {name}"

    agents = Agents({"w": reply})
    engine = engine_of(store, agents)
    assert await engine.reconcile_run("ns", "r") is None  # admitted
    runner = engine.runs.executors[("ns", "r")]
    assert runner.task is not None
    await asyncio.wait_for(runner.task, 5)
    status = store.runs[("ns", "r")]["status"]
    assert status["phase"] == "Succeeded" and status["output"] == {"result": "done s4"}
    assert resumable == [True] * 5 and unrecorded  # the case that matters did happen
    assert [c["id"] for c in agents.calls] == [f"uid-s{i}-1" for i in range(5)]
    assert len(store.writes) == 1 + 4 + 1
    assert store.writes[0]["phase"] == "Running" and store.writes[0]["steps"][0]["taskId"] == "uid-s0-1"
    assert store.events == [("Normal", "Started"), ("Normal", "Succeeded")]


async def test_a_retry_is_recorded_before_it_is_sent() -> None:
    outcomes = iter([RuntimeError("flaky"), "fine"])
    recorded: list[str] = []

    def reply(message: str) -> str:
        recorded.append(resume_id(store.runs[("ns", "r")]["status"], "a"))
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    store = MemoryStore([run_of(None)], [workflow_of(
        {"steps": [{"name": "a", "agent": "w", "retry": {"limit": 1, "backoff": {"duration": "1ms"}}}]})])
    agents = Agents({"w": reply})
    engine = engine_of(store, agents)
    await engine.reconcile_run("ns", "r")
    runner = engine.runs.executors[("ns", "r")]
    assert runner.task is not None
    await asyncio.wait_for(runner.task, 5)
    assert [c["id"] for c in agents.calls] == ["uid-a-1", "uid-a-2"] == recorded
    assert steps(store)["a"]["attempts"] == 2 and steps(store)["a"]["phase"] == "Succeeded"
