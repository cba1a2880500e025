# ruff: noqa: F811 - ``receiver`` is the OTLP receiver fixture shared with the tracing tests
"""The workflow engine end to end: a real control plane, the controller as a process, agent
runtimes as processes behind the scripted model, and the engine pointed at those processes."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml
from lightkube.resources.core_v1 import ConfigMap

from kagent.agentclient import AgentClient
from kagent.kube import sync_client
from kagent.local.controller import ControllerProcess
from kagent.local.controlplane import ControlPlane
from kagent.mockllm import MockLLM
from kagent.testing.runtime import RuntimeProcess
from kagent.workflow.state import STEP_OUTPUT_MAX
from tests.integration.test_controller_agents import wait_for
from tests.integration.test_runtime_tracing import Receiver, receiver, tracing  # noqa: F401
from tests.runtime_manifests import agent, model, secret

pytestmark = pytest.mark.integration

ROLES = ["researcher", "analyst", "writer", "reviewer", "critic", "flaky", "slow", "router",
         "billing", "support", "big"]

BIG_CHARACTERS = (STEP_OUTPUT_MAX - 8) // 4
"""Four-byte characters in the "big" agent's answer: with the step's input before it, the most
a step may keep."""

SCRIPT = {
    "rules": [
        {"name": "researcher", "system_contains": "ROLE researcher", "content": "findings[{{last_user}}]"},
        {"name": "analyst", "system_contains": "ROLE analyst", "content": "analysis[{{last_user}}]"},
        {"name": "writer", "system_contains": "ROLE writer", "content": "report[{{last_user}}]"},
        {"name": "review-revise", "system_contains": "ROLE reviewer", "times": 2, "content": "REVISE"},
        {"name": "review-approve", "system_contains": "ROLE reviewer", "content": "APPROVED"},
        {"name": "critic", "system_contains": "ROLE critic", "content": "REVISE"},
        {"name": "flaky", "system_contains": "ROLE flaky",
         "error": {"status": 400, "message": "bad request"}},
        {"name": "slow", "system_contains": "ROLE slow", "delay": 8, "content": "slow[{{last_user}}]"},
        {"name": "router", "system_contains": "ROLE router", "content": "billing"},
        {"name": "billing", "system_contains": "ROLE billing", "content": "billing[{{last_user}}]"},
        {"name": "support", "system_contains": "ROLE support", "content": "support[{{last_user}}]"},
        {"name": "big", "system_contains": "ROLE big", "content": "{{last_user}}|" + "😀" * BIG_CHARACTERS},
    ],
}


_CONTROLLERS: list[ControllerProcess] = []


@pytest.fixture(scope="module")
def llm() -> Iterator[MockLLM]:
    with MockLLM(SCRIPT) as server:
        yield server


@pytest.fixture(scope="module")
def runtimes(llm: MockLLM, receiver: Receiver) -> Iterator[dict[str, RuntimeProcess]]:
    started: dict[str, RuntimeProcess] = {}
    try:
        for role in ROLES:
            observability = tracing(receiver) if role == "writer" else None
            docs = [agent(role, model("openai", llm.url), systemPrompt=f"ROLE {role}",
                          **({"observability": observability} if observability else {})), secret()]
            started[role] = RuntimeProcess(docs).start()
        yield started
    finally:
        for process in started.values():
            process.cleanup()


AGENT_WAIT = 30
"""Seconds a run waits for an agent that is missing or not Ready (the controller's setting)."""


def controller_env(runtimes: dict[str, RuntimeProcess]) -> dict[str, str]:
    urls = {n: r.url for n, r in runtimes.items()}
    urls["late"] = runtimes["writer"].url  # an Agent applied after its run
    return {"KAGENT_WORKFLOW_AGENT_URLS": json.dumps(urls),
            "KAGENT_WORKFLOW_AGENT_WAIT": f"{AGENT_WAIT}s"}


@pytest.fixture(scope="module")
def controller(plane: ControlPlane, runtimes: dict[str, RuntimeProcess],
               receiver: Receiver) -> Iterator[ControllerProcess]:
    env = {**controller_env(runtimes), "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
           "OTEL_BSP_SCHEDULE_DELAY": "500"}
    process = ControllerProcess(plane, identity="wf-0", webhook=False, lease_seconds=3,
                                env=env).start()
    wait_for(process.is_leader, what="leadership")
    _CONTROLLERS.append(process)
    yield process
    process.stop()


@pytest.fixture
def ns(plane: ControlPlane, controller: ControllerProcess, llm: MockLLM) -> str:
    namespace = plane.create_namespace("wf")
    docs = [{"apiVersion": "kagent.dev/v1alpha1", "kind": "Agent",
             "metadata": {"name": role, "namespace": namespace},
             "spec": {"model": {"provider": "openai", "name": "gpt-4o-mini"},
                      "systemPrompt": f"ROLE {role}"}} for role in ROLES]
    plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
    llm.reset()
    return namespace


def apply_workflow(plane: ControlPlane, namespace: str, name: str, spec: dict[str, Any],
                   runs: dict[str, dict[str, Any]] | None = None) -> None:
    docs: list[dict[str, Any]] = [{"apiVersion": "kagent.dev/v1alpha1", "kind": "Workflow",
                                   "metadata": {"name": name, "namespace": namespace}, "spec": spec}]
    for run_name, run_input in (runs or {}).items():
        docs.append(run_doc(namespace, run_name, name, run_input))
    plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))


