"""What isolation costs a code-tool run: the time of one `print(1)` program in the strict
sandbox (every layer) against a bare `python -I -S -B` subprocess (the baseline: a fresh
interpreter, which every run needs anyway) and against the in-process guard alone (roughly what
the sandbox did before it had namespaces, a new root and seccomp).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable

from benchmarks.common import percentile, write_result
from kagent.runtime.tools.sandbox import SandboxLayers, run_python, seccomp_programs

RUNS = 30
GUARD_ONLY = SandboxLayers(namespaces=False, mount=False, landlock=False, seccomp=False)


async def bare_interpreter() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-I", "-S", "-B", "-c", "print(1)",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    await process.communicate()


async def strict() -> None:
    result = await run_python("print(1)")
    assert result.ok and len(result.layers) == 8, result


async def guard_only() -> None:
    result = await run_python("print(1)", isolation="best-effort", layers=GUARD_ONLY)
    assert result.ok, result


async def timed(run: Callable[[], Awaitable[None]]) -> list[float]:
    await run()  # warm
    samples = []
    for _ in range(RUNS):
        started = time.perf_counter()
        await run()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


async def measure() -> dict[str, object]:
    seccomp_programs()
    results: dict[str, object] = {"runs": RUNS}
    # Interleaved rounds, so a busy machine slows every variant alike.
    samples: dict[str, list[float]] = {"bare": [], "guard_only": [], "strict": []}
    for _ in range(3):
        samples["bare"] += await timed(bare_interpreter)
        samples["guard_only"] += await timed(guard_only)
        samples["strict"] += await timed(strict)
    for name, values in samples.items():
        results[f"{name}_p50_ms"] = round(percentile(values, 50), 1)
        results[f"{name}_p95_ms"] = round(percentile(values, 95), 1)
    base = percentile(samples["bare"], 50)
    results["strict_vs_bare_p50_ratio"] = round(percentile(samples["strict"], 50) / base, 2)
    results["guard_only_vs_bare_p50_ratio"] = round(percentile(samples["guard_only"], 50) / base, 2)
    return results


def main() -> None:
    results = asyncio.run(measure())
    path = write_result("sandbox_overhead", results)
    for key, value in results.items():
        print(f"{key}: {value}")
    print(f"written to {path}")


if __name__ == "__main__":
    main()
