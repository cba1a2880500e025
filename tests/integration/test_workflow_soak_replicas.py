"""The workflow soak test with two replicas per agent: agent pods are real ``kagent runtime``
processes (kwok's pods, realised on this machine, behind the local Service proxy that picks a
Ready replica round robin), both replicas of an agent share one real Redis, and both the agent
pods and the controller are SIGKILLed at random moments while the runs progress (each model
call takes a second, so steps are in flight at every kill). Every run still finishes correctly
and every step's model call happens exactly once: a step re-sent after a failover, on either
replica, after either replica died, is answered from the durable record of its message id
instead of running the model again.

The one exception is inherent, not a bug: a turn cut off by its pod's death before it recorded
its answer has to run again. The re-send carries the same message id, so it waits until the
dead replica's claim on it lapses (:data:`CLAIM_LEASE_SECONDS`) before running it: a second
call is accepted only when a pod of that agent was killed after the first and the second came
at least two thirds of a claim lease later. A replica without the shared record, or a retry
under a new message id, runs it again at once and fails the test."""

from __future__ import annotations

import itertools
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
from kagent.runtime.memory.tasks import CLAIM_LEASE_SECONDS
from tests.helpers import wait_for

pytestmark = pytest.mark.integration

NAMESPACE = "soak"
AGENTS = {"researcher": "findings", "analyst": "analysis", "writer": "report"}
SCRIPT = {"rules": [
    {"name": role, "system_contains": f"ROLE {role}", "content": f"{word}[{{{{last_user}}}}]",
     "delay": 1} for role, word in AGENTS.items()]}
LAPSE_AFTER_KILL = CLAIM_LEASE_SECONDS * 2 / 3 - 5
"""A dead replica's claim is renewed every third of a lease, so it lapses at least two thirds
of a lease after the kill (less a margin for clocks and polling)."""
RUNS = 30
SOAK_SECONDS = 30.0
"""How long pods and controllers are killed for, while the runs progress."""
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
    controller = ControllerProcess(env.plane, identity="soak-r-0", webhook=False,
                                   lease_seconds=2, env=env.controller_env).start()
    try:
        wait_for(lambda: all(sum(p["ready"] for p in env.pods_of(a)) == 2 for a in AGENTS),
                 timeout=180, interval=1, what="two Ready pods of every agent")
    except BaseException:
        controller.kill()
        raise
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
    # (when the kill began, when it was done, agent, pod): finding the pod's processes takes a
    # scan of /proc, during which the pod may still send its model call.
    pod_kills: list[tuple[float, float, str, str]] = []
    controller_kills = 0
    now = time.monotonic()
    end = now + SOAK_SECONDS
    next_controller_kill = now + rng.uniform(4.0, 7.0)
    next_pod_kill = now + rng.uniform(1.0, 3.0)
    while time.monotonic() < end:
        if time.monotonic() >= next_controller_kill and controller_kills < CONTROLLER_KILLS:
            controller.kill()
            controller_kills += 1
            controller = ControllerProcess(env.plane, identity=f"soak-r-{controller_kills}",
                                           webhook=False, lease_seconds=2,
                                           env=env.controller_env).start()
            # leadership takes up to one lease; then work happens
            next_controller_kill = time.monotonic() + rng.uniform(4.0, 7.0)
        if time.monotonic() >= next_pod_kill and len(pod_kills) < POD_KILLS:
            # A pod of an agent that has a model call in flight (each takes a second).
            busy = {c.rule for c in env.llm.calls if c.timestamp > time.time() - 0.7}
            candidates = [p for a in sorted(busy & set(AGENTS)) for p in env.pods_of(a) if p["ready"]]
            if candidates:
                pod = rng.choice(candidates)
                when = time.time()
                if env.kill_pod(pod):
                    pod_kills.append((when, time.time(), pod["agent"], pod["pod"]))
                next_pod_kill = time.monotonic() + rng.uniform(1.5, 4.0)
        time.sleep(0.1)
    survivor = controller
    try:
        assert pod_kills and controller_kills, f"seed {seed}: nothing was killed"
        for name, run_input in runs.items():
            run = wait_for(lambda n=name: (r := run_phase(env.plane, n)) and (
                (r.get("status") or {}).get("phase") in ("Succeeded", "Failed")) and r,
                timeout=240, interval=1, what=f"run {name} to finish")
            topic = run_input["topic"]
            assert run["status"]["phase"] == "Succeeded", (seed, pod_kills, run["status"])
            assert run["status"]["output"] == {"result": f"report[analysis[findings[{topic}]]]"}, seed
        rerun_after_crash = 0
        for topic in (r["topic"] for r in runs.values()):
            for agent, expected in (("researcher", topic), ("analyst", f"findings[{topic}]"),
                                    ("writer", f"analysis[findings[{topic}]]")):
                calls = sorted(c.timestamp for c in env.llm.calls if c.last_user == expected)
                assert calls, f"seed {seed}: {expected!r} never reached the model"
                for before, after in itertools.pairwise(calls):
                    # The call was made before the pod was surely dead, and sent again only
                    # once the dead pod's claim had surely lapsed.
                    explained = any(before <= done and began + LAPSE_AFTER_KILL <= after
                                    for began, done, killed, _ in pod_kills if killed == agent)
                    assert explained, (f"seed {seed}: {expected!r} was sent to the model again "
                                       f"{after - before:.1f}s after its first call with no crash "
                                       f"of a {agent} pod to explain it (calls at {before:.3f} "
                                       f"and {after:.3f}); pods killed: {pod_kills}")
                    rerun_after_crash += 1
        print(f"seed {seed}: {len(pod_kills)} agent pods killed, {rerun_after_crash} turns cut off "
              "by a crash ran again")
    finally:
        survivor.stop()
