"""The OpenAI wire format, exercised through the official ``openai`` SDK."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from kagent.mockllm import MockLLM

WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}

SCRIPT = {
    "rules": [
        {
            "name": "answer",
            "has_tool_result": "get_weather",
            "content": "It is {{tool_result}} in Paris.",
        },
        {
            "name": "call",
            "regex": r"weather in (?P<city>\w+)",
            "tools_offered": "get_weather",
            "tool_calls": [
                {"name": "get_weather", "arguments": {"city": "{{match.city}}", "units": "metric"}}
            ],
        },
        {
            "name": "hello",
            "contains": "hello",
            "content": "Hello from the mock, friend.",
            "usage": {"input_tokens": 9, "output_tokens": 6},
        },
    ],
    "models": ["gpt-4o", "gpt-4o-mini"],
}


@pytest.fixture(scope="module")
def llm() -> Iterator[MockLLM]:
    with MockLLM(SCRIPT) as server:
        yield server


@pytest.fixture
def client(llm: MockLLM) -> openai.OpenAI:
    llm.set_script(SCRIPT)
    llm.reset()
    return openai.OpenAI(base_url=llm.openai_base_url, api_key="sk-test-key", max_retries=0)


def test_plain_completion(client: openai.OpenAI, llm: MockLLM) -> None:
    response = client.chat.completions.create(
        model="gpt-4o",
        messages=[
            {"role": "system", "content": "be nice"},
            {"role": "user", "content": "hello there"},
        ],
        temperature=0.2,
    )
    assert response.choices[0].message.content == "Hello from the mock, friend."
    assert response.choices[0].finish_reason == "stop"
    assert response.model == "gpt-4o"
    assert response.usage is not None
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (9, 6)
    (call,) = llm.calls
    assert (call.provider, call.model, call.rule, call.system) == (
        "openai",
        "gpt-4o",
        "hello",
        "be nice",
    )
    assert call.api_key == "sk-test-key" and call.auth_scheme == "bearer"
    assert call.body["temperature"] == 0.2


def test_streaming_text_with_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "please echo these five words"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "please echo these five words"
    assert (
        sum(1 for c in chunks if c.choices and c.choices[0].delta.content) >= 5
    )  # really incremental
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 7


def test_streaming_without_include_usage_has_no_usage_chunk(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x"}], stream=True
        )
    )
    assert all(c.usage is None and c.choices for c in chunks)


def _run_tool_round_trip(client: openai.OpenAI, stream: bool) -> tuple[dict[str, Any], str]:
    messages: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    if stream:
        calls: dict[int, dict[str, str]] = {}
        for chunk in client.chat.completions.create(
            model="gpt-4o", messages=messages, tools=[WEATHER_TOOL], stream=True
        ):
            for delta in chunk.choices[0].delta.tool_calls or () if chunk.choices else ():
                entry = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                entry["id"] += delta.id or ""
                entry["name"] += (delta.function.name or "") if delta.function else ""
                entry["arguments"] += (delta.function.arguments or "") if delta.function else ""
        (tool_call,) = calls.values()
    else:
        first = client.chat.completions.create(
            model="gpt-4o", messages=messages, tools=[WEATHER_TOOL]
        )
        assert first.choices[0].finish_reason == "tool_calls"
        (raw,) = first.choices[0].message.tool_calls or []
        assert raw.type == "function"
        tool_call = {"id": raw.id, "name": raw.function.name, "arguments": raw.function.arguments}
    arguments = json.loads(tool_call["arguments"])
    messages.append(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": tool_call["id"],
                    "type": "function",
                    "function": {"name": tool_call["name"], "arguments": tool_call["arguments"]},
                }
            ],
        }
    )
    messages.append({"role": "tool", "tool_call_id": tool_call["id"], "content": "sunny, 21C"})
    second = client.chat.completions.create(model="gpt-4o", messages=messages, tools=[WEATHER_TOOL])
    assert tool_call["id"].startswith("call_") and tool_call["name"] == "get_weather"
    return arguments, second.choices[0].message.content or ""


@pytest.mark.parametrize("stream", [False, True])
def test_tool_call_round_trip(client: openai.OpenAI, llm: MockLLM, stream: bool) -> None:
    arguments, answer = _run_tool_round_trip(client, stream)
    assert arguments == {"city": "Paris", "units": "metric"}
    assert answer == "It is sunny, 21C in Paris."
    first, second = llm.calls
    assert first.tools == ["get_weather"] and first.rule == "call"
    assert second.rule == "answer"
    assert second.messages[-1]["tool_results"][0] == {
        "tool_call_id": first.reply["tool_calls"][0]["id"],
        "name": "get_weather",
        "content": "sunny, 21C",
        "is_error": False,
    }


@pytest.mark.parametrize(
    ("status", "exception", "error_type", "code"),
    [
        (429, openai.RateLimitError, "requests", "rate_limit_exceeded"),
        (401, openai.AuthenticationError, "invalid_request_error", "invalid_api_key"),
        (500, openai.InternalServerError, "server_error", None),
        (404, openai.NotFoundError, "invalid_request_error", "model_not_found"),
    ],
)
def test_errors_map_to_sdk_exceptions(
    client: openai.OpenAI,
    llm: MockLLM,
    status: int,
    exception: type[openai.APIStatusError],
    error_type: str,
    code: str | None,
) -> None:
    llm.set_script({"rules": [{"error": {"status": status, "message": f"scripted {status}"}}]})
    with pytest.raises(exception) as caught:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == status
    assert caught.value.body == {
        "message": f"scripted {status}",
        "type": error_type,
        "param": None,
        "code": code,
    }
    assert f"scripted {status}" in str(caught.value)


def test_fail_twice_then_succeed_through_sdk_retries(llm: MockLLM) -> None:
    llm.set_script(
        {
            "rules": [
                {
                    "name": "throttle",
                    "times": 2,
                    "error": {"status": 429, "message": "slow down", "retry_after": 0.01},
                },
                {"name": "ok", "content": "finally"},
            ]
        }
    )
    llm.reset()
    retrying = openai.OpenAI(base_url=llm.openai_base_url, api_key="x", max_retries=2)
    response = retrying.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
    )
    assert response.choices[0].message.content == "finally"
    assert [c.rule for c in llm.calls] == ["throttle", "throttle", "ok"]
    assert llm.rule_counts() == {"throttle": 2, "ok": 1}
    assert llm.model_counts() == {"gpt-4o": 3}


def test_delay_triggers_client_timeout(client: openai.OpenAI, llm: MockLLM) -> None:
    llm.set_script({"rules": [{"content": "late", "delay": 1.0}]})
    with pytest.raises(openai.APITimeoutError):
        client.with_options(timeout=0.2).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
        )


def test_bad_requests_get_openai_400s(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="messages"):
        client.chat.completions.create(model="gpt-4o", messages=[])


def test_models_list(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == ["gpt-4o", "gpt-4o-mini"]


def test_control_endpoints(llm: MockLLM, client: openai.OpenAI) -> None:
    client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hello"}])
    with httpx.Client(base_url=llm.url) as http:
        snapshot = http.get("/_mock/calls").json()
        assert [c["rule"] for c in snapshot["calls"]] == ["hello"]
        assert snapshot["rule_counts"] == {"hello": 1} and snapshot["model_counts"] == {"gpt-4o": 1}
        assert snapshot["calls"][0]["messages"][-1]["text"] == "hello"

        bad = http.post("/_mock/script", content="rules:\n  - name: oops\n    contains: x\n")
        assert bad.status_code == 400
        assert "rules[0] (name 'oops')" in bad.json()["error"]

        good = http.post(
            "/_mock/script", content="rules:\n  - contains: hello\n    content: replaced\n"
        )
        assert good.status_code == 200 and good.json() == {"rules": 1}
        assert http.get("/_mock/script").json()["rules"][0]["content"] == "replaced"

        assert http.post("/_mock/reset").status_code == 200
        assert http.get("/_mock/calls").json()["calls"] == []
    response = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hello"}]
    )
    assert response.choices[0].message.content == "replaced"
