"""What a newcomer met and what freezes nothing: input defaults, references checked before a run
pays for a model call, errors in the workflow's words, parallel groups as documented, expressions
bounded and evaluated in worker processes, and a run status that stays under etcd's object limit
whatever the number of steps."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from kagent.api.workflow import WorkflowSpec
from kagent.workflow.bounded import ExpressionWorker
from kagent.workflow.expressions import (
    ExpressionError,
    WorkerExpressions,
    evaluate_condition,
    references,
    render_template,
)
from kagent.workflow.plan import plan
from kagent.workflow.state import (
    CONFIGMAP_OUTPUTS_BUDGET,
    STEP_OUTPUT_MAX,
    bound_output,
    missing_inputs,
    run_input,
    spill_slot,
    status_output_limit,
)
from kagent.workflow.store import outputs_configmap, outputs_slot
from tests.unit.test_workflow_engine import (
    Agents,
    MemoryStore,
    RunExecutor,
    execute,
    run_of,
    services,
    steps,
)
from kagent.api.workflow import WorkflowRun
from kagent.webhook.validate import run_input_errors, validate
from kagent.workflow.plan import plan_workflow

TRIP = {"input": [{"name": "city", "type": "string", "required": True},
                  {"name": "days", "type": "integer", "default": 1}],
        "steps": [{"name": "plan", "agent": "planner", "when": "input.days >= 1",
                   "input": "{{ input.days }} days in {{ input.city }}"}]}


def workflow_doc(spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "kagent.dev/v1alpha1", "kind": "Workflow",
            "metadata": {"name": "trip", "namespace": "n"}, "spec": spec}


def run_doc(run_input: dict[str, Any] | None) -> dict[str, Any]:
    return {"apiVersion": "kagent.dev/v1alpha1", "kind": "WorkflowRun",
            "metadata": {"name": "r", "namespace": "n"},
            "spec": {"workflowRef": {"name": "trip"}, **({"input": run_input} if run_input else {})}}


# --- 16.1: defaults and required inputs -----------------------------------------------------------


def test_defaults_fill_what_the_run_does_not_give() -> None:
    spec = WorkflowSpec.model_validate(TRIP)
    assert run_input(spec, {"city": "Oslo"}) == {"city": "Oslo", "days": 1}
    assert run_input(spec, {"city": "Oslo", "days": 3}) == {"city": "Oslo", "days": 3}
    assert missing_inputs(spec, {"days": 2}) == ["city"]
    assert missing_inputs(spec, {"city": "Oslo"}) == []


async def test_a_run_without_the_defaulted_input_uses_the_default() -> None:
    """The newcomer's run: `--input city=Oslo` with days defaulted to 1 (kubectl-made or
    scheduled runs alike: the engine applies it)."""
    agents = Agents({"planner": lambda m: f"plan[{m}]"})
    store = await execute(TRIP, agents, run_of(city="Oslo"))
    assert store.status["phase"] == "Succeeded", store.status
    assert steps(store)["plan"]["output"] == "plan[1 days in Oslo]"


def test_a_new_run_missing_a_required_input_is_refused_naming_it() -> None:
    (error,) = run_input_errors(run_doc({"days": 2}), workflow_doc(TRIP))
    assert error.field == "spec.input.city"
    assert "requires input city" in error.message
    assert run_input_errors(run_doc({"city": "Oslo"}), workflow_doc(TRIP)) == []


async def test_a_run_missing_a_required_input_fails_at_admission_naming_it() -> None:
    """Made before its Workflow existed (the webhook could not check it): the engine refuses to
    start it, with reason InvalidInput."""
    from tests.unit.test_workflow_engine import Resolver, WorkflowEngine, workflow_of

    store = MemoryStore([run_of(None, days=2)], [workflow_of(TRIP)])
    engine = WorkflowEngine(None, Resolver(), Agents({"planner": lambda m: m}), store=store)
    assert await engine.reconcile_run("ns", "r") is None
    status = store.runs[("ns", "r")]["status"]
    assert status["phase"] == "Failed" and status["reason"] == "InvalidInput"
    assert "requires input city" in status["message"]
    await engine.shutdown()


# --- 16.2: references checked at admission, errors in the workflow's words -----------------------


def fields(spec: dict[str, Any]) -> dict[str, str]:
    return {e.field: e.message for e in validate(workflow_doc(spec))}


def test_every_step_and_input_reference_is_checked_naming_the_field() -> None:
    spec = {
        "input": [{"name": "city"}],
        "steps": [
            {"name": "forecast", "agent": "a", "input": "{{ input.city }}"},
            {"name": "plan", "agent": "b", "input": "{{ steps.forcast.output }}",
             "when": 'steps.forcast.phase == "Succeeded"'},
            {"name": "loop", "agent": "b", "input": "{{ input.cty }}",
             "loop": {"until": 'steps.plan.outptu == ""'}},
            {"name": "route", "input": "x",
             "route": {"cases": [{"when": "steps.nope.output == ''", "agent": "a"}]}},
        ],
        "output": {"report": "{{ steps.writer.output }}"},
    }
    found = fields(spec)
    assert found["spec.steps[1].input"] == "no step named 'forcast' (steps.forcast)"
    assert found["spec.steps[1].when"] == "no step named 'forcast' (steps.forcast)"
    assert found["spec.steps[2].input"].startswith("no input named 'cty' (input.cty; the inputs are: city)")
    assert found["spec.steps[2].loop.until"].startswith("steps.plan.outptu: a step has no field 'outptu'")
    assert found["spec.steps[3].route.cases[0].when"] == "no step named 'nope' (steps.nope)"
    assert found["spec.output.report"] == "no step named 'writer' (steps.writer)"
    # hyphenated names and the documented fields pass
    good = {"steps": [{"name": "analyze-market", "agent": "a", "input": "go"},
                      {"name": "write", "agent": "b",
                       "input": "{{ steps.analyze-market.output }} {{ steps['analyze-market'].phase }}",
                       "when": 'steps.analyze-market.output.contains("x") || steps.analyze-market.iterations > 0'}]}
    assert fields(good) == {}


def test_references_of_conditions_and_templates() -> None:
    assert {str(r) for r in references('steps["a-b"].output.contains("x") && input.days > 1',
                                       condition=True)} == {"steps.a-b", "steps.a-b.output", "input.days"}
    assert {str(r) for r in references("{% if steps.x.phase %}{{ input.y }}{% endif %}",
                                       condition=False)} == {"steps.x", "steps.x.phase", "input.y"}


def test_run_time_errors_speak_kagent_not_python() -> None:
    variables = {"input": {"city": "Oslo"},
                 "steps": {"plan": {"output": "p", "phase": "Succeeded", "agent": "a", "iterations": 0}}}
    with pytest.raises(ExpressionError) as error:
        evaluate_condition("input.days > 1", variables)
    message = str(error.value)
    assert "input.days has no value" in message
    assert "KeyError" not in message and "(" not in message.split("failed: ")[1].split(" (test")[0]
    for text, expected in [("{{ input.days }}", "input.days has no value"),
                           ("{{ steps.forcast.output }}", "there is no step named 'forcast'"),
                           ("{{ steps.plan.outptu }}", "steps.plan has no field 'outptu'")]:
        with pytest.raises(ExpressionError) as error:
            render_template(text, variables)
        assert expected in str(error.value)
        assert "dict object" not in str(error.value)
    # an input called like a dict method is the input
    assert render_template("{{ input.items }}", {"input": {"items": "3"}, "steps": {}}) == "3"


def test_a_step_needs_an_agent_or_a_route_and_a_first_step_needs_something_to_send() -> None:
    found = fields({"steps": [{"name": "a", "input": "x"}]})
    assert found == {"spec.steps[0]": "give one of agent or route"}
    found = fields({"steps": [{"name": "a", "agent": "x"}, {"name": "b", "agent": "y"}]})
    assert list(found) == ["spec.steps[0].input"]
    assert "declares no inputs" in found["spec.steps[0].input"]
    assert fields({"input": [{"name": "topic"}], "steps": [{"name": "a", "agent": "x"}]}) == {}


# --- 11.1: bounded expressions --------------------------------------------------------------------


def test_the_freezing_condition_and_the_huge_template_are_refused_at_admission() -> None:
    freezing = "[1,2,3,4,5,6,7,8].all(a, [1,2,3,4,5,6,7,8].all(b, [1,2,3,4,5,6,7,8].all(c, " \
               "[1,2,3,4,5,6,7,8].all(d, [1,2,3,4,5,6,7,8].all(e, a > -1)))))"
    found = fields({"input": [{"name": "x"}],
                    "steps": [{"name": "a", "agent": "x", "when": freezing,
                               "input": '{{ "ab" * 50000000 }}'}],
                    "output": {"big": "{{ 10 ** 100000 }}"}})
    assert "over the budget of 10000" in found["spec.steps[0].when"]
    assert "over the limit" in found["spec.steps[0].input"]
    assert "power above 64" in found["spec.output.big"]


SLIPS_PAST = ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
              "{{ input.topic }}")


async def test_an_expression_over_budget_at_run_time_fails_its_step_while_the_loop_stays_free() -> None:
    """Past the static checks (nested loops in a template): evaluated in a worker process,
    stopped at its time limit, the step fails with a clear reason; the event loop kept
    ticking meanwhile, and the next run's expressions still work."""
    expressions = WorkerExpressions(ExpressionWorker(("kagent.workflow.expressions",), size=1,
                                                     seconds=1.0))
    spec = {"input": [{"name": "topic"}],
            "steps": [{"name": "slow", "agent": "a", "input": SLIPS_PAST},
                      {"name": "after", "agent": "a", "input": "{{ input.topic }}"}]}
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.02)
            ticks += 1

    ticker = asyncio.create_task(tick())
    try:
        agents = Agents({"a": lambda m: f"ok[{m}]"})
        runner = RunExecutor(services(agents), WorkflowRun.model_validate(run_of(topic="t")),
                             plan_workflow(spec))
        runner.services.expressions = expressions
        await runner.main()
        status = runner.services.store.status  # type: ignore[attr-defined]
        slow = next(s for s in status["steps"] if s["name"] == "slow")
        assert status["phase"] == "Failed"
        assert slow["phase"] == "Failed" and "did not finish within 1s" in slow["error"]
        assert agents.calls == []  # nothing was paid for
        assert ticks > 20
        good = {"input": [{"name": "topic"}], "steps": [{"name": "s", "agent": "a",
                                                         "input": "{{ input.topic }}"}]}
        runner = RunExecutor(services(agents), WorkflowRun.model_validate(run_of(topic="t")),
                             plan_workflow(good))
        runner.services.expressions = expressions
        await runner.main()
        assert runner.services.store.status["phase"] == "Succeeded"  # type: ignore[attr-defined]
    finally:
        ticker.cancel()
        expressions.close()


