"""Run every benchmark: `python -m benchmarks [name …]`."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = ["runtime_overhead", "workflow_overhead", "controller_scale", "sandbox_overhead", "dashboard"]


def run(names: list[str]) -> None:
    for name in names or BENCHMARKS:
        module = importlib.import_module(f"benchmarks.{name}")
        module.main()


if __name__ == "__main__":
    run(sys.argv[1:])
