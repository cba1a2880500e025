"""The runtime's cost per request: the official openai client through `kagent runtime` against
calling the same scripted model directly with the same client (p50 and p99 ratio), throughput at
1, 10 and 100 concurrent conversations, and memory per conversation (in-memory session store).

Both sides run in separate processes from the client: the scripted model in a thread of this
process is shared by both, so what differs is exactly the runtime's path.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from openai import AsyncOpenAI

from benchmarks.common import percentile, rss_mib, write_result
from kagent.mockllm import MockLLM
from kagent.testing.runtime import RuntimeProcess

SCRIPT = {"default": {"content": "Sure, here is a short answer.", "usage": {"input_tokens": 20, "output_tokens": 8}}}
REQUESTS = 300


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
    direct = AsyncOpenAI(base_url=mock.openai_base_url, api_key="x", max_retries=0)
    through = AsyncOpenAI(base_url=runtime.openai_base_url, api_key="x", max_retries=0, timeout=120)
    await latencies(direct, "bench-model", 20, False)  # warm up both paths
    await latencies(through, "bench", 20, True)
    base = await latencies(direct, "bench-model", REQUESTS, False)
    ours = await latencies(through, "bench", REQUESTS, True)
    result: dict[str, Any] = {
        "requests": REQUESTS,
        "direct_ms": {"p50": round(percentile(base, 50) * 1000, 2), "p99": round(percentile(base, 99) * 1000, 2)},
        "runtime_ms": {"p50": round(percentile(ours, 50) * 1000, 2), "p99": round(percentile(ours, 99) * 1000, 2)},
    }
    result["ratio"] = {q: round(result["runtime_ms"][q] / result["direct_ms"][q], 2) for q in ("p50", "p99")}
    result["overhead_ms_p50"] = round(result["runtime_ms"]["p50"] - result["direct_ms"]["p50"], 2)
    result["throughput_rps"] = {}
    for conversations in (1, 10, 100):
        per = max(3, 300 // conversations)
        result["throughput_rps"][str(conversations)] = {
            "direct": round(await throughput(direct, "bench-model", conversations, per, False), 1),
            "runtime": round(await throughput(through, "bench", conversations, per, True), 1),
        }
    assert runtime._process is not None
    before = rss_mib(runtime._process.pid)
    for _ in range(10):  # 1,000 new conversations of one turn each, 100 at a time
        await throughput(through, "bench", 100, 1, True)
    await asyncio.sleep(1)
    after = rss_mib(runtime._process.pid)
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
