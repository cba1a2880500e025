"""The Anthropic Messages wire format, exercised through the official ``anthropic`` SDK."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

from kagent.mockllm import MockLLM

WEATHER_TOOL: Any = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}

SCRIPT = {
    "rules": [
        {
            "name": "answer",
            "has_tool_result": "get_weather",
            "content": "Forecast: {{tool_result}}",
        },
        {
            "name": "call",
            "contains": "weather",
            "tools_offered": "get_weather",
            "content": "Let me check.",
            "tool_calls": [{"name": "get_weather", "arguments": {"city": "Berlin", "days": 2}}],
        },
        {"name": "pirate", "system_contains": "pirate", "content": "Arr, {{last_user}}!"},
    ]
}


@pytest.fixture(scope="module")
def llm() -> Iterator[MockLLM]:
    with MockLLM(SCRIPT) as server:
        yield server


@pytest.fixture
def client(llm: MockLLM) -> anthropic.Anthropic:
    llm.set_script(SCRIPT)
    llm.reset()
    return anthropic.Anthropic(base_url=llm.url, api_key="sk-ant-test", max_retries=0)


def test_plain_message(client: anthropic.Anthropic, llm: MockLLM) -> None:
    message = client.messages.create(
        model="claude-mock",
        max_tokens=256,
        system="You are a pirate.",
        messages=[{"role": "user", "content": "hello matey"}],
    )
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].text == "Arr, hello matey!"  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn" and message.model == "claude-mock"
    assert message.usage.output_tokens == 5
    (call,) = llm.calls
    assert (call.provider, call.rule, call.system) == ("anthropic", "pirate", "You are a pirate.")
    assert call.api_key == "sk-ant-test"
    assert call.headers["anthropic-version"]


def test_streaming_text(client: anthropic.Anthropic) -> None:
    with client.messages.stream(
        model="claude-mock",
        max_tokens=256,
        messages=[{"role": "user", "content": "stream me back please"}],
    ) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(pieces) == "stream me back please" and len(pieces) == 4
    assert final.content[0].text == "stream me back please"  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 6 and final.usage.input_tokens > 0


def _tool_round_trip(client: anthropic.Anthropic, stream: bool) -> tuple[Any, str]:
    messages: list[Any] = [{"role": "user", "content": "What's the weather in Berlin?"}]
    kwargs: Any = {"model": "claude-mock", "max_tokens": 512, "tools": [WEATHER_TOOL]}
    if stream:
        with client.messages.stream(messages=messages, **kwargs) as events:
            first = events.get_final_message()
    else:
        first = client.messages.create(messages=messages, **kwargs)
    assert first.stop_reason == "tool_use"
    text, tool_use = first.content
    assert text.type == "text" and text.text == "Let me check."  # type: ignore[union-attr]
    assert tool_use.type == "tool_use" and tool_use.id.startswith("toolu_")  # type: ignore[union-attr]
    messages.append(
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]}
    )
    messages.append(
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": tool_use.id, "content": "cloudy, 12C"}
            ],  # type: ignore[union-attr]
        }
    )
    second = client.messages.create(messages=messages, **kwargs)
    return tool_use, second.content[0].text  # type: ignore[union-attr]


@pytest.mark.parametrize("stream", [False, True])
def test_tool_use_round_trip(client: anthropic.Anthropic, llm: MockLLM, stream: bool) -> None:
    tool_use, answer = _tool_round_trip(client, stream)
    assert tool_use.name == "get_weather"
    assert tool_use.input == {"city": "Berlin", "days": 2}
    assert answer == "Forecast: cloudy, 12C"
    assert [c.rule for c in llm.calls] == ["call", "answer"]
    assert llm.calls[1].messages[-1]["tool_results"][0]["name"] == "get_weather"


@pytest.mark.parametrize(
    ("status", "exception", "error_type"),
    [
        (401, anthropic.AuthenticationError, "authentication_error"),
        (429, anthropic.RateLimitError, "rate_limit_error"),
        (529, anthropic.OverloadedError, "overloaded_error"),
        (500, anthropic.InternalServerError, "api_error"),
    ],
)
def test_errors_map_to_sdk_exceptions(
    client: anthropic.Anthropic,
    llm: MockLLM,
    status: int,
    exception: type[anthropic.APIStatusError],
    error_type: str,
) -> None:
    llm.set_script({"rules": [{"error": {"status": status, "message": "scripted failure"}}]})
    with pytest.raises(exception) as caught:
        client.messages.create(
            model="c", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.status_code == status
    body: Any = caught.value.body
    assert body["type"] == "error"
    assert body["error"] == {"type": error_type, "message": "scripted failure"}
    assert caught.value.request_id and caught.value.request_id.startswith("req_")


def test_missing_max_tokens_is_a_400_like_the_real_api(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError, match="max_tokens"):
        # The SDK's typed call insists on max_tokens, so send the raw request through its client.
        client.post(
            "/v1/messages",
            body={"model": "c", "messages": [{"role": "user", "content": "hi"}]},
            cast_to=object,
        )


def test_retry_then_success_counts_rules(llm: MockLLM) -> None:
    llm.set_script(
        {
            "rules": [
                {
                    "name": "busy",
                    "times": 1,
                    "error": {"status": 529, "message": "busy", "retry_after": 0.01},
                },
                {"name": "ok", "content": "done"},
            ]
        }
    )
    llm.reset()
    client = anthropic.Anthropic(base_url=llm.url, api_key="k", max_retries=1)
    message = client.messages.create(
        model="c", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
    )
    assert message.content[0].text == "done"  # type: ignore[union-attr]
    assert llm.rule_counts() == {"busy": 1, "ok": 1}


def test_models_list_in_anthropic_shape(llm: MockLLM) -> None:
    llm.set_script({"models": ["claude-a", "claude-b"]})
    client = anthropic.Anthropic(base_url=llm.url, api_key="k", max_retries=0)
    models = list(client.models.list())
    assert [m.id for m in models] == ["claude-a", "claude-b"]
    assert models[0].type == "model"
