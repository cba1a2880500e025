"""From an Agent's ``model`` block to a pydantic-ai model.

One function per provider, each building the provider client from ``endpoint`` and the key in
``apiKeySecretRef`` explicitly, so nothing is picked up by accident from the pod's environment
(``OPENAI_API_KEY`` and friends are ignored unless the spec leaves the key out).
"""

from __future__ import annotations

import os

from pydantic_ai.models import Model
from pydantic_ai.settings import ModelSettings

from kagent.api.model import ModelSpec
from kagent.runtime.secrets import SecretResolver

PROVIDER_RETRIES = 2
"""Retries of one model call the provider SDK makes on errors that are safe to retry (429,
408, 409, 5xx, connection errors), honouring ``retry-after``. Bad keys and bad requests are
never retried."""

PLACEHOLDER_KEY = "not-needed"
"""Sent as the key to OpenAI-compatible servers that take none (vLLM, Ollama)."""


class ModelConfigError(ValueError):
    """The model block cannot work as written; the message names the field."""


def _endpoint(spec: ModelSpec) -> str | None:
    return spec.endpoint.rstrip("/") if spec.endpoint else None


def build_model(spec: ModelSpec, secrets: SecretResolver) -> Model:
    """A pydantic-ai model for ``spec``; raises :class:`ModelConfigError` or MissingSecretError."""
    key = secrets.get_optional(spec.api_key_secret_ref)
    if spec.provider in ("openai", "vllm"):
        return _openai_compatible(spec, key)
    if spec.provider == "anthropic":
        return _anthropic(spec, key)
    if spec.provider == "bedrock":
        return _bedrock(spec, key)
    raise ModelConfigError(f"model.provider {spec.provider!r} is not supported")


def _openai_compatible(spec: ModelSpec, key: str | None) -> Model:
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    from kagent.runtime.openai_client import LeanAsyncOpenAI

    endpoint = _endpoint(spec)
    if spec.provider == "vllm":
        if not endpoint:
            raise ModelConfigError("model.endpoint is required when provider is vllm")
        key = key or PLACEHOLDER_KEY
    elif not key:
        key = os.environ.get("OPENAI_API_KEY")
        if not key and not endpoint:
            raise ModelConfigError(
                "model.apiKeySecretRef is required for provider openai (the Secret key holding "
                "the OpenAI API key)"
            )
        key = key or PLACEHOLDER_KEY
    client = LeanAsyncOpenAI(base_url=endpoint, api_key=key, max_retries=PROVIDER_RETRIES)
    return OpenAIChatModel(spec.name, provider=OpenAIProvider(openai_client=client))


def _anthropic(spec: ModelSpec, key: str | None) -> Model:
    from anthropic import AsyncAnthropic
    from pydantic_ai.models.anthropic import AnthropicModel
    from pydantic_ai.providers.anthropic import AnthropicProvider

    key = key or os.environ.get("ANTHROPIC_API_KEY")
    if not key:
        raise ModelConfigError(
            "model.apiKeySecretRef is required for provider anthropic (the Secret key holding "
            "the Anthropic API key)"
        )
    client = AsyncAnthropic(api_key=key, base_url=_endpoint(spec), max_retries=PROVIDER_RETRIES)
    return AnthropicModel(spec.name, provider=AnthropicProvider(anthropic_client=client))


def _bedrock(spec: ModelSpec, key: str | None) -> Model:
    """Bedrock with a Bedrock API key (bearer token) when the spec gives one; otherwise the AWS
    credential chain of the pod (IRSA, instance profile, AWS_* variables)."""
    from pydantic_ai.models.bedrock import BedrockConverseModel
    from pydantic_ai.providers.bedrock import BedrockProvider

    region = (
        spec.region
        or os.environ.get("AWS_REGION")
        or os.environ.get("AWS_DEFAULT_REGION")
        or "us-east-1"
    )
    if key:
        provider = BedrockProvider(api_key=key, base_url=_endpoint(spec), region_name=region)
    else:
        provider = BedrockProvider(base_url=_endpoint(spec), region_name=region)
    return BedrockConverseModel(spec.name, provider=provider)


def model_settings(spec: ModelSpec) -> ModelSettings:
    """Sampling settings the spec gives; unset fields keep the provider's defaults."""
    settings: ModelSettings = {}
    if spec.temperature is not None:
        settings["temperature"] = spec.temperature
    if spec.max_tokens is not None:
        settings["max_tokens"] = spec.max_tokens
    return settings