def run_doc(namespace: str, name: str, workflow: str, run_input: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "kagent.dev/v1alpha1", "kind": "WorkflowRun",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"workflowRef": {"name": workflow}, "input": run_input}}


def start_run(plane: ControlPlane, namespace: str, name: str, workflow: str,
              run_input: dict[str, Any]) -> None:
    plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(run_doc(namespace, name, workflow, run_input)))


def get_run(plane: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    return json.loads(plane.kubectl("get", "workflowrun", name, "-n", namespace, "-o", "json").stdout)


def wait_finished(plane: ControlPlane, namespace: str, name: str, timeout: float = 90) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        run = get_run(plane, namespace, name)
        return run if (run.get("status") or {}).get("phase") in ("Succeeded", "Failed") else None

    try:
        return wait_for(finished, timeout=timeout, what=f"run {name} to finish")
    except AssertionError as error:
        status = get_run(plane, namespace, name).get("status")
        logs = _CONTROLLERS[-1].log_tail(40) if _CONTROLLERS else ""
        raise AssertionError(f"{error}\nstatus: {status}\ncontroller log:\n{logs}") from None


def steps_of(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in run["status"]["steps"]}


RESEARCH_REPORT = {
    "input": [{"name": "topic", "type": "string", "required": True}],
    "steps": [
        {"name": "research", "agent": "researcher", "input": "{{ input.topic }}"},
        {"name": "analyze-market", "agent": "analyst", "parallel": True,
         "input": "market {{ steps.research.output }}"},
        {"name": "analyze-tech", "agent": "analyst", "parallel": True,
         "input": "tech {{ steps.research.output }}"},
        {"name": "write", "agent": "writer",
         "input": "{{ steps.analyze-market.output }} + {{ steps.analyze-tech.output }}"},
    ],
    "output": {"report": "{{ steps.write.output }}"},
}


def test_research_report_runs_researcher_then_parallel_analysts_then_writer(
        plane: ControlPlane, ns: str, llm: MockLLM, receiver: Receiver) -> None:
    apply_workflow(plane, ns, "research-report", RESEARCH_REPORT, {"r1": {"topic": "tides"}})
    run = wait_finished(plane, ns, "r1")
    status = run["status"]
    assert status["phase"] == "Succeeded", status
    steps = steps_of(run)
    assert steps["research"]["output"] == "findings[tides]"
    assert steps["analyze-market"]["output"] == "analysis[market findings[tides]]"
    assert steps["analyze-tech"]["output"] == "analysis[tech findings[tides]]"
    expected = "report[analysis[market findings[tides]] + analysis[tech findings[tides]]]"
    assert steps["write"]["output"] == expected
    assert status["output"] == {"report": expected}
    for step in steps.values():
        assert step["phase"] == "Succeeded" and step["attempts"] == 1
        assert step["startedAt"] and step["finishedAt"] and step["taskId"]
    assert steps["analyze-market"]["agent"] == "analyst"
    # the analysts ran side by side: both started before either's dependant
    assert max(steps["analyze-market"]["startedAt"], steps["analyze-tech"]["startedAt"]) <= (
        steps["write"]["startedAt"])
    assert llm.rule_counts() == {"researcher": 1, "analyst": 2, "writer": 1}
    assert status["startedAt"] and status["finishedAt"] and status["duration"]
    # one trace per run (its id is the run's uid), a span per step, joined by the writer agent
    trace_id = run["metadata"]["uid"].replace("-", "")
    spans = receiver.wait_for(lambda found: any(
        s.trace_id == trace_id and s.service != "kagent-controller" for s in found) and sum(
        s.trace_id == trace_id and s.name == "workflow.step" for s in found) == 4)
    step_spans = {s.attributes["kagent.step"]: s for s in spans
                  if s.trace_id == trace_id and s.name == "workflow.step"}
    assert sorted(step_spans) == sorted(steps)
    agent_spans = [s for s in spans if s.trace_id == trace_id and s.service != "kagent-controller"]
    assert agent_spans and {s.service for s in agent_spans} == {"writer"}


def test_sequential_pipeline_feeds_each_output_to_the_next_step(plane: ControlPlane, ns: str) -> None:
    apply_workflow(plane, ns, "pipeline", {
        "steps": [{"name": "research", "agent": "researcher"},
                  {"name": "analyze", "agent": "analyst"},
                  {"name": "write", "agent": "writer"}],
    }, {"p1": {"topic": "kelp"}})
    run = wait_finished(plane, ns, "p1")
    assert run["status"]["phase"] == "Succeeded", run["status"]
    assert run["status"]["output"] == {"result": "report[analysis[findings[kelp]]]"}


def test_fan_out_with_when_skips_a_branch(plane: ControlPlane, ns: str, llm: MockLLM) -> None:
    apply_workflow(plane, ns, "fanout", {
        "steps": [{"name": "a", "agent": "analyst", "parallel": True, "input": "a"},
                  {"name": "b", "agent": "analyst", "parallel": True, "input": "b"},
                  {"name": "c", "agent": "analyst", "parallel": True, "input": "c",
                   "when": "input.deep == true"},
                  {"name": "join", "agent": "writer",
                   "input": "{{ steps.a.output }}{{ steps.b.output }}{{ steps.c.output }}"}],
    }, {"f1": {"deep": False}})
    run = wait_finished(plane, ns, "f1")
    steps = steps_of(run)
    assert run["status"]["phase"] == "Succeeded", run["status"]
    assert steps["c"]["phase"] == "Skipped" and steps["c"]["attempts"] == 0
    assert steps["join"]["output"] == "report[analysis[a]analysis[b]]"
    assert llm.rule_counts() == {"analyst": 2, "writer": 1}


def test_failing_step_is_retried_then_fails_the_run_fast(plane: ControlPlane, ns: str) -> None:
    apply_workflow(plane, ns, "failfast", {
        "steps": [{"name": "bad", "agent": "flaky", "parallel": True,
                   "retry": {"limit": 2, "backoff": {"duration": "100ms"}}},
                  {"name": "slow", "agent": "slow", "parallel": True},
                  {"name": "after", "agent": "writer"}],
    }, {"ff": {"topic": "x"}})
    run = wait_finished(plane, ns, "ff")
    steps = steps_of(run)
    assert run["status"]["phase"] == "Failed" and run["status"]["reason"] == "StepFailed"
    assert steps["bad"]["phase"] == "Failed" and steps["bad"]["attempts"] == 3
    assert steps["slow"]["phase"] == "Failed"  # cancelled, not left running
    assert steps["after"]["phase"] == "Skipped" and steps["after"]["attempts"] == 0
    assert steps["after"]["error"] == "not run: the run ended (StepFailed)"


def test_continue_lets_independent_branches_finish(plane: ControlPlane, ns: str) -> None:
    apply_workflow(plane, ns, "cont", {
        "errorHandling": {"strategy": "continue"},
        "steps": [{"name": "bad", "agent": "flaky"},
                  {"name": "after-bad", "agent": "writer", "dependsOn": ["bad"]},
                  {"name": "good", "agent": "analyst", "dependsOn": [], "input": "g"}],
    }, {"c1": {"topic": "x"}})
    run = wait_finished(plane, ns, "c1")
    steps = steps_of(run)
    assert run["status"]["phase"] == "Failed" and run["status"]["reason"] == "StepFailed"
    assert steps["good"]["phase"] == "Succeeded" and steps["good"]["output"] == "analysis[g]"
    assert steps["after-bad"]["phase"] == "Skipped"


def test_loop_ends_by_its_condition_and_by_max_iterations(plane: ControlPlane, ns: str,
                                                          llm: MockLLM) -> None:
    apply_workflow(plane, ns, "loops", {
        "steps": [{"name": "draft", "agent": "writer",
                   "input": "{{ input.topic }} {{ steps.review.output }}"},
                  {"name": "review", "agent": "reviewer",
                   "loop": {"until": 'steps.review.output.contains("APPROVED")',
                            "maxIterations": 5, "repeatFrom": "draft"}},
                  {"name": "critique", "agent": "critic",
                   "loop": {"until": 'steps.critique.output == "OK"', "maxIterations": 2}}],
    }, {"l1": {"topic": "essay"}})
    run = wait_finished(plane, ns, "l1")
    steps = steps_of(run)
    assert run["status"]["phase"] == "Succeeded", run["status"]
    assert steps["review"]["iterations"] == 3 and steps["review"]["output"] == "APPROVED"
    assert steps["draft"]["attempts"] == 3
    assert steps["critique"]["iterations"] == 2 and steps["critique"]["output"] == "REVISE"
    assert llm.rule_counts()["critic"] == 2


def test_routing_by_cases_and_by_router_agent(plane: ControlPlane, ns: str) -> None:
    apply_workflow(plane, ns, "routes", {
        "steps": [{"name": "by-case", "input": "{{ input.question }}",
                   "route": {"cases": [{"when": 'content.contains("invoice")', "agent": "billing"}],
                             "default": "support"}},
                  {"name": "by-router", "dependsOn": [], "input": "{{ input.question }}",
                   "route": {"router": "router", "choices": ["billing", "support"]}}],
    }, {"q1": {"question": "where is my invoice"}})
    run = wait_finished(plane, ns, "q1")
    steps = steps_of(run)
    assert run["status"]["phase"] == "Succeeded", run["status"]
    assert steps["by-case"]["agent"] == "billing"
    assert steps["by-case"]["output"] == "billing[where is my invoice]"
    assert steps["by-router"]["agent"] == "billing"


def test_timeout_and_cancel_leave_no_step_running(plane: ControlPlane, ns: str) -> None:
    apply_workflow(plane, ns, "slowwf", {"timeout": "3s", "steps": [{"name": "s", "agent": "slow"}]},
                   {"t1": {"topic": "x"}})
    run = wait_finished(plane, ns, "t1")
    assert run["status"]["phase"] == "Failed" and run["status"]["reason"] == "Timeout"
    assert steps_of(run)["s"]["phase"] == "Failed"
    apply_workflow(plane, ns, "slow2", {"steps": [{"name": "s", "agent": "slow"}]}, {"k1": {"t": "x"}})
    wait_for(lambda: steps_of(get_run(plane, ns, "k1"))["s"]["phase"] == "Running"
             if (get_run(plane, ns, "k1").get("status") or {}).get("steps") else False)
    plane.kubectl("patch", "workflowrun", "k1", "-n", ns, "--type", "merge", "-p",
                  '{"spec": {"cancel": true}}')
    run = wait_finished(plane, ns, "k1", timeout=20)
    assert run["status"]["reason"] == "Cancelled"
    assert steps_of(run)["s"]["phase"] == "Failed"


def test_concurrency_policies(plane: ControlPlane, ns: str) -> None:
    for policy in ("queue", "reject", "replace"):
        apply_workflow(plane, ns, f"c-{policy}", {
            "concurrency": {"limit": 1, "policy": policy},
            "steps": [{"name": "s", "agent": "slow"}]})
        start_run(plane, ns, f"{policy}-1", f"c-{policy}", {"t": "1"})
        wait_for(lambda p=policy: (get_run(plane, ns, f"{p}-1").get("status") or {}).get("phase")
                 == "Running")
        start_run(plane, ns, f"{policy}-2", f"c-{policy}", {"t": "2"})
    wait_for(lambda: (get_run(plane, ns, "queue-2").get("status") or {}).get("reason") == "Queued")

    def counts() -> tuple[int, int]:
        workflow = json.loads(plane.kubectl("get", "workflow", "c-queue", "-n", ns, "-o", "json").stdout)
        status = workflow.get("status") or {}
        return status.get("running"), status.get("pending")

    wait_for(lambda: counts() == (1, 1), what="the Workflow to count one running and one queued run")
    rejected = wait_finished(plane, ns, "reject-2")
    assert rejected["status"]["reason"] == "ConcurrencyLimit"
    replaced = wait_finished(plane, ns, "replace-1")
    assert replaced["status"]["reason"] == "Replaced"
    assert wait_finished(plane, ns, "replace-2")["status"]["phase"] == "Succeeded"
    first = wait_finished(plane, ns, "queue-1")
    second = wait_finished(plane, ns, "queue-2")
    assert first["status"]["phase"] == second["status"]["phase"] == "Succeeded"
    assert second["status"]["startedAt"] >= first["status"]["finishedAt"]


def test_run_waits_pending_for_its_agent_then_runs(plane: ControlPlane, ns: str) -> None:
    apply_workflow(plane, ns, "late-wf", {"steps": [{"name": "s", "agent": "late"}]},
                   {"w1": {"topic": "x"}})
    apply_workflow(plane, ns, "never-wf", {"timeout": "4s", "steps": [{"name": "s", "agent": "ghost"}]},
                   {"w2": {"topic": "x"}})

    def waiting() -> bool:
        status = get_run(plane, ns, "w1").get("status") or {}
        return status.get("phase") == "Pending" and status.get("reason") == "WaitingForAgent" and (
            '"late"' in status.get("message", ""))

    wait_for(waiting, what="the run to wait for its agent")
    plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(
        {"apiVersion": "kagent.dev/v1alpha1", "kind": "Agent", "metadata": {"name": "late", "namespace": ns},
         "spec": {"model": {"provider": "openai", "name": "gpt-4o-mini"}}}))
    run = wait_finished(plane, ns, "w1")
    assert run["status"]["phase"] == "Succeeded" and run["status"]["output"] == {"result": "report[x]"}
    timed_out = wait_finished(plane, ns, "w2")
    assert timed_out["status"]["reason"] == "Timeout" and not timed_out["status"].get("startedAt")


