"""Script loading, validation messages and rule semantics, without a server."""

from __future__ import annotations

from pathlib import Path

import pytest

from kagent.mockllm import (
    ChatRequest,
    Message,
    MockState,
    ScriptError,
    ToolCall,
    ToolResult,
    load_script,
    parse_script_text,
)
from kagent.mockllm.state import Auth, auth_from_headers

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "mockllm" / "weather.yaml"


def request(
    text: str = "hello",
    *,
    model: str = "gpt-4o",
    provider: str = "openai",
    system: str = "",
    tools: tuple[str, ...] = (),
    tail: tuple[Message, ...] = (),
) -> ChatRequest:
    return ChatRequest(
        provider=provider,
        model=model,
        messages=(Message("user", text), *tail),
        system=system,
        tools=tools,
    )


def ask(state: MockState, req: ChatRequest) -> tuple[str, str | None, list[dict[str, object]]]:
    answer = state.answer(req, Auth(), {}, "call_")
    calls: list[dict[str, object]] = [
        {"name": c.name, "arguments": c.arguments} for c in answer.tool_calls
    ]
    return answer.rule, answer.content, calls


def tool_round(name: str, result: str) -> tuple[Message, ...]:
    call = ToolCall("call_1", name, {})
    return (
        Message("assistant", tool_calls=(call,)),
        Message("tool", tool_results=(ToolResult("call_1", name, result),)),
    )


def test_default_echoes_the_last_user_message() -> None:
    state = MockState({})
    assert ask(state, request("ping 42")) == ("default", "ping 42", [])


def test_first_matching_rule_wins_and_all_conditions_must_hold() -> None:
    state = MockState(
        {
            "rules": [
                {"name": "both", "contains": "paris", "model": "gpt-*", "content": "A"},
                {"name": "any-paris", "contains": "PARIS", "content": "B"},
                {"name": "catch-all", "content": "C"},
            ]
        }
    )
    assert ask(state, request("Weather in Paris?"))[:2] == ("both", "A")
    assert ask(state, request("Weather in Paris?", model="claude-3"))[:2] == ("any-paris", "B")
    assert ask(state, request("Weather in Rome?"))[:2] == ("catch-all", "C")


def test_regex_groups_system_tools_provider_and_placeholders() -> None:
    state = MockState(
        {
            "rules": [
                {
                    "regex": r"weather in (?P<city>\w+)",
                    "tools_offered": ["get_weather"],
                    "provider": "anthropic",
                    "tool_calls": [
                        {"name": "get_weather", "arguments": {"city": "{{match.city}}"}}
                    ],
                },
                {
                    "system_contains": "pirate",
                    "content": "Arr, {{last_user}} ({{model}}/{{provider}})",
                },
            ]
        }
    )
    req = request("weather in Oslo please", provider="anthropic", tools=("get_weather",))
    assert ask(state, req)[2] == [{"name": "get_weather", "arguments": {"city": "Oslo"}}]
    # Without the tool offered the first rule does not apply.
    no_tool = request("weather in Oslo please", provider="anthropic", system="You are a pirate")
    assert ask(state, no_tool)[1] == "Arr, weather in Oslo please (gpt-4o/anthropic)"


def test_has_tool_result_by_name_and_tool_result_placeholder() -> None:
    state = MockState(
        {
            "rules": [
                {
                    "has_tool_result": "lookup",
                    "content": "found: {{tool_result}} via {{tool_name}}",
                },
                {"has_tool_result": True, "content": "some tool said {{tool_result}}"},
                {"content": "no tool yet"},
            ]
        }
    )
    assert ask(state, request("q", tail=tool_round("lookup", "42")))[1] == "found: 42 via lookup"
    assert ask(state, request("q", tail=tool_round("other", "7")))[1] == "some tool said 7"
    assert ask(state, request("q"))[1] == "no tool yet"


