"""The workflow soak test with two replicas per agent: agent pods are real ``kagent runtime``
processes (kwok's pods, realised on this machine, behind the local Service proxy that picks a
Ready replica round robin), both replicas of an agent share one real Redis, and both the agent
pods and the controller are SIGKILLed at random moments while the runs progress. Every run
still finishes correctly and every step's model call happens exactly once: a step re-sent
after a failover, on either replica, after either replica died, is answered from the durable
record of its message id instead of running the model again."""

from __future__ import annotations

import json
import os
import random
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from kagent.local.controller import ControllerProcess
from kagent.local.controlplane import ControlPlane, install_crds
from kagent.local.dev import DevProcess, scripted_model_env, start_local_pods
from kagent.local.services import RedisServer
from kagent.mockllm import MockLLM
from tests.helpers import wait_for

pytestmark = pytest.mark.integration

NAMESPACE = "soak"
AGENTS = {"researcher": "findings", "analyst": "analysis", "writer": "report"}
SCRIPT = {"rules": [
    {"name": role, "system_contains": f"ROLE {role}", "content": f"{word}[{{{{last_user}}}}]"}
    for role, word in AGENTS.items()]}
RUNS = 30
CONTROLLER_KILLS = 4
POD_KILLS = 6


@dataclass
class Env:
    plane: ControlPlane
    pods: DevProcess
    workdir: Path
    llm: MockLLM
    controller_env: dict[str, str]

    def pods_of(self, agent: str) -> list[dict[str, Any]]:
        listed = httpx.get(f"{self.pods.url}/_pods", timeout=10, trust_env=False).json()["pods"]
        return [p for p in listed if p["namespace"] == NAMESPACE and p["agent"] == agent]

    def kill_pod(self, pod: dict[str, Any]) -> bool:
        """SIGKILL the pod's whole process group, as a container dies (an OOM kill, a node
        fault); the realiser restarts it as a kubelet would."""
        directory = (self.workdir / "pods" / pod["namespace"] / pod["pod"]).resolve()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if Path(os.readlink(entry / "cwd")) == directory:
                    os.killpg(os.getpgid(int(entry.name)), signal.SIGKILL)
                    return True
            except (OSError, ProcessLookupError):
                continue
        return False


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer) -> Iterator[Env]:
    workdir = tmp_path_factory.mktemp("soak")
    with MockLLM(SCRIPT) as llm, ControlPlane(local_agent_pods=True) as plane:
        install_crds(plane)
        plane.create_namespace(NAMESPACE)
        overrides = {**scripted_model_env(llm.url), "OPENAI_API_KEY": "scripted"}
        pods = start_local_pods(workdir, plane.kubeconfig, overrides)
        try:
            docs: list[dict[str, Any]] = [
                {"apiVersion": "kagent.dev/v1alpha1", "kind": "Memory",
                 "metadata": {"name": "shared", "namespace": NAMESPACE},
                 "spec": {"type": "redis", "config": {"url": redis_server.url}}}]
            docs += [{"apiVersion": "kagent.dev/v1alpha1", "kind": "Agent",
                      "metadata": {"name": role, "namespace": NAMESPACE},
                      "spec": {"model": {"provider": "openai", "name": "gpt-4o-mini"},
                               "systemPrompt": f"ROLE {role}", "replicas": 2,
                               "memoryRef": {"name": "shared"}}} for role in AGENTS]
            plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
            yield Env(plane, pods, workdir, llm,
                      {"KAGENT_WORKFLOW_AGENT_URL_TEMPLATE": pods.url + "/{namespace}/{name}",
                       "KAGENT_WORKFLOW_AGENT_WAIT": "120s"})
        finally:
            pods.supervised().stop(grace=10)


def run_phase(plane: ControlPlane, name: str) -> dict[str, Any]:
    return json.loads(plane.kubectl("get", "workflowrun", name, "-n", NAMESPACE, "-o", "json").stdout)


