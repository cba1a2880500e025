"""What the docs tell a newcomer matches what the code does: values the webhook refuses are not
described as working, the KEDA example names the condition the controller really sets, and
the README says how to reach `kagent` and how to run an agent locally."""

from __future__ import annotations

import typing
from pathlib import Path

import yaml

from kagent.api.agent import Agent
from kagent.api.rollout import RolloutStrategy
from kagent.controller.agents import autoscaling_verdict
from kagent.webhook.validate import validate

REPO = Path(__file__).resolve().parents[2]


def _reference_row(field: str, section: str) -> str:
    text = (REPO / "docs/reference/api.md").read_text()
    part = text[text.index(f"### {section}\n"):]
    return next(line for line in part.splitlines() if line.startswith(f"| `{field}` |"))


def test_rollout_strategies_are_documented_as_the_webhook_treats_them() -> None:
    agent = yaml.safe_load((REPO / "examples/keda-autoscaling/agent.yaml").read_text())
    agent["spec"].pop("scaling", None)
    row = _reference_row("strategy", "Agent.spec.rollout")
    refused_any = False
    for strategy in typing.get_args(RolloutStrategy):
        agent["spec"]["rollout"] = {"strategy": strategy}
        refused = [e for e in validate(agent) if e.field == "spec.rollout.strategy"]
        assert strategy in row, row
        if refused:
            refused_any = True
            assert "refuse" in row, row
    if not refused_any:
        assert "refuse" not in row.lower(), row


def test_keda_example_names_the_condition_the_controller_sets() -> None:
    doc = yaml.safe_load((REPO / "examples/keda-autoscaling/agent.yaml").read_text())
    agent = Agent.model_validate(doc)
    readme = (REPO / "examples/keda-autoscaling/README.md").read_text()
    missing = autoscaling_verdict(agent, keda_available=False)
    present = autoscaling_verdict(agent, keda_available=True)
    assert missing is not None and present is not None
    assert f"`Autoscaling` condition\nis `False` with reason `{missing.reason}`" in readme
    assert f"`Autoscaling`\nis `True` with reason `{present.reason}`" in readme
    assert "`Ready` condition says so" not in readme


def test_readme_says_how_to_reach_kagent_and_run_an_agent_locally() -> None:
    readme = (REPO / "README.md").read_text()
    assert 'export PATH="$PWD/.venv/bin:$PATH"' in readme and ".venv/bin/kagent" in readme
    assert "kagent mock-llm --script examples/local-run/mockllm.yaml" in readme
    assert "kagent run -f examples/local-run/agents.yaml --agent translator" in readme
    names = [d["metadata"]["name"] for d in yaml.safe_load_all(
        (REPO / "examples/local-run/agents.yaml").read_text()) if d["kind"] == "Agent"]
    assert names == ["greeter", "translator"]