def test_turn_counts_calls_per_model_and_times_limits_a_rule() -> None:
    state = MockState(
        {
            "rules": [
                {"name": "first", "turn": 1, "content": "first call to {{model}}"},
                {"name": "twice", "times": 2, "content": "limited {{turn}}"},
                {"name": "after", "content": "unlimited {{turn}}"},
            ]
        }
    )
    replies = [ask(state, request("x"))[1] for _ in range(5)]
    assert replies == [
        "first call to gpt-4o",
        "limited 2",
        "limited 3",
        "unlimited 4",
        "unlimited 5",
    ]
    assert ask(state, request("x", model="other"))[1] == "first call to other"
    assert state.rule_counts() == {"first": 2, "twice": 2, "after": 2}
    assert state.model_counts() == {"gpt-4o": 5, "other": 1}
    state.reset()
    assert state.calls == [] and state.rule_counts() == {}
    assert ask(state, request("x"))[1] == "first call to gpt-4o"


def test_usage_is_scripted_or_estimated_from_text_length() -> None:
    state = MockState(
        {
            "rules": [
                {
                    "contains": "fixed",
                    "content": "x",
                    "usage": {"input_tokens": 11, "output_tokens": 22},
                }
            ]
        }
    )
    fixed = state.answer(request("fixed"), Auth(), {}, "call_")
    assert (fixed.input_tokens, fixed.output_tokens) == (11, 22)
    estimated = state.answer(request("a" * 400), Auth(), {}, "call_")
    assert estimated.input_tokens == 100 and estimated.output_tokens == 100


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        (
            {"rules": [{"name": "ok", "content": "x"}, {"contain": "typo", "content": "x"}]},
            "rules[1].contain",
        ),
        (
            {"rules": [{"name": "calls", "tool_calls": [{"arguments": {}}]}]},
            "rules[0] (name 'calls').tool_calls[0].name",
        ),
        (
            {"rules": [{"name": "empty", "contains": "x"}]},
            "needs 'content', 'tool_calls' or 'error'",
        ),
        (
            {"rules": [{"content": "{{__import__('os')}}"}]},
            "rules[0].content: {{__import__('os')}} is not a placeholder",
        ),
        ({"rules": [{"content": "{{secret}}"}]}, "unknown placeholder {{secret}}"),
        ({"rules": [{"regex": "(", "content": "x"}]}, "invalid regular expression"),
        ({"rules": [{"error": {"status": 200}}]}, "rules[0].error.status"),
        ({"rules": [{"error": {"status": 429}, "content": "x"}]}, "cannot also have 'content'"),
        (
            {"rules": [{"name": "a", "content": "x"}, {"name": "a", "content": "y"}]},
            "two rules are named 'a'",
        ),
    ],
)
def test_invalid_scripts_name_the_rule_and_field(script: dict[str, object], expected: str) -> None:
    with pytest.raises(ScriptError) as caught:
        MockState(script)
    assert expected in str(caught.value)


def test_placeholder_syntax_never_evaluates_code() -> None:
    state = MockState({"rules": [{"content": "{{ last_user }} and {{match.9}}!"}]})
    assert (
        ask(state, request("{{model}} __import__('os')"))[1] == "{{model}} __import__('os') and !"
    )


def test_yaml_loading_from_path_text_and_errors(tmp_path: Path) -> None:
    script = load_script(EXAMPLE)
    assert script.rules and script.embeddings.dimensions == 64
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - name: broken\n    delay: -1\n    content: hi\n")
    with pytest.raises(ScriptError, match=r"bad.yaml.*\n.*rules\[0\] \(name 'broken'\)\.delay"):
        load_script(bad)
    with pytest.raises(ScriptError, match="not YAML"):
        parse_script_text("rules: [unclosed")
    with pytest.raises(ScriptError, match="cannot read"):
        load_script(tmp_path / "missing.yaml")


def test_auth_is_recorded_but_kept_out_of_repr() -> None:
    assert auth_from_headers({"Authorization": "Bearer sk-123"}) == Auth("bearer", "sk-123")
    assert auth_from_headers({"x-api-key": "ant-1"}) == Auth("x-api-key", "ant-1")
    sigv4 = (
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20250101/us-east-1/bedrock/aws4_request, "
        "Signature=abc"
    )
    assert auth_from_headers({"authorization": sigv4}) == Auth("sigv4", "AKIDEXAMPLE")
    state = MockState({})
    state.answer(
        request("hi"),
        Auth("bearer", "sk-very-secret"),
        {"Authorization": "Bearer sk-very-secret"},
        "c_",
    )
    (call,) = state.calls
    assert call.api_key == "sk-very-secret"
    assert "sk-very-secret" not in repr(call)
    assert "authorization" not in call.headers
