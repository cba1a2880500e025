"""How an agent reaches a language model or an embedding model."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from kagent.api.base import KagentModel, SecretKeySelector, cel
from kagent.api.pricing import ModelPricing

Provider = Literal["openai", "anthropic", "bedrock", "vllm"]


class ModelSpec(KagentModel):
    """The language model an agent thinks with."""

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
