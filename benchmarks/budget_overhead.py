"""What enforcing a Budget costs a request: the same agent served twice by `kagent runtime`, once
without and once under a Budget whose counters are in a real Redis (one reserve transaction
before the model call, one settle transaction and one ledger write after), with the official
openai client alternating one request to each (p50/p99 ratio, overhead in ms) and each runtime
process's CPU time per request. The Budget's limits are far away, so every request is admitted.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx
from openai import AsyncOpenAI

from benchmarks.common import cpu_seconds, percentile, write_result
from kagent.local.services import RedisServer
from kagent.mockllm import MockLLM
from kagent.testing.runtime import RuntimeProcess

SCRIPT = {"default": {"content": "Sure, here is a short answer.",
                      "usage": {"input_tokens": 20, "output_tokens": 8}}}
REQUESTS = 300
TARGET_OVERHEAD_MS = 3.0


def documents(name: str, model_url: str, redis_url: str | None) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = [{
        "apiVersion": "kagent.dev/v1alpha1", "kind": "Agent",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"model": {"provider": "vllm", "name": "bench-model", "endpoint": model_url,
                           "pricing": {"inputPerMillion": 1, "outputPerMillion": 2}}},
    }]
    if redis_url:
        docs.append({
            "apiVersion": "kagent.dev/v1alpha1", "kind": "Budget",
            "metadata": {"name": f"bench-{uuid.uuid4().hex[:6]}", "namespace": "default"},
            "spec": {"limits": [{"window": "day", "tokens": 10**12, "requests": 10**9},
                                {"window": "month", "cost": 10**6}],
                     "counter": {"type": "redis", "url": redis_url}},
        })
    return docs


async def measure(plain: RuntimeProcess, budgeted: RuntimeProcess) -> dict[str, Any]:
    timeout = httpx.Timeout(120, connect=60)
    clients = {name: AsyncOpenAI(base_url=r.openai_base_url, api_key="x", max_retries=2,
                                 timeout=timeout)
               for name, r in (("plain", plain), ("budgeted", budgeted))}
    models = {"plain": plain.name, "budgeted": budgeted.name}
    times: dict[str, list[float]] = {"plain": [], "budgeted": []}
    pids = {"plain": plain._process.pid, "budgeted": budgeted._process.pid}  # type: ignore[union-attr]
    for warm in range(20):
        for name, client in clients.items():
            await client.chat.completions.create(model=models[name], messages=[
                {"role": "user", "content": f"w{warm}"}])
    cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    for i in range(REQUESTS):
        for name, client in (clients.items() if i % 2 else reversed(list(clients.items()))):
            started = time.perf_counter()
            await client.chat.completions.create(model=models[name], messages=[
                {"role": "user", "content": f"q{i}"}])
            times[name].append(time.perf_counter() - started)
    cpu = {name: (cpu_seconds(pid) - cpu_before[name]) / REQUESTS for name, pid in pids.items()}
    for client in clients.values():
        await client.close()
    ms = {name: {"p50": round(percentile(t, 50) * 1000, 2), "p99": round(percentile(t, 99) * 1000, 2)}
          for name, t in times.items()}
    overhead = round(ms["budgeted"]["p50"] - ms["plain"]["p50"], 2)
    return {
        "requests": REQUESTS, "latency_ms": ms,
        "ratio": {q: round(ms["budgeted"][q] / ms["plain"][q], 2) for q in ("p50", "p99")},
        "overhead_ms_p50": overhead,
        "runtime_cpu_ms_per_request": {n: round(c * 1000, 2) for n, c in cpu.items()},
        "targets": {"overhead_ms_p50": {"target": TARGET_OVERHEAD_MS,
                                        "met": overhead <= TARGET_OVERHEAD_MS}},
    }


def main() -> dict[str, Any]:
    with MockLLM(SCRIPT) as mock, RedisServer() as redis:
        plain = RuntimeProcess(documents("plain", mock.openai_base_url, None)).start()
        budgeted = RuntimeProcess(documents("budgeted", mock.openai_base_url, redis.url)).start()
        try:
            result = asyncio.run(measure(plain, budgeted))
        finally:
            for runtime in (plain, budgeted):
                runtime.stop()
                runtime.cleanup()
    path = write_result("budget_overhead", result)
    print(f"budget_overhead: {result}  ({path})")
    return result


if __name__ == "__main__":
    main()
