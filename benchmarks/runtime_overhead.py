"""The runtime's cost per request: the official openai client through `kagent runtime` against
calling the same scripted model directly with the same client (p50 and p99 ratio), the runtime
process's CPU time per plain request (OpenAI-compatible API and A2A), throughput at 1, 10 and
100 concurrent conversations, and memory per conversation (in-memory session store).

The scripted model runs in a thread of this process and serves both sides, so what differs is
exactly the runtime's path; the runtime is a separate process, so its CPU time is its own.
Targets (checked in ``targets``): p50 overhead at most 6 ms, at most 5 ms of runtime CPU per
plain request.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx
from openai import AsyncOpenAI

from benchmarks.common import cpu_seconds, percentile, rss_mib, write_result
from kagent.mockllm import MockLLM
from kagent.testing.runtime import RuntimeProcess

SCRIPT = {"default": {"content": "Sure, here is a short answer.", "usage": {"input_tokens": 20, "output_tokens": 8}}}
REQUESTS = 300
TARGET_OVERHEAD_MS = 6.0
TARGET_CPU_MS = 5.0


def agent(model_url: str) -> list[dict[str, Any]]:
    return [{
        "apiVersion": "kagent.dev/v1alpha1", "kind": "Agent",
        "metadata": {"name": "bench", "namespace": "default"},
        "spec": {"model": {"provider": "vllm", "name": "bench-model", "endpoint": model_url},
                 "systemPrompt": "You are terse.", "memory": {"type": "in-memory",
                                                               "config": {"maxHistory": 20}}},
    }]


async def latencies(client: AsyncOpenAI, model: str, count: int, conversation: bool) -> list[float]:
    out = []
    headers = {"X-Conversation-Id": str(uuid.uuid4())} if conversation else {}
    for i in range(count):
        started = time.perf_counter()
        await client.chat.completions.create(model=model, messages=[{"role": "user", "content": f"q{i}"}],
                                             extra_headers=headers)
        out.append(time.perf_counter() - started)
    return out


async def paired_latencies(direct: AsyncOpenAI, through: AsyncOpenAI, pid: int,
                           count: int) -> tuple[list[float], list[float], float]:
    """Direct and through-the-runtime latencies, alternating one of each so a change in the
    machine's load hits both alike, and the runtime's CPU seconds per request (it is idle while
    the direct call runs)."""
    base: list[float] = []
    ours: list[float] = []
    headers = {"X-Conversation-Id": str(uuid.uuid4())}
    cpu_before = cpu_seconds(pid)
    for i in range(count):
        messages = [{"role": "user", "content": f"q{i}"}]
        started = time.perf_counter()
        await direct.chat.completions.create(model="bench-model", messages=messages)  # type: ignore[arg-type]
        base.append(time.perf_counter() - started)
        started = time.perf_counter()
        await through.chat.completions.create(model="bench", messages=messages,  # type: ignore[arg-type]
                                              extra_headers=headers)
        ours.append(time.perf_counter() - started)
    return base, ours, (cpu_seconds(pid) - cpu_before) / count


async def a2a_turns(url: str, count: int) -> list[float]:
    """Latencies of ``count`` turns of one A2A conversation (JSON-RPC SendMessage, one context
    id)."""
    context = str(uuid.uuid4())
    out = []
    async with httpx.AsyncClient(timeout=120) as client:
        for i in range(count):
            started = time.perf_counter()
            response = await client.post(url + "/", headers={"A2A-Version": "1.0"}, json={
                "jsonrpc": "2.0", "id": i, "method": "SendMessage",
                "params": {"message": {"messageId": str(uuid.uuid4()), "contextId": context,
                                       "role": "ROLE_USER", "parts": [{"text": f"q{i}"}]}},
            })
            out.append(time.perf_counter() - started)
            body = response.json()
            if "error" in body:
                raise RuntimeError(f"A2A request failed: {body['error']}")
    return out


async def throughput(client: AsyncOpenAI, model: str, conversations: int, per: int, conversation: bool) -> float:
    async def one() -> None:
        headers = {"X-Conversation-Id": str(uuid.uuid4())} if conversation else {}
        for i in range(per):
            await client.chat.completions.create(model=model, messages=[{"role": "user", "content": f"q{i}"}],
                                                 extra_headers=headers)

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(conversations)))
    return conversations * per / (time.perf_counter() - started)


async def measure(mock: MockLLM, runtime: RuntimeProcess) -> dict[str, Any]:
    # The same client settings on both sides. A pooled connection left idle while the other
    # side is measured is closed by the server's keep-alive timeout and may be reused just as it
    # closes: a retry of such a connection error keeps a long run from dying on it. A busy
    # machine can also keep 100 new connections in the listen backlog past the default 5 s.
    timeout = httpx.Timeout(120, connect=60)
    direct = AsyncOpenAI(base_url=mock.openai_base_url, api_key="x", max_retries=2,
                         timeout=timeout)
    through = AsyncOpenAI(base_url=runtime.openai_base_url, api_key="x", max_retries=2,
                          timeout=timeout)
    await latencies(direct, "bench-model", 20, False)  # warm up both paths
    await latencies(through, "bench", 20, True)
    assert runtime._process is not None
    pid = runtime._process.pid
    base, ours, openai_cpu = await paired_latencies(direct, through, pid, REQUESTS)
    await a2a_turns(runtime.url, 20)  # warm up
    cpu_before = cpu_seconds(pid)
    a2a = await a2a_turns(runtime.url, REQUESTS)
    a2a_cpu = (cpu_seconds(pid) - cpu_before) / REQUESTS
    result: dict[str, Any] = {
        "requests": REQUESTS,
        "direct_ms": {"p50": round(percentile(base, 50) * 1000, 2), "p99": round(percentile(base, 99) * 1000, 2)},
        "runtime_ms": {"p50": round(percentile(ours, 50) * 1000, 2), "p99": round(percentile(ours, 99) * 1000, 2)},
        "a2a_ms": {"p50": round(percentile(a2a, 50) * 1000, 2), "p99": round(percentile(a2a, 99) * 1000, 2)},
    }
    result["ratio"] = {q: round(result["runtime_ms"][q] / result["direct_ms"][q], 2) for q in ("p50", "p99")}
    result["overhead_ms_p50"] = round(result["runtime_ms"]["p50"] - result["direct_ms"]["p50"], 2)
    result["runtime_cpu_ms_per_request"] = {"openai": round(openai_cpu * 1000, 2),
                                            "a2a": round(a2a_cpu * 1000, 2)}
    result["throughput_rps"] = {}
    for conversations in (1, 10, 100):
        per = max(3, 300 // conversations)
        result["throughput_rps"][str(conversations)] = {
            "direct": round(await throughput(direct, "bench-model", conversations, per, False), 1),
            "runtime": round(await throughput(through, "bench", conversations, per, True), 1),
        }
    result["throughput_ratio_100"] = round(
        result["throughput_rps"]["100"]["runtime"] / result["throughput_rps"]["100"]["direct"], 2)
    result["targets"] = {
        "overhead_ms_p50": {"target": TARGET_OVERHEAD_MS,
                            "met": result["overhead_ms_p50"] <= TARGET_OVERHEAD_MS},
        "runtime_cpu_ms_per_request": {
            "target": TARGET_CPU_MS, "met": openai_cpu * 1000 <= TARGET_CPU_MS},
    }
    before = rss_mib(pid)
    for _ in range(10):  # 1,000 new conversations of one turn each, 100 at a time
        await throughput(through, "bench", 100, 1, True)
    await asyncio.sleep(1)
    after = rss_mib(pid)
    result["memory_per_conversation_kib"] = round((after - before) * 1024 / 1000, 2)
    result["runtime_rss_mib"] = round(after, 1)
    await direct.close()
    await through.close()
    return result


def main() -> dict[str, Any]:
    with MockLLM(SCRIPT) as mock:
        runtime = RuntimeProcess(agent(mock.openai_base_url)).start()
        try:
            result = asyncio.run(measure(mock, runtime))
        finally:
            runtime.stop()
            runtime.cleanup()
    path = write_result("runtime_overhead", result)
    print(f"runtime_overhead: {result}  ({path})")
    return result


if __name__ == "__main__":
    main()