def test_large_outputs_go_to_a_configmap_and_finished_runs_are_collected(
        plane: ControlPlane, ns: str, controller: ControllerProcess) -> None:
    text = "z" * 6000
    apply_workflow(plane, ns, "big", {"ttlSecondsAfterFinished": 4,
                                      "steps": [{"name": "s", "agent": "writer"}]},
                   {"b1": {"topic": text}})
    run = wait_finished(plane, ns, "b1")
    step = steps_of(run)["s"]
    assert run["status"]["phase"] == "Succeeded"
    assert len(step["output"]) == 4096 and step["outputRef"] == {"configMap": "b1-outputs", "key": "s"}
    full = json.loads(plane.kubectl("get", "configmap", "b1-outputs", "-n", ns, "-o", "json").stdout)
    assert full["data"]["s"] == f"report[{text}]"
    events = plane.kubectl("get", "events", "-n", ns, "--field-selector",
                           "involvedObject.name=b1", "-o", "jsonpath={.items[*].reason}").stdout.split()
    assert "Started" in events and "Succeeded" in events
    metrics = controller.metrics()
    assert 'kagent_workflow_runs_total{phase="Succeeded",reason="Succeeded",workflow="big"} 1.0' in metrics
    assert "kagent_workflow_step_duration_seconds_bucket" in metrics
    gone = plane.kubectl("get", "workflowrun", "b1", "-n", ns, check=False)
    assert gone.returncode == 0  # not yet: the TTL counts from the finish
    wait_for(lambda: plane.kubectl("get", "workflowrun", "b1", "-n", ns, check=False).returncode != 0,
             timeout=30, what="the finished run to be deleted after its TTL")


