"""The pure parts of `kagent workflow run` and `kagent dev demo`: typed inputs, the live view,
and the demo's choice of model."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from kagent.cli.workflow import parse_inputs, steps_view
from kagent.local.dev import demo_documents, demo_provider
from kagent.mockllm import load_script, merge_scripts

PARAMETERS = [
    {"name": "topic", "type": "string", "required": True},
    {"name": "depth", "type": "integer"},
    {"name": "tone", "type": "string", "enum": ["formal", "casual"]},
    {"name": "draft", "type": "boolean"},
]
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_inputs_are_typed_by_the_workflow_parameters() -> None:
    values = parse_inputs(["topic=a=b", "depth=3", "tone=casual", "draft=true"], PARAMETERS)
    assert values == {"topic": "a=b", "depth": 3, "tone": "casual", "draft": True}


@pytest.mark.parametrize(("pairs", "message"), [
    (["depth=3"], "missing required input: --input topic"),
    (["topic"], "write it as NAME=VALUE"),
    (["topic=x", "colour=red"], "no such input (its inputs: topic, depth, tone, draft)"),
    (["topic=x", "depth=deep"], "--input depth: 'deep' is not a valid integer"),
    (["topic=x", "tone=angry"], "'angry' is not one of formal, casual"),
])
def test_bad_inputs_name_the_parameter(pairs: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_inputs(pairs, PARAMETERS)


def test_the_live_view_shows_every_step_with_its_phase() -> None:
    workflow = {"spec": {"steps": [{"name": "research", "agent": "researcher"},
                                   {"name": "write", "agent": "writer"},
                                   {"name": "answer", "route": {"router": "r"}}]}}
    run = {"metadata": {"name": "rr-1"}, "status": {
        "phase": "Running", "startedAt": "2026-01-01T00:00:00+00:00",
        "steps": [{"name": "research", "phase": "Succeeded", "attempts": 1,
                   "startedAt": "2026-01-01T00:00:00+00:00",
                   "finishedAt": "2026-01-01T00:00:02+00:00", "output": "facts\nmore",
                   "usage": {"inputTokens": 10, "outputTokens": 5}},
                  {"name": "write", "phase": "Running", "attempts": 2,
                   "startedAt": "2026-01-01T00:00:02+00:00"}]}}
    console = Console(width=160, record=True, color_system=None)
    console.print(steps_view(workflow, run))
    lines = console.export_text().splitlines()
    assert "rr-1" in lines[0] and "Running" in lines[0]
    research = next(line for line in lines if line.startswith("research"))
    assert "✓ Succeeded" in research and "2.0s" in research and "15" in research
    assert "facts more" in research
    assert "▶ Running" in next(line for line in lines if line.startswith("write"))
    answer = next(line for line in lines if line.startswith("answer"))
    assert "(routed)" in answer and "Pending" in answer


def test_every_example_script_loads_and_they_merge_without_clashes() -> None:
    scripts = [load_script(path) for path in sorted(EXAMPLES.glob("*/mockllm.yaml"))]
    assert len(scripts) == 7
    merged = merge_scripts(scripts)
    assert len(merged.rules) == sum(len(s.rules) for s in scripts)
    assert merged.embeddings.dimensions == 64


def test_the_demo_uses_the_scripted_model_unless_a_key_is_set() -> None:
    assert demo_provider({}) is None
    docs = demo_documents(EXAMPLES, None)
    assert {d["kind"] for d in docs} == {"Agent", "Workflow"}
    openai = demo_provider({"OPENAI_API_KEY": "sk-x"})
    assert openai == ("openai", None, "openai-api-key", "sk-x")
    anthropic = demo_provider({"ANTHROPIC_API_KEY": "sk-ant"})
    assert anthropic is not None
    for doc in demo_documents(EXAMPLES, anthropic):
        if doc["kind"] == "Agent":
            assert doc["spec"]["model"]["provider"] == "anthropic"
            assert doc["spec"]["model"]["apiKeySecretRef"]["name"] == "anthropic-api-key"


def test_the_demo_says_how_to_put_kagent_on_path() -> None:
    from kagent.cli.dev import explore_hints

    hints = explore_hints(Path("/home/u/.kagent/dev/kubeconfig"), Path("/src/kagent/.venv/bin"))
    assert 'export PATH="/src/kagent/.venv/bin:$PATH"' in hints
    assert "/src/kagent/.venv/bin/kagent" in hints
    assert "export PATH" not in explore_hints(Path("/k"), None)
    assert all("-n ai-agents" in line for line in hints.splitlines()
                            if line.strip().startswith(("kagent get", "kagent chat",
                                                        "kagent workflow")))
