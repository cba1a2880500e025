"""A step's status names the model that answered it, as the agent reported (an Agent with
``model.fallbacks`` may answer with another model than its first)."""

from __future__ import annotations

from typing import Any

from kagent.agentclient import Answer
from tests.unit.test_workflow_engine import PIPELINE, Agents, execute, run_of, steps


class ModelReportingAgents(Agents):
    async def __call__(self, url: str, agent: str, message: str, **kwargs: Any) -> Answer:
        answer = await super().__call__(url, agent, message, **kwargs)
        model = "anthropic/backup" if agent == "analyst" else "openai/primary"
        return Answer(answer.text, {"inputTokens": 3, "outputTokens": 2, "requests": 1}, model)


async def test_each_step_records_the_model_that_answered() -> None:
    agents = ModelReportingAgents({"researcher": str, "analyst": str, "writer": str})
    engine = await execute(PIPELINE, agents, run_of(topic="t"))
    assert engine.status["phase"] == "Succeeded"
    by_step = {name: step.get("model") for name, step in steps(engine).items()}
    assert by_step == {"research": "openai/primary", "analyze": "anthropic/backup",
                       "write": "openai/primary"}