def test_input_defaults_apply_to_a_run_made_with_kubectl(plane: ControlPlane, ns: str) -> None:
    """The newcomer's trip: ``days`` has a default and the run does not give it; the condition
    and the template both see the default."""
    apply_workflow(plane, ns, "trip", {
        "input": [{"name": "city", "type": "string", "required": True},
                  {"name": "days", "type": "integer", "default": 2}],
        "steps": [{"name": "plan", "agent": "researcher", "when": "input.days > 1",
                   "input": "{{ input.days }} days in {{ input.city }}"}],
    }, {"trip-1": {"city": "Oslo"}})
    run = wait_finished(plane, ns, "trip-1")
    assert run["status"]["phase"] == "Succeeded", run["status"]
    assert steps_of(run)["plan"]["output"] == "findings[2 days in Oslo]"


SLIPS_PAST = ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
              "{{ input.topic }}")


def lease() -> tuple[str, str]:
    from kagent.api.labels import CONTROLLER_NAMESPACE, LEASE_NAME

    plane = _CONTROLLERS[-1].plane
    out = plane.kubectl("get", "lease", LEASE_NAME, "-n", CONTROLLER_NAMESPACE, "-o",
                        "jsonpath={.spec.holderIdentity} {.spec.renewTime}").stdout.split()
    return out[0], out[1]


