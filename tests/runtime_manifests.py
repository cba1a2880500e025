"""Manifests for agent runtime tests: the documents a user would apply, as dicts."""

from __future__ import annotations

import uuid
from typing import Any

API = "kagent.dev/v1alpha1"
API_KEY = "sk-test-key-0123456789"


def unique(prefix: str) -> str:
    """A fresh agent name: metrics are labelled by agent, and tests share one registry."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def secret(name: str = "model-key", **values: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
        "stringData": values or {"api-key": API_KEY},
    }


def model(provider: str, url: str, name: str = "gpt-4o", **extra: Any) -> dict[str, Any]:
    """A model block against the mock: ``url`` is MockLLM.url (``/v1`` is added for
    OpenAI-compatible providers, as their endpoint is written)."""
    endpoint = f"{url}/v1" if provider in ("openai", "vllm") else url
    block: dict[str, Any] = {
        "provider": provider, "name": name, "endpoint": endpoint,
        "apiKeySecretRef": {"name": "model-key", "key": "api-key"},
    }
    block.update(extra)
    return block


def agent(name: str, model_block: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": API, "kind": "Agent", "metadata": {"name": name, "namespace": "tests"},
        "spec": {"model": model_block, **spec},
    }


def tool(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "Tool", "metadata": {"name": name, "namespace": "tests"},
            "spec": spec}


def memory(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "Memory",
            "metadata": {"name": name, "namespace": "tests"}, "spec": spec}


def human_tool(name: str = "ask-operator", prompt: str = "An agent needs your decision.",
               timeout: str = "1h") -> dict[str, Any]:
    return tool(name, {
        "type": "human", "description": "Ask the operator a question and wait for the answer.",
        "human": {"prompt": prompt, "timeout": timeout},
    })