# --- 16.4: parallel groups, one pattern each ------------------------------------------------------


def deps(*step_list: dict[str, Any]) -> dict[str, list[str]]:
    return plan(WorkflowSpec.model_validate({"steps": [{"agent": "a", **s} for s in step_list]}))


def test_parallel_patterns_are_what_the_field_doc_says() -> None:
    p = {"parallel": True}
    # a group opening the workflow starts at once; the next step waits for all of it
    assert deps({"name": "a", **p}, {"name": "b", **p}, {"name": "c"}) == {"a": [], "b": [], "c": ["a", "b"]}
    # a group after a plain step starts after it
    assert deps({"name": "a"}, {"name": "b", **p}, {"name": "c", **p}, {"name": "d"}) == {
        "a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}
    # a single parallel step after a plain one simply follows it
    assert deps({"name": "a"}, {"name": "b", **p}, {"name": "c"}) == {"a": [], "b": ["a"], "c": ["b"]}
    # a plain step closes a group; the next group waits for it
    assert deps({"name": "a", **p}, {"name": "b", **p}, {"name": "c"}, {"name": "d", **p},
                {"name": "e", **p}) == {"a": [], "b": [], "c": ["a", "b"], "d": ["c"], "e": ["c"]}
    # a step with dependsOn is never part of a group
    assert deps({"name": "a", **p}, {"name": "b", **p, "dependsOn": []}, {"name": "c", **p}) == {
        "a": [], "b": [], "c": ["b"]}


async def test_a_failed_step_skips_the_group_after_it_but_not_its_own_group() -> None:
    agents = Agents({"bad": RuntimeError("down"), "ok": lambda m: "ok"})
    before = {"errorHandling": {"strategy": "continue"}, "input": [{"name": "t"}],
              "steps": [{"name": "a", "agent": "bad"},
                        {"name": "b", "agent": "ok", "parallel": True},
                        {"name": "c", "agent": "ok", "parallel": True}]}
    found = steps(await execute(before, agents, run_of(t="x")))
    assert found["a"]["phase"] == "Failed"
    assert found["b"]["phase"] == found["c"]["phase"] == "Skipped"
    inside = {"errorHandling": {"strategy": "continue"}, "input": [{"name": "t"}],
              "steps": [{"name": "a", "agent": "bad", "parallel": True},
                        {"name": "b", "agent": "ok", "parallel": True},
                        {"name": "c", "agent": "ok"}]}
    found = steps(await execute(inside, agents, run_of(t="x")))
    assert found["a"]["phase"] == "Failed" and found["b"]["phase"] == "Succeeded"
    assert found["c"]["phase"] == "Skipped"


# --- 11.5: a status under etcd's limit whatever the number of steps -------------------------------


def test_status_outputs_are_cut_in_bytes_never_inside_a_character() -> None:
    text = "😀" * 2000  # 8000 bytes
    cut, was_cut = bound_output(text, 4096)
    assert was_cut and len(cut.encode()) <= 4096 and cut == "😀" * 1024
    assert status_output_limit(5) == 4096
    assert status_output_limit(201) * 201 <= 256 * 1024


def test_outputs_fill_configmaps_each_under_its_budget() -> None:
    placed: dict[str, int] = {}
    sizes: dict[str, int] = {}
    for i in range(5):
        slot = spill_slot(placed, sizes, f"s{i}", 400 * 1024)
        placed[f"s{i}"], sizes[f"s{i}"] = slot, 400 * 1024
    assert [placed[f"s{i}"] for i in range(5)] == [0, 0, 1, 1, 2]
    assert spill_slot(placed, sizes, "s0", 100) == 0  # a loop's new text replaces its old one
    assert outputs_slot("r", outputs_configmap("r")) == 0
    assert outputs_slot("r", outputs_configmap("r", 2)) == 2 and outputs_configmap("r", 2) == "r-outputs-3"
    assert outputs_slot("r", "other-outputs") is None


async def test_two_hundred_steps_of_maximal_output_stay_under_the_object_limit() -> None:
    """Each step answers the most a step may keep, in four-byte characters: the status stays
    far under etcd's 1.5 MiB, every ConfigMap under its budget, and every full text is kept."""
    answer = "😀" * (STEP_OUTPUT_MAX // 4)
    spec = {"input": [{"name": "t"}], "steps": [
        {"name": f"s{i}", "agent": "big", "dependsOn": [], "input": str(i)} for i in range(200)]}
    store = await execute(spec, Agents({"big": lambda m: answer}), run_of(t="x"))
    status = store.status  # every write holds the whole status
    assert status["phase"] == "Succeeded"
    assert max(len(json.dumps(w, ensure_ascii=False).encode()) for w in store.writes) < 512 * 1024
    kept = {key: text for data in store.outputs.values() for key, text in data.items()}
    assert len(kept) == 201 and all(text == answer for text in kept.values())  # and output.result
    for data in store.outputs.values():
        assert sum(len(t.encode()) for t in data.values()) <= CONFIGMAP_OUTPUTS_BUDGET
    for step in status["steps"]:
        assert step["outputRef"]["key"] == step["name"]
        assert kept[step["name"]].startswith(step["output"])


async def test_an_answer_over_the_most_a_step_may_keep_fails_the_step() -> None:
    spec = {"input": [{"name": "t"}], "steps": [{"name": "s", "agent": "big"}]}
    store = await execute(spec, Agents({"big": lambda m: "x" * (STEP_OUTPUT_MAX + 1)}), run_of(t="x"))
    assert store.status["phase"] == "Failed"
    assert "a step's output may have at most" in steps(store)["s"]["error"]


async def test_a_router_call_is_inside_the_step_timeout() -> None:
    async def stuck(message: str) -> str:
        await asyncio.sleep(30)
        return "billing"

    spec = {"input": [{"name": "q"}],
            "steps": [{"name": "r", "timeout": "300ms", "input": "{{ input.q }}",
                       "route": {"router": "router", "choices": ["billing", "support"]}}]}
    started = asyncio.get_running_loop().time()
    store = await execute(spec, Agents({"router": stuck, "billing": lambda m: "b"}), run_of(q="x"))
    assert asyncio.get_running_loop().time() - started < 5
    assert store.status["phase"] == "Failed"
    assert steps(store)["r"]["error"] == "the attempt did not finish within 300ms"


async def test_a_wide_fan_out_runs_a_bounded_number_of_steps_at_once_and_writes_in_bursts() -> None:
    from kagent.workflow.executor import MAX_RUNNING_STEPS

    in_flight = 0
    most = 0

    async def agent(message: str) -> str:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.05)
        in_flight -= 1
        return "ok"

    spec = {"input": [{"name": "t"}], "steps": [
        {"name": f"s{i}", "agent": "a", "dependsOn": [], "input": str(i)} for i in range(100)]}
    store = await execute(spec, Agents({"a": agent}), run_of(t="x"))
    assert store.status["phase"] == "Succeeded"
    assert most == MAX_RUNNING_STEPS
    assert len(store.writes) < 50  # 100 steps finishing in bursts: far fewer writes than steps


# --- a lost answer is re-sent with the same message id ------------------------------------------


async def test_a_lost_answer_is_resent_with_the_same_message_id_and_a_refusal_gets_a_new_one() -> None:
    """A broken connection (or a proxy's 502) says nothing about whether the agent ran the
    step: the retry re-sends the same message id, so an agent that did run it answers from its
    idempotency record instead of calling the model again. An answer that is a failure starts a
    new attempt with a new id, so the agent runs it afresh."""
    from kagent.agentclient import AgentCallError, AnswerLost

    for error, same_id in ((AnswerLost("agent a failed: connection reset"), True),
                           (AgentCallError("agent a failed the task: bad request"), False)):
        failures = [error]

        def reply(message: str, failures: list[Exception] = failures) -> str:
            if failures:
                raise failures.pop()
            return "ok"

        agents = Agents({"a": reply})
        spec = {"input": [{"name": "t"}],
                "steps": [{"name": "s", "agent": "a", "retry": {"limit": 2, "backoff": {"duration": "10ms"}}}]}
        store = await execute(spec, agents, run_of(t="x"))
        step = steps(store)["s"]
        assert store.status["phase"] == "Succeeded" and step["output"] == "ok"
        ids = [c["id"] for c in agents.calls]
        assert len(ids) == 2 and (ids[0] == ids[1]) is same_id, (error, ids)
        assert step["attempts"] == (1 if same_id else 2) and step["taskId"] == ids[1]


def test_which_failures_lose_the_answer() -> None:
    import httpx

    from kagent.agentclient import answer_lost

    request = httpx.Request("POST", "http://agent")

    def status(code: int) -> httpx.HTTPStatusError:
        return httpx.HTTPStatusError("x", request=request, response=httpx.Response(code, request=request))

    for lost in (httpx.ReadError("reset"), httpx.RemoteProtocolError("eof"), status(502), status(503)):
        wrapped = RuntimeError("wrapped")
        wrapped.__cause__ = lost
        assert answer_lost(lost) and answer_lost(wrapped), lost
    for answered in (status(400), status(401), status(500), ValueError("bad card")):
        assert not answer_lost(answered), answered