def test_an_expression_over_budget_at_run_time_fails_its_step_while_another_run_finishes_on_time(
        plane: ControlPlane, ns: str, controller: ControllerProcess) -> None:
    """Three templates that pass the static checks but would loop for hours, in one namespace;
    an ordinary run with a 90 s timeout in another. The expressions run in worker processes:
    each stops at its time limit and fails its step with a clear reason, the other run
    succeeds within its timeout, and the controller's Lease is renewed all along."""
    other = plane.create_namespace("wf-other")
    plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([
        {"apiVersion": "kagent.dev/v1alpha1", "kind": "Agent", "metadata": {"name": r, "namespace": other},
         "spec": {"model": {"provider": "openai", "name": "gpt-4o-mini"}, "systemPrompt": f"ROLE {r}"}}
        for r in ("researcher", "writer")]))
    for agent_name in ("researcher", "writer"):  # Ready before the race starts
        wait_for(lambda a=agent_name: any(
            c["type"] == "Ready" and c["status"] == "True" for c in (json.loads(plane.kubectl(
                "get", "agent", a, "-n", other, "-o", "json").stdout).get("status") or {}).get(
                "conditions") or []), timeout=90, what=f"agent {agent_name} Ready")
    apply_workflow(plane, ns, "frozen", {
        "input": [{"name": "topic"}],
        "steps": [{"name": f"loop-{i}", "agent": "writer", "parallel": True, "input": SLIPS_PAST}
                  for i in range(3)]}, {"frozen-1": {"topic": "x"}})
    apply_workflow(plane, other, "on-time", {
        "timeout": "90s", "input": [{"name": "topic"}],
        "steps": [{"name": "research", "agent": "researcher", "input": "{{ input.topic }}"},
                  {"name": "write", "agent": "writer", "input": "{{ steps.research.output }}",
                   "when": 'steps.research.output.startsWith("findings")'}]},
        {"on-time-1": {"topic": "tides"}})
    holders, renewals = set(), set()

    def both_finished() -> bool:
        holder, renewed = lease()
        holders.add(holder)
        renewals.add(renewed)
        phases = [(get_run(plane, n, r).get("status") or {}).get("phase")
                  for n, r in ((ns, "frozen-1"), (other, "on-time-1"))]
        return all(p in ("Succeeded", "Failed") for p in phases)

    wait_for(both_finished, timeout=90, what="both runs to finish")
    frozen, on_time = get_run(plane, ns, "frozen-1"), get_run(plane, other, "on-time-1")
    assert on_time["status"]["phase"] == "Succeeded", (on_time["status"], controller.log_tail(60))
    assert on_time["status"]["output"] == {"result": "report[findings[tides]]"}
    assert frozen["status"]["phase"] == "Failed"
    for step in frozen["status"]["steps"]:
        assert step["phase"] == "Failed" and step["attempts"] <= 1
        if step["error"].startswith("evaluating"):
            assert "did not finish within 2s" in step["error"], step["error"]
    assert any("did not finish within 2s" in s["error"] for s in frozen["status"]["steps"])
    assert holders == {controller.identity}
    assert len(renewals) >= 3  # renewed throughout, by the one leader


