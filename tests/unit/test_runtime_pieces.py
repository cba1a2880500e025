"""Pure pieces of the runtime: failure descriptions, model and tracing settings, the human
tool, OpenAI message parsing and secret redaction."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest
from pydantic_ai import exceptions as pai
from pydantic_ai.messages import ModelRequest, ModelResponse

from kagent.api.agent import TracingSpec
from kagent.api.model import ModelSpec
from kagent.api.tool import Tool
from kagent.runtime.errors import describe_failure
from kagent.runtime.human import human_tools, human_toolset
from kagent.runtime.models import ModelConfigError, build_model, model_settings
from kagent.runtime.openai_api import BadRequest, parse_messages
from kagent.runtime.secrets import MissingSecretError, SecretResolver
from kagent.runtime.tracing import TracingConfigError, exporter_settings, traces_url
from tests.runtime_manifests import human_tool

KEY = "sk-live-abcdef123456"


def resolver(**values: str) -> SecretResolver:
    return SecretResolver([{"metadata": {"name": "s"}, "stringData": values}], environ={})


def describe(error: BaseException) -> Any:
    return describe_failure(error, provider="openai", model="gpt-4o")


# -- failures ----------------------------------------------------------------------------------


def test_provider_errors_are_described_for_people() -> None:
    auth = describe(pai.ModelAuthenticationError("gpt-4o", "bad",
                                                 body={"error": {"message": "key is wrong"}}))
    assert auth.code == "provider_authentication_error" and auth.http_status == 502
    assert not auth.retryable and "apiKeySecretRef" in auth.message
    assert auth.message.endswith("Provider said: key is wrong")
    limited = describe(pai.ModelRateLimitError("gpt-4o", "slow down", retry_after=3.0))
    assert (limited.code, limited.http_status, limited.retryable, limited.retry_after) == (
        "provider_rate_limited", 429, True, 3.0)
    timeout = describe(pai.ModelTimeoutError("gpt-4o", "read timed out"))
    assert timeout.code == "provider_timeout" and timeout.retryable


def test_limits_and_cancellation_and_bugs() -> None:
    limit = describe(pai.UsageLimitExceeded(
        "The next request would exceed the request_limit of 3. Consider raising the limit, "
        "or see the docs"))
    assert limit.outcome == "limit" and limit.http_status == 422
    assert limit.message == ("the request was stopped: The next request would exceed the "
                             "limits.maxTurns of 3")
    assert describe(asyncio.CancelledError()).outcome == "cancelled"
    bug = describe(KeyError("x"))
    assert bug.code == "internal_error" and bug.http_status == 500


def test_secret_values_are_redacted_once_handed_out() -> None:
    secrets = resolver(key=KEY, short="abc")
    from kagent.api.base import SecretKeySelector

    assert secrets.redact(f"key {KEY}") == f"key {KEY}"  # not handed out yet
    secrets.get(SecretKeySelector(name="s", key="key"))
    secrets.get(SecretKeySelector(name="s", key="short"))
    assert secrets.redact(f"Incorrect API key provided: {KEY}.") == (
        "Incorrect API key provided: [REDACTED].")
    assert secrets.redact("abcdef") == "abcdef"  # too short to redact safely


# -- models ------------------------------------------------------------------------------------


def spec(**fields: Any) -> ModelSpec:
    return ModelSpec.model_validate({"apiKeySecretRef": {"name": "s", "key": "key"}, **fields})


def test_each_provider_builds_its_model() -> None:
    secrets = resolver(key=KEY)
    openai_model = build_model(spec(provider="openai", name="gpt-4o",
                                    endpoint="http://x:1/v1/"), secrets)
    assert (openai_model.system, openai_model.model_name) == ("openai", "gpt-4o")
    assert str(openai_model.client.base_url) == "http://x:1/v1/"
    assert openai_model.client.api_key == KEY
    claude = build_model(spec(provider="anthropic", name="claude-sonnet-4-5"), secrets)
    assert claude.system == "anthropic" and claude.client.api_key == KEY
    bedrock = build_model(spec(provider="bedrock", name="amazon.nova-pro-v1:0",
                               region="eu-west-1"), secrets)
    assert bedrock.system == "bedrock"
    assert bedrock.client.meta.region_name == "eu-west-1"
    assert bedrock.client.meta.config.signature_version == "bearer"
    vllm = build_model(ModelSpec(provider="vllm", name="llama", endpoint="http://vllm:8000/v1"),
                       secrets)
    assert str(vllm.client.base_url) == "http://vllm:8000/v1/"


def test_model_config_errors_name_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(ModelConfigError, match="model.apiKeySecretRef is required"):
        build_model(ModelSpec(provider="openai", name="gpt-4o"), resolver())
    with pytest.raises(ModelConfigError, match="model.apiKeySecretRef is required"):
        build_model(ModelSpec(provider="anthropic", name="claude"), resolver())
    with pytest.raises(ModelConfigError, match="model.endpoint is required"):
        build_model(ModelSpec(provider="vllm", name="llama", endpoint=""), resolver())
    with pytest.raises(MissingSecretError, match='Secret "s"'):
        build_model(spec(provider="openai", name="gpt-4o"), resolver())


def test_model_settings_only_carry_what_is_set() -> None:
    assert model_settings(ModelSpec(provider="openai", name="m")) == {}
    assert model_settings(ModelSpec(provider="openai", name="m", temperature=0.3,
                                    max_tokens=99)) == {"temperature": 0.3, "max_tokens": 99}


# -- tracing -----------------------------------------------------------------------------------


def test_traces_url() -> None:
    assert traces_url("http://c:4318") == "http://c:4318/v1/traces"
    assert traces_url("http://c:4318/v1/traces/") == "http://c:4318/v1/traces"


def test_exporter_settings_per_provider() -> None:
    secrets = resolver(**{"public-key": "pk", "secret-key": "sk", "api-key": "ls"})
    ref = {"name": "s"}
    url, headers = exporter_settings(
        TracingSpec(enabled=True, provider="langfuse", secret_ref=ref), secrets)
    assert url == "https://cloud.langfuse.com/api/public/otel/v1/traces"
    assert headers == {"Authorization": "Basic " + base64.b64encode(b"pk:sk").decode()}
    url, headers = exporter_settings(
        TracingSpec(enabled=True, provider="langsmith", secret_ref=ref), secrets)
    assert url == "https://api.smith.langchain.com/otel/v1/traces"
    assert headers == {"x-api-key": "ls"}
    url, headers = exporter_settings(
        TracingSpec(enabled=True, provider="cloudwatch", endpoint="http://adot:4318"), secrets)
    assert (url, headers) == ("http://adot:4318/v1/traces", {})
    with pytest.raises(TracingConfigError, match="tracing.endpoint is required"):
        exporter_settings(TracingSpec(enabled=True, provider="otlp"), secrets)
    with pytest.raises(TracingConfigError, match="tracing.secretRef is required"):
        exporter_settings(TracingSpec(enabled=True, provider="langsmith"), secrets)


# -- human tool --------------------------------------------------------------------------------


def test_human_tool_schema_and_question() -> None:
    tools = human_tools([Tool.model_validate(human_tool("ask-ops", prompt="Ops, please:",
                                                        timeout="90s"))])
    tool = tools["ask-ops"]
    assert tool.timeout.total_seconds() == 90
    assert tool.schema["required"] == ["question"]
    assert tool.question({"question": "Deploy now?"}) == "Ops, please:\n\nDeploy now?"
    assert tool.question({"env": "prod"}) == 'Ops, please:\n\n{"env": "prod"}'
    toolset = human_toolset(tools)
    assert toolset is not None and list(toolset.tools) == ["ask-ops"]
    assert human_toolset({}) is None


# -- OpenAI request parsing --------------------------------------------------------------------


def test_parse_messages_splits_history_prompt_and_system() -> None:
    history, prompt, system = parse_messages([
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "bye"},
    ])
    assert prompt == "bye" and system == "Be brief."
    assert isinstance(history[0], ModelRequest) and isinstance(history[1], ModelResponse)
    with pytest.raises(BadRequest, match="last message must have role user"):
        parse_messages([{"role": "assistant", "content": "x"}])
    with pytest.raises(BadRequest, match="non-empty list"):
        parse_messages([])
