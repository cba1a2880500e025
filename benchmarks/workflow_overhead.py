"""Workflow orchestration cost: a 5-step pipeline run as a WorkflowRun against the same five
A2A calls made directly with asyncio, per step (one run alone) and for 200 concurrent runs.

The agent is a real `kagent runtime` process behind the scripted model; the controller runs as a
process against the real control plane and reaches the agent through KAGENT_WORKFLOW_AGENT_URLS.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import yaml
from lightkube import AsyncClient, KubeConfig

from benchmarks.common import write_result
from kagent.local.controlplane import install_crds
from kagent.kube import KAGENT_RESOURCES
from kagent.agentclient import ask_agent_at
from kagent.local.controller import ControllerProcess
from kagent.local.controlplane import ControlPlane
from kagent.mockllm import MockLLM
from kagent.testing.runtime import RuntimeProcess

STEPS = 5
RUNS = 200
SCRIPT = {"default": {"content": "ok: {{last_user}}"}}


def pipeline() -> dict[str, Any]:
    steps = [{"name": f"s{i}", "agent": "worker", "input": f"step {i} of {{{{ input.item }}}}"}
             for i in range(STEPS)]
    return {"apiVersion": "kagent.dev/v1alpha1", "kind": "Workflow",
            "metadata": {"name": "pipeline", "namespace": "bench"},
            "spec": {"input": [{"name": "item", "type": "string"}], "steps": steps,
                     "concurrency": {"limit": RUNS, "policy": "queue"}}}


def run_doc(name: str) -> dict[str, Any]:
    return {"apiVersion": "kagent.dev/v1alpha1", "kind": "WorkflowRun",
            "metadata": {"name": name, "namespace": "bench"},
            "spec": {"workflowRef": {"name": "pipeline"}, "input": {"item": name}}}


async def direct_run(url: str, n: str) -> None:
    for i in range(STEPS):
        await ask_agent_at(url, "worker", f"step {i} of {n}")


async def wait_runs(client: AsyncClient, names: set[str], timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        done = 0
        async for run in client.list(KAGENT_RESOURCES["WorkflowRun"], namespace="bench"):
            phase = (run.get("status") or {}).get("phase")
            if run.metadata.name in names and phase in ("Succeeded", "Failed"):
                if phase == "Failed":
                    raise RuntimeError(f"run {run.metadata.name} failed: {run.get('status')}")
                done += 1
        if done == len(names):
            return time.monotonic() - started
        await asyncio.sleep(0.2)
    raise TimeoutError(f"runs did not finish in {timeout}s")


async def measure(plane: ControlPlane, runtime: RuntimeProcess) -> dict[str, Any]:
    client = AsyncClient(config=KubeConfig.from_file(plane.kubeconfig), field_manager="bench")
    await direct_run(runtime.url, "warm-up")
    started = time.monotonic()
    await direct_run(runtime.url, "single")
    direct_single = time.monotonic() - started
    started = time.monotonic()
    await asyncio.gather(*(direct_run(runtime.url, f"d{i}") for i in range(RUNS)))
    direct_many = time.monotonic() - started

    plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(pipeline()))
    plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(run_doc("warm-up")))
    await wait_runs(client, {"warm-up"}, 120)
    plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(run_doc("single")))
    wf_single = await wait_runs(client, {"single"}, 120)
    names = {f"r{i}" for i in range(RUNS)}
    plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([run_doc(n) for n in sorted(names)]))
    wf_many = await wait_runs(client, names, 1800)
    await client.close()
    return {
        "steps_per_run": STEPS,
        "single_run": {"direct_seconds": round(direct_single, 3), "workflow_seconds": round(wf_single, 3),
                       "per_step_overhead_ms": round((wf_single - direct_single) / STEPS * 1000, 1),
                       "ratio": round(wf_single / direct_single, 2)},
        "concurrent_runs": {"runs": RUNS, "direct_seconds": round(direct_many, 2),
                            "workflow_seconds": round(wf_many, 2), "ratio": round(wf_many / direct_many, 2)},
    }


def main() -> dict[str, Any]:
    with MockLLM(SCRIPT) as llm, ControlPlane() as plane:
        install_crds(plane)
        worker = [{"apiVersion": "kagent.dev/v1alpha1", "kind": "Agent",
                   "metadata": {"name": "worker", "namespace": "bench"},
                   "spec": {"model": {"provider": "vllm", "name": "m", "endpoint": llm.openai_base_url},
                            "replicas": 0}}]
        runtime = RuntimeProcess(worker).start()
        plane.create_namespace("bench")
        plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(worker))
        env = {"KAGENT_WORKFLOW_AGENT_URLS": json.dumps({"worker": runtime.url})}
        controller = ControllerProcess(plane, identity="bench", webhook=False, env=env,
                                       extra_args=["--workers", "16"]).start()
        try:
            result = asyncio.run(measure(plane, runtime))
        finally:
            controller.stop()
            runtime.stop()
            runtime.cleanup()
    path = write_result("workflow_overhead", result)
    print(f"workflow_overhead: {result}  ({path})")
    return result


if __name__ == "__main__":
    main()
