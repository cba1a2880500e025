"""The workflow engine end to end: a real control plane, the controller as a process, agent
runtimes as processes behind the scripted model, and the engine pointed at those processes."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from kagent.cli.dev import install_crds
from kagent.testing.controller import ControllerProcess
from kagent.testing.controlplane import ControlPlane
from kagent.testing.mockllm import MockLLM
from kagent.testing.runtime import RuntimeProcess
from tests.integration.test_controller_agents import wait_for
from tests.runtime_manifests import agent, model, secret

pytestmark = pytest.mark.integration

ROLES = ["researcher", "analyst", "writer", "reviewer", "critic", "flaky", "slow", "router",
         "billing", "support"]

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
    ],
}


_CONTROLLERS: list[ControllerProcess] = []


@pytest.fixture(scope="module")
def llm() -> Iterator[MockLLM]:
    with MockLLM(SCRIPT) as server:
        yield server


@pytest.fixture(scope="module")
def runtimes(llm: MockLLM) -> Iterator[dict[str, RuntimeProcess]]:
    started: dict[str, RuntimeProcess] = {}
    try:
        for role in ROLES:
            docs = [agent(role, model("openai", llm.url), systemPrompt=f"ROLE {role}"), secret()]
            started[role] = RuntimeProcess(docs).start()
        yield started
    finally:
        for process in started.values():
            process.cleanup()


@pytest.fixture(scope="module")
def plane() -> Iterator[ControlPlane]:
    with ControlPlane() as cp:
        install_crds(cp)
        yield cp


def controller_env(runtimes: dict[str, RuntimeProcess]) -> dict[str, str]:
    return {"KAGENT_WORKFLOW_AGENT_URLS": json.dumps({n: r.url for n, r in runtimes.items()})}


@pytest.fixture(scope="module")
def controller(plane: ControlPlane, runtimes: dict[str, RuntimeProcess]) -> Iterator[ControllerProcess]:
    process = ControllerProcess(plane, identity="wf-0", webhook=False, lease_seconds=3,
                                env=controller_env(runtimes)).start()
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
        plane: ControlPlane, ns: str, llm: MockLLM) -> None:
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
