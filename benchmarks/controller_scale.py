"""1,000 Agents applied at once: time until all are Accepted with their children created,
against applying the same children directly (the floor any controller has to pay), and the
controller's memory at 2,000 and 5,000 Agents.

The two are measured in alternating rounds (direct, controller, direct, controller) and the
ratio is of the sums, so a shared machine's drifting load does not favour either side.

Agents run with replicas 0 so the measure is the controller and the API server, not kwok's pod
simulation on one fake node. Progress is followed with a watch (not by listing every Agent each
second, which would load the API server the baseline does not pay for). The API server's own
request counters give the requests each phase cost, and the CPU seconds of every process a
phase loads (etcd, API server, controller-manager, scheduler, kwok, the controller, this client),
counted until the work is done (Deployments observed; Agents Ready), give a second ratio that a
busy machine's load does not distort.
"""

from __future__ import annotations

import asyncio
import json
import os
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
                    "accepted": is_true(conditions, "Accepted"), "ready": is_true(conditions, "Ready")}

        self.http = watch_http_client(plane.kubeconfig)
        spec = WatchSpec("Agent", "kagent.dev/v1alpha1", "agents",
                         field_selector=f"metadata.namespace={namespace}", transform=accepted_only)
        self.informer = Informer(self.http, spec)
        self.task = asyncio.create_task(self.informer.run())

    def count(self, condition: str = "accepted") -> int:
        return sum(1 for agent in self.informer.store.list() if agent[condition])

    async def wait(self, count: int, timeout: float, started: float, ready: bool = False) -> float:
        condition = "ready" if ready else "accepted"
        deadline = time.monotonic() + timeout
        last_report = 0.0
        while time.monotonic() < deadline:
            done = self.count(condition)
            now = time.monotonic()
            if done >= count:
                return now - started
            if now - last_report >= 5:
                print(f"  {done}/{count} {condition} after {now - started:.0f}s", file=sys.stderr, flush=True)
                last_report = now
            await asyncio.sleep(0.05)
        raise TimeoutError(f"not all {count} agents {condition} within {timeout}s (got {self.count(condition)})")

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
        # Not Kagent's: the running controller's watches (selected by this label) ignore them.
        obj["metadata"]["labels"].pop("app.kubernetes.io/managed-by")
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


def summarize(delta: Counter[tuple[str, str]], agents: int) -> dict[str, Any]:
    writes = sum(n for (verb, _), n in delta.items() if verb in WRITE_VERBS)
    gets = sum(n for (verb, _), n in delta.items() if verb == "GET")
    by_resource = Counter[str]()
    for (verb, resource), n in delta.items():
        if verb in WRITE_VERBS:
            by_resource[resource] += n
    return {"writes_per_agent": round(writes / agents, 2), "gets_per_agent": round(gets / agents, 2),
            "writes_by_resource": dict(by_resource.most_common())}


def cpu_by_process(plane: ControlPlane, controller: ControllerProcess) -> Counter[str]:
    """CPU seconds used so far by every process a phase loads: the control plane's, the
    controller's and this one (the client)."""
    pids = {**plane.pids, "this benchmark": os.getpid()}
    if controller.process is not None:
        pids["kagent controller"] = controller.process.pid
    return Counter({name: cpu_seconds(pid) for name, pid in pids.items()})


def _rounded(cpu: Counter[str]) -> dict[str, float]:
    return {**{name: round(seconds, 1) for name, seconds in cpu.most_common()}, "total": round(sum(cpu.values()), 1)}


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


async def direct_round(plane: ControlPlane, client: AsyncClient, controller: ControllerProcess, agents: int,
                       namespace: str) -> tuple[float, Counter[tuple[str, str]], Counter[str]]:
    """Apply the children of ``agents`` Agents directly; the time, API requests and CPU it took
    (until the Deployment controller is done with them too)."""
    plane.create_namespace(namespace)
    objects = [o for i in range(agents) for o in children_for(f"agent-{i}", namespace)]
    before, cpu = api_requests(plane), cpu_by_process(plane, controller)
    started = time.monotonic()
    await apply_all(client, objects)
    elapsed = time.monotonic() - started
    await settle(plane, namespace, agents)
    requests = api_requests(plane) - before
    cpu = cpu_by_process(plane, controller) - cpu
    # Gone before the next round: its deletion must not run beside a measured phase.
    plane.kubectl("delete", "namespace", namespace, "--wait=true", timeout=900)
    return elapsed, requests, cpu


