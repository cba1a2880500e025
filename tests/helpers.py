"""Small helpers shared by the test modules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def seed_documents() -> list[dict[str, Any]]:
    """The seed's resources: Agent, Tools, Memory, Workflow and WorkflowRun."""
    out: list[dict[str, Any]] = []
    for name in ("agent.yaml", "tools.yaml", "memory.yaml", "workflow.yaml"):
        out.extend(documents(EXAMPLES / "seed" / name))
    return out