def test_soak_with_two_replicas_per_agent_and_agent_pods_and_the_controller_killed(env: Env) -> None:
    seed = random.randrange(1_000_000)
    rng = random.Random(seed)
    first = ControllerProcess(env.plane, identity="soak-r-first", webhook=False, lease_seconds=2,
                              env=env.controller_env).start()
    try:
        wait_for(lambda: all(sum(p["ready"] for p in env.pods_of(a)) == 2 for a in AGENTS),
                 timeout=180, interval=1, what="two Ready pods of every agent")
    finally:
        first.kill()
    runs = {f"soak-{i}": {"topic": f"t{i}"} for i in range(RUNS)}
    docs: list[dict[str, Any]] = [{
        "apiVersion": "kagent.dev/v1alpha1", "kind": "Workflow",
        "metadata": {"name": "soak", "namespace": NAMESPACE},
        "spec": {"steps": [{"name": "a", "agent": "researcher", "input": "{{ input.topic }}"},
                           {"name": "b", "agent": "analyst"},
                           {"name": "c", "agent": "writer"}],
                 "output": {"result": "{{ steps.c.output }}"},
                 "errorHandling": {"strategy": "retry",
                                   "retry": {"limit": 5, "backoff": {"duration": "500ms"}}},
                 "concurrency": {"limit": RUNS}}}]
    docs += [{"apiVersion": "kagent.dev/v1alpha1", "kind": "WorkflowRun",
              "metadata": {"name": name, "namespace": NAMESPACE},
              "spec": {"workflowRef": {"name": "soak"}, "input": run_input}}
             for name, run_input in runs.items()]
    env.plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
    controllers: list[ControllerProcess] = [first]
    pod_kills: list[str] = []
    pod_deadlines = iter(sorted(rng.uniform(0, CONTROLLER_KILLS * 5.0) for _ in range(POD_KILLS)))
    started = time.monotonic()
    next_pod_kill = next(pod_deadlines, None)
    for kill in range(CONTROLLER_KILLS):
        victim = ControllerProcess(env.plane, identity=f"soak-r-{kill}", webhook=False,
                                   lease_seconds=2, env=env.controller_env).start()
        controllers.append(victim)
        until = time.monotonic() + rng.uniform(2.5, 6.0)
        while time.monotonic() < until:
            if next_pod_kill is not None and time.monotonic() - started >= next_pod_kill:
                candidates = [p for a in AGENTS for p in env.pods_of(a) if p["ready"]]
                if candidates:
                    pod = rng.choice(candidates)
                    if env.kill_pod(pod):
                        pod_kills.append(pod["pod"])
                next_pod_kill = next(pod_deadlines, None)
            time.sleep(0.1)
        victim.kill()
    survivor = ControllerProcess(env.plane, identity="soak-r-final", webhook=False,
                                 lease_seconds=2, env=env.controller_env).start()
    controllers.append(survivor)
    try:
        assert pod_kills, f"seed {seed}: no agent pod was killed"
        for name, run_input in runs.items():
            run = wait_for(lambda n=name: (r := run_phase(env.plane, n)) and (
                (r.get("status") or {}).get("phase") in ("Succeeded", "Failed")) and r,
                timeout=240, interval=1, what=f"run {name} to finish")
            topic = run_input["topic"]
            assert run["status"]["phase"] == "Succeeded", (seed, pod_kills, run["status"])
            assert run["status"]["output"] == {"result": f"report[analysis[findings[{topic}]]]"}, seed
        for topic in (r["topic"] for r in runs.values()):
            for expected in (topic, f"findings[{topic}]", f"analysis[findings[{topic}]]"):
                calls = [c for c in env.llm.calls if c.last_user == expected]
                assert len(calls) == 1, (f"seed {seed}, pods killed {pod_kills}: {expected!r} "
                                         f"was sent to the model {len(calls)} times")
    finally:
        survivor.stop()