async def settle(plane: ControlPlane, namespace: str, agents: int, timeout: float = 600) -> None:
    """Until every Deployment of the namespace is observed (the Deployment controller's share of
    the work is done), so CPU and requests of both phases cover the same work."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listed = json.loads(plane.kubectl("get", "deployments", "-n", namespace, "-o", "json").stdout)["items"]
        observed = sum(1 for d in listed if (d.get("status") or {}).get("observedGeneration", 0)
                       >= d["metadata"].get("generation", 1))
        if observed >= agents:
            return
        await asyncio.sleep(1)


async def controller_round(plane: ControlPlane, client: AsyncClient, controller: ControllerProcess,
                           agents: int, namespace: str) -> tuple[float, Counter[tuple[str, str]], Counter[str]]:
    """Apply ``agents`` Agents; the time until all are Accepted, then (unmeasured) until all are
    Ready, and the API requests and CPU it took."""
    plane.create_namespace(namespace)
    watcher = AcceptedAgents(plane, namespace)
    try:
        await asyncio.wait_for(watcher.informer.synced.wait(), 120)
        before, cpu = api_requests(plane), cpu_by_process(plane, controller)
        started = time.monotonic()
        await apply_all(client, [agent_manifest(f"agent-{i}", namespace) for i in range(agents)])
        elapsed = await watcher.wait(agents, timeout=3600, started=started)
        await settle(plane, namespace, agents)
        await watcher.wait(agents, timeout=3600, started=started, ready=True)
        requests = api_requests(plane) - before
        cpu = cpu_by_process(plane, controller) - cpu
    finally:
        await watcher.close()
    children = count_children(plane, namespace)
    assert all(n == agents for n in children.values()), f"children missing: {children}"
    return elapsed, requests, cpu


async def measure(plane: ControlPlane, agents: int, memory_points: list[int], rounds: int) -> dict[str, Any]:
    """``rounds`` times: the children applied directly, then the same number of Agents through the
    controller. Alternating the two keeps a busy machine's drifting load from favouring either."""
    # A generous timeout: on a busy machine a slow answer is part of the measure, not an error.
    client = AsyncClient(config=KubeConfig.from_file(plane.kubeconfig), field_manager="bench",
                         timeout=httpx2.Timeout(120.0))
    controller = ControllerProcess(plane, identity="bench", webhook=False, lease_seconds=15,
                                   extra_args=["--workers", "16"]).start()
    assert controller.process is not None
    idle = rss_mib(controller.process.pid)
    result: dict[str, Any] = {"agents": agents, "rounds": rounds,
                              "children_per_agent": len(children_for("x", "x"))}
    direct_requests: Counter[tuple[str, str]] = Counter()
    controller_requests: Counter[tuple[str, str]] = Counter()
    direct_cpu: Counter[str] = Counter()
    controller_cpu: Counter[str] = Counter()
    per_round = []
    try:
        for r in range(rounds):
            direct, requests, cpu = await direct_round(plane, client, controller, agents, f"baseline-{r}")
            direct_requests += requests
            direct_cpu += cpu
            accepted, requests, cpu = await controller_round(plane, client, controller, agents, f"bench-{r}")
            controller_requests += requests
            controller_cpu += cpu
            per_round.append({"direct_children_seconds": round(direct, 2),
                              "all_accepted_seconds": round(accepted, 2),
                              "ratio_vs_direct": round(accepted / direct, 2)})
            print(f"  round {r + 1}: {agents} agents Accepted in {accepted:.1f}s, their children applied "
                  f"directly in {direct:.1f}s (ratio {accepted / direct:.2f})", file=sys.stderr, flush=True)
        total_direct = sum(p["direct_children_seconds"] for p in per_round)
        total_accepted = sum(p["all_accepted_seconds"] for p in per_round)
        created = agents * rounds
        result.update({
            "per_round": per_round,
            "ratio_vs_direct": round(total_accepted / total_direct, 2),
            "cpu_seconds": {"direct": _rounded(direct_cpu), "controller": _rounded(controller_cpu),
                            "ratio": round(sum(controller_cpu.values()) / sum(direct_cpu.values()), 2)},
            "controller_metrics": controller_counters(controller),
            "api_requests": {"direct": summarize(direct_requests, created),
                             "controller": summarize(controller_requests, created)},
            "controller_rss_mib": {"idle": round(idle, 1), str(created): round(rss_mib(controller.process.pid), 1)},
        })
        plane.create_namespace("bench-more")
        watcher = AcceptedAgents(plane, "bench-more")
        try:
            await asyncio.wait_for(watcher.informer.synced.wait(), 120)
            for point in memory_points:
                if point <= created:
                    continue
                started = time.monotonic()
                more = point - agents * rounds
                await apply_all(client, [agent_manifest(f"agent-{i}", "bench-more")
                                         for i in range(created - agents * rounds, more)])
                await watcher.wait(more, timeout=3600, started=started)
                created = point
                await asyncio.sleep(5)
                result["controller_rss_mib"][str(point)] = round(rss_mib(controller.process.pid), 1)
        finally:
            await watcher.close()
    finally:
        controller.stop()
        await client.close()
    return result


def main(agents: int = 1000, memory_points: tuple[int, ...] = (5000,), rounds: int = 2) -> dict[str, Any]:
    with ControlPlane(extra_apiserver_args=["--max-requests-inflight=800",
                                            "--max-mutating-requests-inflight=400"]) as plane:
        install_crds(plane)
        result = asyncio.run(measure(plane, agents, list(memory_points), rounds))
    path = write_result("controller_scale", result)
    print(f"controller_scale: {result}  ({path})")
    return result


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    points = tuple(int(x) for x in sys.argv[2:]) or (5000,)
    main(count, points)
