"""The run executor against an in-memory status store and scripted agents: resuming from a
recorded status, idempotency keys, trace propagation, failures, retries and timeouts."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from opentelemetry import propagate
from opentelemetry.sdk.trace import TracerProvider

from kagent.api.workflow import WorkflowSpec
from kagent.workflow.engine import Answer, RunExecutor, WorkflowEngine


class Agents:
    """Scripted agents: ``replies[agent]`` is a function of the message (or an exception)."""

    def __init__(self, replies: dict[str, Any]) -> None:
        self.replies = replies
        self.calls: list[dict[str, Any]] = []

    async def __call__(self, url: str, agent: str, message: str, *, timeout: float,
                       message_id: str) -> Answer:
        headers: dict[str, str] = {}
        propagate.inject(headers)
        self.calls.append({"agent": agent, "message": message, "id": message_id,
                           "traceparent": headers.get("traceparent")})
        reply = self.replies[agent]
        if isinstance(reply, Exception):
            raise reply
        if asyncio.iscoroutinefunction(reply):
            return Answer(await reply(message))
        return Answer(reply(message))


class Resolver:
    async def resolve(self, namespace: str, name: str) -> str:
        return f"http://{name}"


class MemoryEngine(WorkflowEngine):
    def __init__(self, agents: Agents) -> None:
        super().__init__(client=None, resolver=Resolver(), caller=agents,  # type: ignore[arg-type]
                         tracer_provider=TracerProvider())
        self.writes: list[dict[str, Any]] = []

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.writes.append(status)

    async def post(self, run: dict[str, Any], type_: str, reason: str, message: str) -> None:
        pass

    @property
    def status(self) -> dict[str, Any]:
        return self.writes[-1]


def run_of(status: dict[str, Any] | None = None, **inputs: Any) -> dict[str, Any]:
    return {"metadata": {"namespace": "ns", "name": "r", "uid": "uid",
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"workflowRef": {"name": "wf"}, "input": inputs},
            "status": status or {"phase": "Running", "startedAt": "2026-01-01T00:00:00Z"}}


async def execute(spec: dict[str, Any], agents: Agents, run: dict[str, Any]) -> MemoryEngine:
    engine = MemoryEngine(agents)
    await RunExecutor(engine, run, WorkflowSpec.model_validate(spec)).main()
    return engine


PIPELINE = {"steps": [{"name": "research", "agent": "researcher"},
                      {"name": "analyze", "agent": "analyst"},
                      {"name": "write", "agent": "writer"}]}
ECHO = {"researcher": lambda m: f"F({m})", "analyst": lambda m: f"A({m})",
        "writer": lambda m: f"W({m})"}


def steps(engine: MemoryEngine) -> dict[str, dict[str, Any]]:
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

    engine = MemoryEngine(Agents({"slow": slow}))
    executor = RunExecutor(engine, run_of(), WorkflowSpec.model_validate(
        {"steps": [{"name": "a", "agent": "slow"}]}))
    executor.start()
    await asyncio.wait_for(started.wait(), 5)
    executor.stop("Cancelled", "the run was cancelled")
    assert executor.task is not None
    await asyncio.wait_for(executor.task, 5)
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
    # every write after a non-final review already holds the reset group: nothing to lose
    after_review = [w for w in engine.writes
                    if any(s["name"] == "review" and s.get("iterations") == 1 for s in w["steps"])]
    assert after_review[0]["steps"][0]["phase"] == "Pending"


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


async def test_a_deleted_run_stops_its_steps_without_writing() -> None:
    started = asyncio.Event()

    async def slow(message: str) -> str:
        started.set()
        await asyncio.sleep(30)
        return "never"

    engine = MemoryEngine(Agents({"slow": slow}))
    run = run_of()
    engine.start(run, WorkflowSpec.model_validate({"steps": [{"name": "a", "agent": "slow"}]}))
    executor = engine.executors[("ns", "r")]
    await asyncio.wait_for(started.wait(), 5)
    writes = len(engine.writes)
    engine.forget("ns", "r")
    assert executor.task is not None
    await asyncio.gather(executor.task, return_exceptions=True)
    assert executor.task.cancelled() and len(engine.writes) == writes
    assert not engine.executors
