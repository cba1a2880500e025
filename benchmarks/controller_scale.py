"""1,000 Agents applied at once: time until all are Accepted with their children created,
against applying the same children directly (the floor any controller has to pay), and the
controller's memory at 1,000 and 5,000 Agents.

Agents run with replicas 0 so the measure is the controller and the API server, not kwok's pod
simulation on one fake node.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

from lightkube import AsyncClient, KubeConfig

from benchmarks.common import rss_mib, write_result
from kagent.api.manifests import parse_resource
from kagent.local.controlplane import install_crds
from kagent.controller.render import AgentInputs, render_agent
from kagent.kube import KAGENT_RESOURCES, apply
from kagent.local.controller import ControllerProcess
from kagent.local.controlplane import ControlPlane

CONCURRENCY = 16


def agent_manifest(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "kagent.dev/v1alpha1", "kind": "Agent",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"model": {"provider": "openai", "name": "gpt-4o-mini"},
                 "systemPrompt": f"You are agent {name}.", "replicas": 0},
    }


async def apply_all(client: AsyncClient, manifests: list[dict[str, Any]]) -> None:
    semaphore = asyncio.Semaphore(CONCURRENCY)

    async def one(manifest: dict[str, Any]) -> None:
        async with semaphore:
            await apply(client, manifest)

    await asyncio.gather(*(one(m) for m in manifests))


async def count_accepted(client: AsyncClient, namespace: str) -> int:
    accepted = 0
    async for agent in client.list(KAGENT_RESOURCES["Agent"], namespace=namespace):
        status = agent.get("status") or {}
        if any(c["type"] == "Accepted" and c["status"] == "True" for c in status.get("conditions") or []):
            accepted += 1
    return accepted


async def wait_accepted(client: AsyncClient, namespace: str, count: int, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        accepted = await count_accepted(client, namespace)
        print(f"  {accepted}/{count} accepted after {time.monotonic() - started:.0f}s", file=sys.stderr,
              flush=True)
        if accepted >= count:
            return time.monotonic() - started
        await asyncio.sleep(1.0)
    raise TimeoutError(f"{namespace}: not all {count} agents accepted within {timeout}s")


def children_for(name: str, namespace: str) -> list[dict[str, Any]]:
    agent = parse_resource(agent_manifest(name, namespace))
    agent.metadata.uid = "00000000-0000-0000-0000-000000000000"
    objects = render_agent(AgentInputs(agent=agent)).objects  # type: ignore[arg-type]
    for obj in objects:
        obj["metadata"].pop("ownerReferences")  # no owner exists in the baseline namespace
    return objects


async def measure(plane: ControlPlane, agents: int, memory_points: list[int]) -> dict[str, Any]:
    client = AsyncClient(config=KubeConfig.from_file(plane.kubeconfig), field_manager="bench")
    # Baseline: the same children, applied directly.
    plane.create_namespace("baseline")
    baseline_objects = [o for i in range(agents) for o in children_for(f"agent-{i}", "baseline")]
    started = time.monotonic()
    await apply_all(client, baseline_objects)
    direct = time.monotonic() - started
    plane.delete_namespace("baseline")

    controller = ControllerProcess(plane, identity="bench", webhook=False, lease_seconds=15,
                                   extra_args=["--workers", "16"]).start()
    assert controller.process is not None
    result: dict[str, Any] = {"agents": agents, "direct_children_seconds": round(direct, 2),
                              "children_per_agent": len(baseline_objects) // agents}
    idle = rss_mib(controller.process.pid)
    try:
        plane.create_namespace("bench")
        started = time.monotonic()
        await apply_all(client, [agent_manifest(f"agent-{i}", "bench") for i in range(agents)])
        applied = time.monotonic() - started
        await wait_accepted(client, "bench", agents, timeout=1800)
        total = time.monotonic() - started
        result.update({
            "apply_agents_seconds": round(applied, 2),
            "all_accepted_seconds": round(total, 2),
            "ratio_vs_direct": round(total / direct, 2),
            "controller_rss_mib": {"idle": round(idle, 1), str(agents): round(rss_mib(controller.process.pid), 1)},
        })
        created = agents
        for point in memory_points:
            await apply_all(client, [agent_manifest(f"agent-{i}", "bench") for i in range(created, point)])
            await wait_accepted(client, "bench", point, timeout=3600)
            created = point
            await asyncio.sleep(5)
            result["controller_rss_mib"][str(point)] = round(rss_mib(controller.process.pid), 1)
    finally:
        controller.stop()
        await client.close()
    return result


def main(agents: int = 1000, memory_points: tuple[int, ...] = (5000,)) -> dict[str, Any]:
    with ControlPlane(extra_apiserver_args=["--max-requests-inflight=800",
                                            "--max-mutating-requests-inflight=400"]) as plane:
        install_crds(plane)
        result = asyncio.run(measure(plane, agents, list(memory_points)))
    path = write_result("controller_scale", result)
    print(f"controller_scale: {result}  ({path})")
    return result


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    points = tuple(int(x) for x in sys.argv[2:]) or (5000,)
    main(count, points)