def test_a_run_whose_agent_never_exists_fails_after_a_bounded_wait_naming_it(
        plane: ControlPlane, ns: str) -> None:
    apply_workflow(plane, ns, "ghostly", {"input": [{"name": "topic"}],
                                          "steps": [{"name": "s", "agent": "ghost"}]},
                   {"ghost-1": {"topic": "x"}})
    run = wait_finished(plane, ns, "ghost-1", timeout=AGENT_WAIT + 60)
    assert run["status"]["reason"] == "AgentNotReady"
    assert run["status"]["message"] == f'Agent "ghost" does not exist (waited {AGENT_WAIT}s)'


async def test_the_shared_agent_client_reads_a_card_once_and_keeps_its_connection(
        runtimes: dict[str, RuntimeProcess]) -> None:
    """What the engine calls agents with: one card fetch and one kept-alive connection for a
    series of calls, each answered with the model usage the runtime reports."""
    client = AgentClient()
    seen: list[tuple[str, Any]] = []

    async def record(response: httpx.Response) -> None:
        stream = response.extensions["network_stream"]
        seen.append((response.request.url.path, stream.get_extra_info("client_addr")))

    client.http.event_hooks["response"].append(record)
    try:
        url = runtimes["analyst"].url
        answers = [await client.ask(url, "analyst", f"client-q{i}", timeout=60, message_id=f"client-{i}")
                   for i in range(3)]
    finally:
        await client.aclose()
    assert [a.text for a in answers] == [f"analysis[client-q{i}]" for i in range(3)]
    assert all(a.usage.get("requests") == 1 for a in answers)
    assert [path for path, _ in seen].count("/.well-known/agent-card.json") == 1
    assert len(seen) == 4 and len({address for _, address in seen}) == 1


