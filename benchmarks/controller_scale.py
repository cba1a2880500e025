"""1,000 Agents applied at once: time until all are Accepted with their children created,
against applying the same children directly (the floor any controller has to pay), and the
controller's memory at 1,000 and 5,000 Agents.

Agents run with replicas 0 so the measure is the controller and the API server, not kwok's pod
simulation on one fake node. Progress is followed with a watch (not by listing every Agent each
second, which would load the API server the baseline does not pay for). The API server's own
request counters give the requests each phase cost.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from typing import Any

import httpx2
from lightkube import AsyncClient, KubeConfig

from benchmarks.common import cpu_seconds, rss_mib, write_result
from kagent.api.manifests import parse_resource
from kagent.controller.render import AgentInputs, render_agent
from kagent.kube import apply, watch_http_client
from kagent.kube.conditions import is_true
from kagent.kube.informer import Informer, WatchSpec
from kagent.local.controller import ControllerProcess
from kagent.local.controlplane import ControlPlane, install_crds

CONCURRENCY = 16
WRITE_VERBS = ("POST", "PUT", "PATCH", "APPLY", "DELETE")  # APPLY: server-side apply


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


class AcceptedAgents:
    """Follows the Agents of one namespace with a watch and counts the Accepted ones."""

    def __init__(self, plane: ControlPlane, namespace: str) -> None:
        def accepted_only(obj: dict[str, Any]) -> dict[str, Any]:
            conditions = (obj.get("status") or {}).get("conditions")
            return {"metadata": {k: obj["metadata"][k] for k in ("name", "namespace", "resourceVersion")},
                    "accepted": is_true(conditions, "Accepted")}

        self.http = watch_http_client(plane.kubeconfig)
        spec = WatchSpec("Agent", "kagent.dev/v1alpha1", "agents",
                         field_selector=f"metadata.namespace={namespace}", transform=accepted_only)
        self.informer = Informer(self.http, spec)
        self.task = asyncio.create_task(self.informer.run())

    def count(self) -> int:
        return sum(1 for agent in self.informer.store.list() if agent["accepted"])

    async def wait(self, count: int, timeout: float, started: float) -> float:
        deadline = time.monotonic() + timeout
        last_report = 0.0
        while time.monotonic() < deadline:
            accepted = self.count()
            now = time.monotonic()
            if accepted >= count:
                return now - started
            if now - last_report >= 5:
                print(f"  {accepted}/{count} accepted after {now - started:.0f}s", file=sys.stderr, flush=True)
                last_report = now
            await asyncio.sleep(0.05)
        raise TimeoutError(f"not all {count} agents accepted within {timeout}s (got {self.count()})")

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.http.aclose()


def children_for(name: str, namespace: str) -> list[dict[str, Any]]:
    agent = parse_resource(agent_manifest(name, namespace))
    agent.metadata.uid = "00000000-0000-0000-0000-000000000000"
    objects = render_agent(AgentInputs(agent=agent)).objects  # type: ignore[arg-type]
    for obj in objects:
        obj["metadata"].pop("ownerReferences")  # no owner exists in the baseline namespace
    return objects


def api_requests(plane: ControlPlane) -> Counter[tuple[str, str]]:
    """The API server's request counters by (verb, resource)."""
    counts: Counter[tuple[str, str]] = Counter()
    for line in plane.kubectl("get", "--raw", "/metrics").stdout.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(part.split("=", 1) for part in line[line.index("{") + 1:line.rindex("}")].split(",")
                      if "=" in part)
        verb, resource = labels.get("verb", "").strip('"'), labels.get("resource", "").strip('"')
        counts[(verb, resource)] += int(float(line.rsplit(" ", 1)[1]))
    return counts


def summarize(before: Counter[tuple[str, str]], after: Counter[tuple[str, str]], agents: int) -> dict[str, Any]:
    delta = after - before
    writes = sum(n for (verb, _), n in delta.items() if verb in WRITE_VERBS)
    gets = sum(n for (verb, _), n in delta.items() if verb == "GET")
    by_resource = Counter[str]()
    for (verb, resource), n in delta.items():
        if verb in WRITE_VERBS:
            by_resource[resource] += n
    return {"writes_per_agent": round(writes / agents, 2), "gets_per_agent": round(gets / agents, 2),
            "writes_by_resource": dict(by_resource.most_common())}


