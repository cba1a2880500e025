"""Model-call metrics, recorded where the calls happen: a pydantic-ai capability whose hooks
run after every model response and every failed model call (streamed or not, summariser
included). The calls' tokens are counted with their request, from its meter
(``BudgetEnforcer.count_usage``), also for requests that fail later."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic_ai import RunContext
from pydantic_ai.capabilities import AbstractCapability
from pydantic_ai.messages import ModelResponse

from kagent.runtime.fallback import answered_label
from kagent.runtime.metrics import LLM_REQUESTS


@dataclass
class ModelMetrics(AbstractCapability[Any]):
    agent_name: str
    model_name: str

    def record(self, response: ModelResponse) -> None:
        """Count one model response (the plain turn calls this without the agent graph). Its
        tokens are counted with the request (``BudgetEnforcer.count_usage``), from the meter."""
        model = answered_label() or self.model_name  # a fallback may have answered
        LLM_REQUESTS.labels(agent=self.agent_name, model=model, outcome="success").inc()

    def record_error(self) -> None:
        LLM_REQUESTS.labels(agent=self.agent_name, model=self.model_name, outcome="error").inc()

    async def after_model_request(
        self, ctx: RunContext[Any], *, request_context: Any, response: ModelResponse
    ) -> ModelResponse:
        self.record(response)
        return response

    async def on_model_request_error(
        self, ctx: RunContext[Any], *, request_context: Any, error: Exception
    ) -> ModelResponse:
        self.record_error()
        raise error