def test_controller_killed_mid_run_resumes_without_rerunning_completed_steps(
        plane: ControlPlane, ns: str, llm: MockLLM, controller: ControllerProcess,
        runtimes: dict[str, RuntimeProcess]) -> None:
    apply_workflow(plane, ns, "durable", {
        "steps": [{"name": "research", "agent": "researcher"},
                  {"name": "wait", "agent": "slow"},
                  {"name": "write", "agent": "writer"}],
    }, {"d1": {"topic": "crash"}})
    wait_for(lambda: (get_run(plane, ns, "d1").get("status") or {}).get("steps")
             and steps_of(get_run(plane, ns, "d1"))["wait"]["phase"] == "Running", what="slow step")
    controller.kill()
    successor = ControllerProcess(plane, identity="wf-1", webhook=False, lease_seconds=3,
                                  env=controller_env(runtimes)).start()
    _CONTROLLERS.append(successor)
    try:
        run = wait_finished(plane, ns, "d1", timeout=120)
        steps = steps_of(run)
        assert run["status"]["phase"] == "Succeeded", run["status"]
        assert run["status"]["output"] == {"result": "report[slow[findings[crash]]]"}
        counts = llm.rule_counts()
        assert counts["researcher"] == 1 and counts["writer"] == 1
        assert counts["slow"] == 1  # re-sent with the same message id: the agent answers it once
        assert steps["wait"]["attempts"] == 1
    finally:
        successor.stop()


def test_random_controller_kills_across_fifty_runs(
        plane: ControlPlane, ns: str, llm: MockLLM, controller: ControllerProcess,
        runtimes: dict[str, RuntimeProcess]) -> None:
    """SIGKILL the controller at random moments while 50 runs progress: every run still
    finishes correctly, no step runs twice (the scripted model counts calls), nothing is left
    Running."""
    import random

    seed = random.randrange(1_000_000)
    rng = random.Random(seed)
    for process in (controller, *_CONTROLLERS):
        process.kill()
    runs = {f"soak-{i}": {"topic": f"t{i}"} for i in range(50)}  # names unique in the module
    apply_workflow(plane, ns, "soak", {
        "steps": [{"name": "a", "agent": "researcher", "input": "{{ input.topic }}"},
                  {"name": "b", "agent": "analyst"},
                  {"name": "c", "agent": "writer"}],
        "output": {"result": "{{ steps.c.output }}"},
        "concurrency": {"limit": 50},
    }, runs)
    env = controller_env(runtimes)
    for kill in range(6):
        victim = ControllerProcess(plane, identity=f"soak-{kill}", webhook=False, lease_seconds=2,
                                   env=env).start()
        _CONTROLLERS.append(victim)
        time.sleep(rng.uniform(2.5, 6.0))  # leadership takes up to one lease; then work happens
        victim.kill()
    survivor = ControllerProcess(plane, identity="soak-final", webhook=False, lease_seconds=2,
                                 env=env).start()
    _CONTROLLERS.append(survivor)
    try:
        for name, run_input in runs.items():
            run = wait_finished(plane, ns, name, timeout=180)
            topic = run_input["topic"]
            assert run["status"]["phase"] == "Succeeded", (seed, run["status"])
            assert run["status"]["output"] == {"result": f"report[analysis[findings[{topic}]]]"}, seed
            assert all(s["phase"] == "Succeeded" for s in run["status"]["steps"]), seed
        for topic in (r["topic"] for r in runs.values()):
            for expected in (topic, f"findings[{topic}]", f"analysis[findings[{topic}]]"):
                calls = [c for c in llm.calls if c.last_user == expected]
                assert len(calls) == 1, f"seed {seed}: {expected!r} was sent {len(calls)} times"
    finally:
        survivor.stop()


