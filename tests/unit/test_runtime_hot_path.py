"""What keeps the runtime's hot path lean without changing what goes over the wire: the OpenAI
client that skips the SDK's no-op body walk, uvloop, and a2a-sdk's span wrappers turned off
(the quiet library loggers are checked on a real process, test_runtime_process_lean.py)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from typing import Annotated, Any, TypedDict

import pytest
from openai import AsyncOpenAI
from openai._utils import PropertyInfo
from pydantic import BaseModel

from kagent.mockllm import MockLLM
from kagent.runtime.openai_client import (
    LeanAsyncOpenAI,
    _has_property_info,
    is_plain_json,
    transform_is_identity,
    untransformed,
)
from kagent.runtime.server import event_loop_factory

TOOLS: Any = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}]
MESSAGES: Any = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": [{"type": "text", "text": "weather in Berlin?"}]},
    {"role": "assistant", "content": None, "tool_calls": [{
        "id": "call_1", "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Berlin"}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    {"role": "user", "content": "and tomorrow?"},
]


@pytest.fixture(scope="module")
def llm() -> Iterator[MockLLM]:
    with MockLLM({"default": {"content": "Rain."}}) as server:
        yield server


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_the_lean_client_sends_the_body_the_sdk_sends(llm: MockLLM, stream: bool) -> None:
    async def ask(client: AsyncOpenAI) -> str:
        async with client:
            response = await client.chat.completions.create(
                model="m", messages=MESSAGES, tools=TOOLS, temperature=0.5, stream=stream,
                extra_body={"top_k": 3},
            )
            if not stream:
                return response.choices[0].message.content or ""  # type: ignore[union-attr]
            return "".join([c.choices[0].delta.content or "" async for c in response  # type: ignore[union-attr]
                            if c.choices])

    llm.reset()
    plain = asyncio.run(ask(AsyncOpenAI(base_url=llm.openai_base_url, api_key="x")))
    lean = asyncio.run(ask(LeanAsyncOpenAI(base_url=llm.openai_base_url, api_key="x")))
    assert plain == lean == "Rain."
    sdk, ours = llm.calls
    assert ours.body == sdk.body
    assert list(ours.body) == list(sdk.body)  # the same keys in the same order
    assert ours.body["messages"] == MESSAGES and ours.body["top_k"] == 3


def test_messages_and_tools_travel_in_extra_body_only_when_plain_json() -> None:
    assert transform_is_identity()  # the installed SDK renames and formats nothing in chat
    params = {"model": "m", "messages": MESSAGES, "tools": TOOLS, "extra_body": {"seed": 1}}
    lean = untransformed(params)
    assert lean["messages"] == [] and lean["tools"] == []
    assert lean["extra_body"] == {"seed": 1, "messages": MESSAGES, "tools": TOOLS}
    assert params["messages"] is MESSAGES  # the caller's dict is left alone

    class Part(BaseModel):
        text: str

    odd = [{"role": "user", "content": [Part(text="hi")]}]  # the SDK's walk dumps models
    assert untransformed({"model": "m", "messages": odd})["messages"] is odd
    # A body field the caller already put in extra_body keeps the caller's value.
    mine = untransformed({"model": "m", "messages": MESSAGES, "extra_body": {"messages": []}})
    assert mine["messages"] is MESSAGES and mine["extra_body"] == {"messages": []}


def test_plain_json() -> None:
    assert is_plain_json({"a": [1, 2.5, "x", None, True, {"b": []}]})
    assert not is_plain_json({"a": (1, 2)})
    assert not is_plain_json({1: "x"})
    assert not is_plain_json([b"bytes"])


class Plain(TypedDict):
    text: str


class Renamed(TypedDict):
    async_: Annotated[bool, PropertyInfo(alias="async")]


class Formatted(TypedDict):
    when: Annotated[str, PropertyInfo(format="iso8601")]


class Outer(TypedDict):
    items: list[Plain | Renamed]


def test_a_renamed_or_formatted_field_anywhere_turns_the_shortcut_off() -> None:
    assert not _has_property_info(Plain, set())
    assert _has_property_info(Renamed, set())
    assert _has_property_info(Formatted, set())
    assert _has_property_info(Outer, set())


def test_the_runtime_runs_on_uvloop() -> None:
    import uvloop

    assert event_loop_factory() is uvloop.new_event_loop


@pytest.mark.parametrize(("setting", "enabled"), [(None, False), ("true", True)])
def test_a2a_sdk_spans_are_off_unless_asked_for(setting: str | None, enabled: bool) -> None:
    environ = {"PATH": "/usr/bin:/bin"}
    if setting is not None:
        environ["OTEL_INSTRUMENTATION_A2A_SDK_ENABLED"] = setting
    code = ("import kagent.runtime.a2a_server, a2a.utils.telemetry as t; "
            "print(t.otel_enabled)")
    out = subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True,
                         text=True, check=True, timeout=120)
    assert out.stdout.strip() == str(enabled)
