"""Workflow orchestration cost: a 5-step pipeline run as a WorkflowRun against the same five
A2A calls made directly with asyncio (the same shared, pooled client), per step (single runs,
one at a time) and for 200 concurrent runs.

The agent is a real `kagent runtime` process behind the scripted model; the controller runs as a
process against the real control plane and reaches the agent through KAGENT_WORKFLOW_AGENT_URLS.
A run is timed from the request that creates it to the watch event that shows it finished (no
polling interval in the measurement). Single runs are repeated and the median is reported, as
the direct calls are.

``KAGENT_BENCH_PROFILE=1`` samples the controller with py-spy (if installed) while it works and
writes a flame graph next to the results.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from lightkube import AsyncClient, KubeConfig

from benchmarks.common import RESULTS, write_result
from kagent.agentclient import ask_agent_at
from kagent.kube import KAGENT_RESOURCES
from kagent.local.controller import ControllerProcess
from kagent.local.controlplane import ControlPlane, install_crds
from kagent.mockllm import MockLLM
from kagent.testing.runtime import RuntimeProcess

STEPS = 5
RUNS = int(os.environ.get("KAGENT_BENCH_WORKFLOW_RUNS") or 200)
SINGLE_REPEATS = 15
SCRIPT = {"default": {"content": "ok: {{last_user}}"}}
Run = KAGENT_RESOURCES["WorkflowRun"]


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


async def timed_direct(url: str, n: str) -> float:
    started = time.perf_counter()
    await direct_run(url, n)
    return time.perf_counter() - started


async def run_workflows(client: AsyncClient, names: list[str], timeout: float) -> float:
    """Create the runs and wait on a watch until all finished; seconds from the first create
    to the event of the last finish. A failed run fails the benchmark. (A watch without a
    resourceVersion starts with every existing run, so no finish can be missed.)"""
    remaining = set(names)

    async def finished() -> None:
        async for _, run in client.watch(Run, namespace="bench"):
            status = run.get("status") or {}
            if run.metadata.name in remaining and status.get("phase") in ("Succeeded", "Failed"):
                if status["phase"] == "Failed":
                    raise RuntimeError(f"run {run.metadata.name} failed: {status}")
                remaining.discard(run.metadata.name)
                if not remaining:
                    return

    started = time.perf_counter()
    watching = asyncio.ensure_future(asyncio.wait_for(finished(), timeout))
    await asyncio.gather(*(client.create(Run.from_dict(run_doc(n))) for n in names))
    await watching
    return time.perf_counter() - started


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_profiler(pid: int, name: str) -> subprocess.Popen[bytes] | None:
    py_spy = Path(sys.executable).with_name("py-spy")
    if not os.environ.get("KAGENT_BENCH_PROFILE") or not py_spy.exists():
        return None
    RESULTS.mkdir(exist_ok=True)
    return subprocess.Popen([str(py_spy), "record", "-p", str(pid), "-r", "200", "--nonblocking",
                             "--format", "raw", "-o", str(RESULTS / f"workflow_overhead_{name}.txt")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_profiler(profiler: subprocess.Popen[bytes] | None) -> None:
    if profiler is not None:
        profiler.send_signal(2)
        profiler.wait(60)


async def measure(plane: ControlPlane, runtime: RuntimeProcess, controller_pid: int) -> dict[str, Any]:
    client = AsyncClient(config=KubeConfig.from_file(plane.kubeconfig), field_manager="bench")
    await direct_run(runtime.url, "warm-up")
    plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(pipeline()))
    await run_workflows(client, ["warm-up"], 120)

    cpu, started = cpu_seconds(controller_pid), time.perf_counter()
    await asyncio.sleep(3)  # the controller's own idle work (leases, watches) is not the runs'
    idle_rate = (cpu_seconds(controller_pid) - cpu) / (time.perf_counter() - started)

    def busy_cpu(cpu_before: float, since: float) -> float:
        return cpu_seconds(controller_pid) - cpu_before - idle_rate * (time.perf_counter() - since)

    direct_single, wf_single, cpu_single = [], [], 0.0
    profiler = start_profiler(controller_pid, "single")
    for i in range(SINGLE_REPEATS):  # interleaved, so both see the same machine
        direct_single.append(await timed_direct(runtime.url, f"single-{i}"))
        cpu, started = cpu_seconds(controller_pid), time.perf_counter()
        wf_single.append(await run_workflows(client, [f"single-{i}"], 120))
        await asyncio.sleep(1.5)  # what the run's end sets off (events, clean-up) counts too
        cpu_single += busy_cpu(cpu, started)
    stop_profiler(profiler)
    direct_one, wf_one = statistics.median(direct_single), statistics.median(wf_single)
    # each workflow run against the direct calls made just before it, so a machine that gets
    # busier or quieter during the benchmark does not count as overhead
    paired = [(w - d) / STEPS * 1000 for d, w in zip(direct_single, wf_single, strict=True)]
    print(f"single runs: direct {[round(t, 3) for t in direct_single]}, "
          f"workflow {[round(t, 3) for t in wf_single]}", flush=True)

    started = time.perf_counter()
    await asyncio.gather(*(direct_run(runtime.url, f"d{i}") for i in range(RUNS)))
    direct_many = time.perf_counter() - started
    profiler = start_profiler(controller_pid, "concurrent")
    cpu, started = cpu_seconds(controller_pid), time.perf_counter()
    wf_many = await run_workflows(client, [f"r{i}" for i in range(RUNS)], 1800)
    await asyncio.sleep(1.5)
    cpu_many = busy_cpu(cpu, started)
    stop_profiler(profiler)
    await client.close()
    return {
        "steps_per_run": STEPS,
        "single_run": {"repeats": SINGLE_REPEATS, "direct_seconds": round(direct_one, 3),
                       "workflow_seconds": round(wf_one, 3),
                       "per_step_overhead_ms": round(statistics.median(paired), 1),
                       "per_step_overhead_ms_of_medians": round((wf_one - direct_one) / STEPS * 1000, 1),
                       "ratio": round(wf_one / direct_one, 2),
                       "controller_cpu_ms_per_step": round(cpu_single / (SINGLE_REPEATS * STEPS) * 1000, 1)},
        "concurrent_runs": {"runs": RUNS, "direct_seconds": round(direct_many, 2),
                            "workflow_seconds": round(wf_many, 2),
                            "per_step_overhead_ms": round((wf_many - direct_many) / (RUNS * STEPS) * 1000, 2),
                            "ratio": round(wf_many / direct_many, 2),
                            "controller_cpu_ms_per_step": round(cpu_many / (RUNS * STEPS) * 1000, 1)},
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
            assert controller.process is not None
            result = asyncio.run(measure(plane, runtime, controller.process.pid))
        finally:
            controller.stop()
            runtime.stop()
            runtime.cleanup()
    path = write_result("workflow_overhead", result)
    print(f"workflow_overhead: {result}  ({path})")
    return result


if __name__ == "__main__":
    main()