ETCD_OBJECT_LIMIT = int(1.5 * 1024 * 1024)
"""etcd refuses a request over 1.5 MiB: a run whose status grows past it is wedged."""


def test_two_hundred_steps_of_maximal_output_stay_under_the_object_limit_and_succeed(
        plane: ControlPlane, ns: str, llm: MockLLM, controller: ControllerProcess,
        runtimes: dict[str, RuntimeProcess]) -> None:
    """200 parallel steps each answer the most a step may keep, in four-byte characters (about
    180 MB in all). The run succeeds, its WorkflowRun stays far under etcd's object limit the
    whole time, every full answer is read back from the ConfigMap its step names, and the
    controller's Lease is renewed throughout by the one leader."""
    for process in (controller, *_CONTROLLERS):
        process.kill()
    # The chart's lease (15 s): this test measures sizes, not how fast a failover is.
    wide = ControllerProcess(plane, identity="wide", webhook=False, lease_seconds=15,
                             env=controller_env(runtimes)).start()
    _CONTROLLERS.append(wide)
    try:
        wait_for(wide.is_leader, what="leadership")
        check_two_hundred_steps(plane, ns, llm, wide)
    finally:
        wide.stop()


def check_two_hundred_steps(plane: ControlPlane, ns: str, llm: MockLLM,
                            controller: ControllerProcess) -> None:
    steps = [{"name": f"s{i}", "agent": "big", "dependsOn": [], "input": str(i)} for i in range(200)]
    apply_workflow(plane, ns, "wide", {"input": [{"name": "t"}], "steps": steps,
                                       "output": {"last": "{{ steps.s199.output }}"}},
                   {"wide-1": {"t": "x"}})
    holders, renewals, sizes = set(), [], []

    def finished() -> dict[str, Any] | None:
        holder, renewed = lease()
        holders.add(holder)
        if not renewals or renewals[-1] != renewed:
            renewals.append(renewed)
        raw = plane.kubectl("get", "workflowrun", "wide-1", "-n", ns, "-o", "json").stdout
        sizes.append(len(raw.encode()))
        run = json.loads(raw)
        return run if (run.get("status") or {}).get("phase") in ("Succeeded", "Failed") else None

    started = time.monotonic()
    run = wait_for(finished, timeout=240, interval=1, what="the wide run to finish")
    took = time.monotonic() - started
    status = run["status"]
    assert status["phase"] == "Succeeded", (status.get("reason"), status.get("message"))
    assert len(status["steps"]) == 200
    compact = json.dumps(run, separators=(",", ":"), ensure_ascii=False).encode()
    assert max(*sizes, len(compact)) < 512 * 1024 < ETCD_OBJECT_LIMIT, max(sizes)
    assert holders == {controller.identity}
    assert len(renewals) >= max(3, int(took / 10)), renewals  # renewed throughout the run

    client = sync_client(plane.kubeconfig)
    maps: dict[str, dict[str, str]] = {}
    for step in status["steps"]:
        ref = step["outputRef"]
        if ref["configMap"] not in maps:
            data = client.get(ConfigMap, ref["configMap"], namespace=ns).data or {}
            assert sum(len(v.encode()) for v in data.values()) <= 900 * 1024
            maps[ref["configMap"]] = data
        full = maps[ref["configMap"]][ref["key"]]
        index = step["name"][1:]
        assert full == f"{index}|" + "😀" * BIG_CHARACTERS, step["name"]
        assert full.startswith(step["output"]) and len(step["output"].encode()) < 4096
    assert llm.rule_counts() == {"big": 200}
    print(f"200 maximal steps: {took:.0f}s, WorkflowRun at most {max(*sizes, len(compact))} bytes, "
          f"{len(maps)} outputs ConfigMaps, {len(renewals)} Lease renewals seen")
