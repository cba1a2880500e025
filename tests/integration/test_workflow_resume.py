"""Resuming failed runs and Budgets by workflowSelector, end to end: a real control plane, the
controller (with its webhook) as a process, agent runtimes behind the scripted model counting
every call, real Redis counters, and the real ``kagent workflow`` commands.

- a six-step run whose fourth step fails is retried from there: the first three agents get no
  new call, the run Succeeds and records its attempt; ``--from`` a succeeded step runs it and
  what follows again; a retry of a run that did not fail, or from a step that does not exist, is
  refused at admission naming the field;
- ``resubmit`` starts a new run with the same input;
- a Budget selecting a Workflow by its labels stops that Workflow's step, naming the Budget,
  while runs of other Workflows on the same agents are not counted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from kagent.local.controller import ControllerProcess
from kagent.local.controlplane import ControlPlane
from kagent.mockllm import MockLLM
from kagent.testing.runtime import RuntimeServer
from tests.helpers import wait_for
from tests.runtime_manifests import agent, model, secret, unique

pytestmark = pytest.mark.integration

STEPS = [f"s{i}" for i in range(1, 7)]
BUDGET = unique("capped")
"""The Budget's name (its counters live in the session's Redis: a fresh name each session)."""
CAPPED_LABELS = {"cost-center": "capped"}
SCRIPT = {"rules": [
    {"name": "s4-overloaded", "system_contains": "ROLE s4", "times": 1,
     "error": {"status": 400, "message": "model overloaded"}},
    *({"name": s, "system_contains": f"ROLE {s}", "content": f"{s}[{{{{last_user}}}}]"} for s in STEPS),
]}
PIPELINE = {"input": [{"name": "topic", "type": "string", "required": True}],
            "steps": [{"name": "one", "agent": "s1", "input": "{{ input.topic }}"},
                      *({"name": n, "agent": s} for n, s in zip(
                          ["two", "three", "four", "five", "six"], STEPS[1:], strict=True))]}
CAPPED = {"steps": [{"name": "first", "agent": "s1", "input": "go"},
                    {"name": "second", "agent": "s2"}],
          # Retries allowed, yet a Budget's refusal is final: no retry can fix it for hours.
          "errorHandling": {"strategy": "retry", "retry": {"limit": 3}}}


@pytest.fixture(scope="module")
def llm() -> Iterator[MockLLM]:
    with MockLLM(SCRIPT) as server:
        yield server


def budget(redis_url: str) -> dict[str, Any]:
    """One request a day for steps of Workflows labelled cost-center=capped, whatever agent."""
    return {"apiVersion": "kagent.dev/v1alpha1", "kind": "Budget",
            "metadata": {"name": BUDGET, "namespace": "tests"},
            "spec": {"limits": [{"window": "day", "requests": 1}],
                     "workflowSelector": {"matchLabels": CAPPED_LABELS},
                     "counter": {"type": "redis", "url": redis_url}}}


@pytest.fixture(scope="module")
def runtimes(llm: MockLLM, redis_server: Any) -> Iterator[dict[str, RuntimeServer]]:
    """One agent per step; each knows the Budget, as the controller renders it for every agent
    of the namespace."""
    started: dict[str, RuntimeServer] = {}
    try:
        for name in STEPS:
            docs = [agent(name, model("openai", llm.url), systemPrompt=f"ROLE {name}"),
                    budget(redis_server.url), secret()]
            started[name] = RuntimeServer(docs).start()
        yield started
    finally:
        for server in started.values():
            server.stop()


@pytest.fixture(scope="module")
def controller(plane: ControlPlane, runtimes: dict[str, RuntimeServer]) -> Iterator[ControllerProcess]:
    urls = {name: server.url for name, server in runtimes.items()}
    process = ControllerProcess(plane, identity="retry-0", lease_seconds=3,
                                env={"KAGENT_WORKFLOW_AGENT_URLS": json.dumps(urls)}).start()
    wait_for(process.is_leader, what="leadership")
    yield process
    process.stop()


@pytest.fixture
def ns(plane: ControlPlane, controller: ControllerProcess, llm: MockLLM) -> str:
    namespace = plane.create_namespace(unique("retry"))
    docs: list[dict[str, Any]] = [
        {"apiVersion": "kagent.dev/v1alpha1", "kind": "Agent",
         "metadata": {"name": name, "namespace": namespace},
         "spec": {"model": {"provider": "openai", "name": "gpt-4o-mini"}, "systemPrompt": f"ROLE {name}"}}
        for name in STEPS]
    docs.append({"apiVersion": "kagent.dev/v1alpha1", "kind": "Workflow",
                 "metadata": {"name": "pipeline", "namespace": namespace}, "spec": PIPELINE})
    docs.append({"apiVersion": "kagent.dev/v1alpha1", "kind": "Workflow",
                 "metadata": {"name": "capped", "namespace": namespace, "labels": CAPPED_LABELS},
                 "spec": CAPPED})
    plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
    llm.reset()
    return namespace


def kagent(plane: ControlPlane, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(plane.kubeconfig), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "kagent", *args], capture_output=True, text=True,
                          timeout=180, check=False, env=env)


def get_run(plane: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    return json.loads(plane.kubectl("get", "workflowrun", name, "-n", namespace, "-o", "json").stdout)


def wait_finished(plane: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        run = get_run(plane, namespace, name)
        return run if (run.get("status") or {}).get("phase") in ("Succeeded", "Failed") else None

    return wait_for(finished, timeout=90, what=f"run {name} to finish")


def calls(llm: MockLLM) -> dict[str, int]:
    """Model calls so far, by the agent that made them."""
    counted = dict.fromkeys(STEPS, 0)
    for call in llm.calls:
        for name in STEPS:
            if f"ROLE {name}" in call.system:
                counted[name] += 1
    return counted


def steps_of(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in run["status"]["steps"]}


def failed_run(plane: ControlPlane, ns: str, llm: MockLLM) -> str:
    """A pipeline run that failed at its fourth step (the model refused it once)."""
    started = kagent(plane, "workflow", "run", "pipeline", "-n", ns, "--input", "topic=tides",
                     "--name", "tides")
    assert started.returncode == 0, started.stderr
    run = wait_finished(plane, ns, "tides")
    assert run["status"]["phase"] == "Failed", run["status"]
    assert "model overloaded" in steps_of(run)["four"]["error"]
    assert calls(llm) == {"s1": 1, "s2": 1, "s3": 1, "s4": 1, "s5": 0, "s6": 0}
    return "tides"


def test_a_run_failed_at_its_fourth_step_is_retried_from_there_and_succeeds(
        plane: ControlPlane, ns: str, llm: MockLLM) -> None:
    name = failed_run(plane, ns, llm)
    retried = kagent(plane, "workflow", "retry", name, "-n", ns, "--watch", "--timeout", "90")
    assert retried.returncode == 0, retried.stdout + retried.stderr
    assert f"workflowrun/{name} retry requested (attempt 2)" in retried.stdout
    run = get_run(plane, ns, name)
    status = run["status"]
    assert status["phase"] == "Succeeded" and status["attempt"] == 2
    # the first three agents got no new call; four, five and six one each
    assert calls(llm) == {"s1": 1, "s2": 1, "s3": 1, "s4": 2, "s5": 1, "s6": 1}
    assert status["output"]["result"] == "s6[s5[s4[s3[s2[s1[tides]]]]]]"
    [attempt] = status["attempts"]
    assert attempt["attempt"] == 2 and attempt["steps"] == ["four", "five", "six"]
    assert attempt["previousReason"] == "StepFailed" and attempt["startedAt"]
    steps = steps_of(run)
    assert steps["one"]["attempts"] == 1 and steps["four"]["attempts"] == 2
    assert steps["four"]["taskId"].endswith("-four-2")
    described = kagent(plane, "describe", "run", name, "-n", ns)
    assert described.returncode == 0, described.stderr
    assert "Retries:" in described.stdout and "four, five, six" in described.stdout

    # --from a step that succeeded: it and every step after it run again
    again = kagent(plane, "workflow", "retry", name, "-n", ns, "--from", "five")
    assert again.returncode == 2 and "only a Failed (or cancelled) run" in again.stderr
    assert "kagent workflow resubmit" in again.stderr  # what to do instead
    refused = plane.kubectl("patch", "workflowrun", name, "-n", ns, "--type", "merge", "-p",
                            json.dumps({"spec": {"retry": {"attempt": 3}}}), check=False)
    assert refused.returncode != 0 and "spec.retry: the run is Succeeded" in refused.stderr


def test_from_a_succeeded_step_reruns_it_and_what_follows(plane: ControlPlane, ns: str,
                                                          llm: MockLLM) -> None:
    name = failed_run(plane, ns, llm)
    unknown = plane.kubectl("patch", "workflowrun", name, "-n", ns, "--type", "merge", "-p",
                            json.dumps({"spec": {"retry": {"attempt": 2, "fromStep": "seven"}}}),
                            check=False)
    assert unknown.returncode != 0
    assert "spec.retry.fromStep: Workflow has no step 'seven'" in unknown.stderr
    cli_unknown = kagent(plane, "workflow", "retry", name, "-n", ns, "--from", "seven")
    assert cli_unknown.returncode == 2 and "--from seven" in cli_unknown.stderr

    retried = kagent(plane, "workflow", "retry", name, "-n", ns, "--from", "two", "--watch",
                     "--timeout", "90")
    assert retried.returncode == 0, retried.stdout + retried.stderr
    assert calls(llm) == {"s1": 1, "s2": 2, "s3": 2, "s4": 2, "s5": 1, "s6": 1}
    status = get_run(plane, ns, name)["status"]
    assert status["phase"] == "Succeeded"
    assert status["attempts"][-1]["fromStep"] == "two"
    assert status["attempts"][-1]["steps"] == ["two", "three", "four", "five", "six"]


def test_resubmit_starts_a_new_run_with_the_same_input(plane: ControlPlane, ns: str,
                                                       llm: MockLLM) -> None:
    name = failed_run(plane, ns, llm)
    resubmitted = kagent(plane, "workflow", "resubmit", name, "-n", ns, "--watch", "--timeout", "90")
    assert resubmitted.returncode == 0, resubmitted.stdout + resubmitted.stderr
    created = resubmitted.stdout.split()[0]
    assert created.startswith("workflowrun/pipeline-")
    new = get_run(plane, ns, created.split("/", 1)[1])
    assert new["spec"]["input"] == {"topic": "tides"} and new["status"]["phase"] == "Succeeded"
    assert new["metadata"]["annotations"]["kagent.dev/resubmitted-from"] == name
    assert calls(llm) == {"s1": 2, "s2": 2, "s3": 2, "s4": 2, "s5": 1, "s6": 1}
    assert get_run(plane, ns, name)["status"]["phase"] == "Failed"  # the old run is left as it was


def test_a_budget_selecting_a_workflow_stops_its_step_naming_the_budget(
        plane: ControlPlane, ns: str, llm: MockLLM) -> None:
    started = kagent(plane, "workflow", "run", "capped", "-n", ns, "--name", "capped-1")
    assert started.returncode == 0, started.stderr
    run = wait_finished(plane, ns, "capped-1")
    steps = steps_of(run)
    assert steps["first"]["phase"] == "Succeeded"
    assert steps["second"]["phase"] == "Failed", steps
    assert f'Budget "{BUDGET}" is used up' in steps["second"]["error"]
    assert steps["second"]["attempts"] == 1, steps["second"]  # refused once, not retried
    assert run["status"]["phase"] == "Failed" and BUDGET in run["status"]["message"]
    assert calls(llm)["s2"] == 0  # refused before the model was called
    # the same agents, in a Workflow the Budget does not select, are not counted by it
    uncapped = kagent(plane, "workflow", "run", "pipeline", "-n", ns, "--input", "topic=x",
                      "--name", "free", "--watch", "--timeout", "90")
    assert uncapped.returncode in (0, 1), uncapped.stderr
    free = steps_of(wait_finished(plane, ns, "free"))
    assert free["one"]["phase"] == free["two"]["phase"] == "Succeeded"
