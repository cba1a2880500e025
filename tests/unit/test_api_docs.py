"""The API reference is generated from the types; these tests keep the committed copy honest."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from kagent.api.docs import render_api_reference

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "docs" / "reference" / "api.md"


def _row(text: str, section: str, field: str) -> str:
    """The table row of ``field`` inside the section headed ``### section``."""
    body = text.split(f"### {section}\n", 1)[1].split("\n### ", 1)[0]
    for line in body.splitlines():
        if line.startswith(f"| `{field}` |"):
            return line
    raise AssertionError(f"{field} not documented in {section}")


def test_committed_reference_is_current() -> None:
    assert COMMITTED.exists(), "docs/reference/api.md is missing: run `make docs`"
    assert COMMITTED.read_text() == render_api_reference(), (
        "docs/reference/api.md is stale: run `make docs` and commit the result"
    )


def test_every_kind_has_a_section() -> None:
    text = render_api_reference()
    for kind in ("Agent", "Tool", "Memory", "Workflow", "WorkflowRun"):
        assert f"\n## {kind}\n" in text
        assert f"### {kind}.spec\n" in text


def test_defaults_enums_and_constraints_appear() -> None:
    text = render_api_reference()
    max_history = _row(text, "Agent.spec.memory.config", "maxHistory")
    assert "| `50` |" in max_history
    policy = _row(text, "Workflow.spec.concurrency", "policy")
    assert "| `queue` |" in policy
    assert "One of: `queue`, `reject`, `replace`." in policy
    provider = _row(text, "Agent.spec.model", "provider")
    assert "| yes |" in provider and "`anthropic`" in provider
    temperature = _row(text, "Agent.spec.model", "temperature")
    assert "Range: ≥ 0.0, ≤ 2.0." in temperature
    secret = _row(text, "Agent.spec.model.apiKeySecretRef", "name")
    assert "Pattern: `" in secret


def test_cel_messages_are_validation_notes() -> None:
    text = render_api_reference()
    model = text.split("### Agent.spec.model\n", 1)[1].split("\n### ", 1)[0]
    assert "**Validation**" in model
    assert "endpoint is required when provider is vllm" in model


def test_links_point_at_existing_anchors() -> None:
    text = render_api_reference()
    anchors = re.findall(r'<a id="([^"]+)"></a>', text)
    assert len(anchors) == len(set(anchors))
    links = set(re.findall(r"\]\(#([^)]+)\)", text))
    assert links <= set(anchors)


def test_cli_writes_the_reference(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "kagent", "docs", "--output", str(tmp_path)],
                            capture_output=True, text=True, check=True)
    written = tmp_path / "reference" / "api.md"
    assert str(written) in result.stdout
    assert written.read_text() == render_api_reference()
