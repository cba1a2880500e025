"""Small helpers shared by the test modules."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

REAL_POD_TIER = pytest.mark.skipif(
    os.environ.get("KAGENT_REAL_PODS") != "1",
    reason="the real-pod tier runs with `make test` or `make test-real-pods`, which prepare the "
           "Kagent image and a real node first (KAGENT_REAL_PODS=1); REAL_PODS=0 left it out",
)
"""Marks the tests that run the Kagent image as real pods on a real node."""

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def seed_documents() -> list[dict[str, Any]]:
    """The seed's resources: Agent, Tools, Memory, Workflow and WorkflowRun."""
    out: list[dict[str, Any]] = []
    for name in ("customer-support/agent.yaml", "customer-support/tools.yaml",
                 "customer-support/memory.yaml", "research-report/workflow.yaml",
                 "research-report/run.yaml"):
        out.extend(documents(EXAMPLES / name))
    return out


SEED_SECRETS = {"openai-api-key": "api-key", "knowledge-db": "password", "ticketing-api": "token"}


def wait_for(check: Callable[[], Any], timeout: float = 60.0, what: str = "condition",
             interval: float = 0.25) -> Any:
    """Poll until ``check`` returns something truthy; fail naming what was awaited. A check that
    runs kubectl deserves a longer ``interval`` on a busy machine."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}; last value: {last!r}")


def create_seed_secrets(plane: Any, namespace: str, value: str = "s3cr3t") -> None:
    """The Secrets the seed's Agent and Tools refer to (created or updated)."""
    for name, key in SEED_SECRETS.items():
        manifest = plane.kubectl("create", "secret", "generic", name, "-n", namespace,
                                 f"--from-literal={key}={value}", "--dry-run=client", "-o", "yaml").stdout
        plane.kubectl("apply", "-f", "-", input=manifest)
