"""How an agent reaches a language model or an embedding model."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from kagent.api.base import KagentModel, SecretKeySelector, cel
from kagent.api.pricing import ModelPricing

Provider = Literal["openai", "anthropic", "bedrock", "vllm"]


class ModelEndpoint(KagentModel):
    """One language model: which API, which model, how to reach it."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "self.provider != 'vllm' || (has(self.endpoint) && self.endpoint != '')",
                    "endpoint is required when provider is vllm (the URL of the "
                    "OpenAI-compatible server, e.g. http://vllm:8000/v1)",
                    ".endpoint",
                ),
                cel(
                    "self.provider != 'anthropic' || !has(self.temperature) "
                    "|| self.temperature <= 1.0",
                    "temperature must be between 0 and 1 for provider anthropic",
                    ".temperature",
                ),
            ]
        }
    }

    provider: Provider
    """Which model API to call: openai, anthropic, bedrock, or vllm (any OpenAI-compatible
    server such as vLLM, KubeAI or Ollama)."""
    name: Annotated[str, Field(min_length=1, max_length=256)]
    """Model name as the provider knows it, for example gpt-4-turbo or claude-sonnet-4-5."""
    endpoint: Annotated[str, Field(max_length=2048)] | None = None
    """Base URL of the model API. Empty means the provider's public endpoint; required for
    vllm."""
    region: Annotated[str, Field(max_length=64)] | None = None
    """AWS region, for provider bedrock (defaults to the pod's AWS_REGION)."""
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    """Sampling temperature, 0 to 2 (0 to 1 for anthropic). Unset uses the provider's default."""
    max_tokens: Annotated[int, Field(ge=1, le=1_000_000)] | None = None
    """Most tokens the model may generate in one answer."""
    pricing: ModelPricing | None = None
    """What this model costs (dollars per million tokens), for Budgets and usage reports.
    Unset uses the default price table (docs/budgets.md)."""
    api_key_secret_ref: SecretKeySelector | None = None
    """The Secret key holding the provider's API key. It reaches the agent pod only as an
    environment variable; its value is never copied into a ConfigMap, log or trace."""


class CircuitBreakerSpec(KagentModel):
    """When to stop sending requests to a failing model, and when to try it again."""

    failure_threshold: Annotated[int, Field(ge=1, le=1000)] = 3
    """Consecutive failed calls (rate limit, provider 5xx, timeout, connection error) that open
    the circuit."""
    open_seconds: Annotated[float, Field(ge=1, le=3600)] = 30
    """How long an open circuit sends no request to the model. Then one probe request is let
    through: success closes the circuit, failure opens it again for the same time."""


MAX_FALLBACKS = 4


class ModelSpec(ModelEndpoint):
    """The language model an agent thinks with, and the models that answer when it cannot."""

    fallbacks: Annotated[list[ModelEndpoint], Field(max_length=MAX_FALLBACKS)] | None = None
    """Further models, tried in order when the one before fails with a rate limit, a provider
    5xx, a timeout or a connection error, or its circuit is open. Any provider may follow any
    other. Bad requests and bad keys are not retried on another model. Which model answered is
    in the response metadata, the span, the metrics and the workflow step status."""
    circuit_breaker: CircuitBreakerSpec | None = None
    """Circuit breaker applied to each model of the chain (defaults apply when fallbacks are
    given and this is unset)."""


class EmbeddingSpec(KagentModel):
    """The embedding model used to turn text into vectors."""

    provider: Literal["openai", "bedrock", "vllm"] = "openai"
    """Which embedding API to call (vllm means any OpenAI-compatible /v1/embeddings)."""
    model: Annotated[str, Field(min_length=1, max_length=256)] = "text-embedding-3-small"
    """Embedding model name."""
    endpoint: Annotated[str, Field(max_length=2048)] | None = None
    """Base URL of the embedding API; empty means the provider's public endpoint."""
    dimensions: Annotated[int, Field(ge=1, le=65536)] | None = None
    """Vector size; must match the vector store's column or collection."""
    api_key_secret_ref: SecretKeySelector | None = None
    """The Secret key holding the embedding API's key."""