def controller_counters(controller: ControllerProcess) -> dict[str, float]:
    """The controller's reconcile and apply counters."""
    wanted = ("kagent_controller_reconcile_total", "kagent_controller_applies_total")
    counters: dict[str, float] = {}
    for line in controller.metrics().splitlines():
        if line.startswith(wanted):
            name, value = line.rsplit(" ", 1)
            counters[name.removeprefix("kagent_controller_")] = float(value)
    return counters


def count_children(plane: ControlPlane, namespace: str) -> dict[str, int]:
    kinds = ("serviceaccounts", "configmaps", "deployments", "services")
    return {kind: len(plane.kubectl("get", kind, "-n", namespace, "-l", "app.kubernetes.io/managed-by=kagent",
                                    "-o", "name").stdout.split()) for kind in kinds}


async def measure(plane: ControlPlane, agents: int, memory_points: list[int]) -> dict[str, Any]:
    # A generous timeout: on a busy machine a slow answer is part of the measure, not an error.
    client = AsyncClient(config=KubeConfig.from_file(plane.kubeconfig), field_manager="bench",
                         timeout=httpx2.Timeout(120.0))
    # Baseline: the same children, applied directly.
    plane.create_namespace("baseline")
    baseline_objects = [o for i in range(agents) for o in children_for(f"agent-{i}", "baseline")]
    requests_before = api_requests(plane)
    started = time.monotonic()
    await apply_all(client, baseline_objects)
    direct = time.monotonic() - started
    direct_requests = summarize(requests_before, api_requests(plane), agents)
    # Gone before the controller starts: its deletion must not run beside the measured phase.
    plane.kubectl("delete", "namespace", "baseline", "--wait=true", timeout=900)

    controller = ControllerProcess(plane, identity="bench", webhook=False, lease_seconds=15,
                                   extra_args=["--workers", "16"]).start()
    assert controller.process is not None
    result: dict[str, Any] = {"agents": agents, "direct_children_seconds": round(direct, 2),
                              "children_per_agent": len(baseline_objects) // agents}
    idle = rss_mib(controller.process.pid)
    cpu_idle = cpu_seconds(controller.process.pid)
    plane.create_namespace("bench")
    watcher = AcceptedAgents(plane, "bench")
    try:
        await asyncio.wait_for(watcher.informer.synced.wait(), 60)
        requests_before = api_requests(plane)
        started = time.monotonic()
        await apply_all(client, [agent_manifest(f"agent-{i}", "bench") for i in range(agents)])
        applied = time.monotonic() - started
        total = await watcher.wait(agents, timeout=1800, started=started)
        controller_requests = summarize(requests_before, api_requests(plane), agents)
        children = count_children(plane, "bench")
        assert all(n == agents for n in children.values()), f"children missing: {children}"
        result.update({
            "apply_agents_seconds": round(applied, 2),
            "all_accepted_seconds": round(total, 2),
            "ratio_vs_direct": round(total / direct, 2),
            "controller_cpu_seconds": round(cpu_seconds(controller.process.pid) - cpu_idle, 1),
            "controller_metrics": controller_counters(controller),
            "api_requests": {"direct": direct_requests, "controller": controller_requests},
            "controller_rss_mib": {"idle": round(idle, 1), str(agents): round(rss_mib(controller.process.pid), 1)},
        })
        print(f"  {agents} agents: {total:.1f}s vs {direct:.1f}s direct (ratio {total / direct:.2f})",
              file=sys.stderr, flush=True)
        created = agents
        for point in memory_points:
            started = time.monotonic()
            await apply_all(client, [agent_manifest(f"agent-{i}", "bench") for i in range(created, point)])
            await watcher.wait(point, timeout=3600, started=started)
            created = point
            await asyncio.sleep(5)
            result["controller_rss_mib"][str(point)] = round(rss_mib(controller.process.pid), 1)
    finally:
        await watcher.close()
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
