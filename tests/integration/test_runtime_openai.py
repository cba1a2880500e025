"""The runtime's OpenAI-compatible API, driven by the official ``openai`` client.

The agent runs in-process on a real port; its model is the scripted server speaking the
OpenAI wire format. Memory is the runtime's own (in-memory here; Redis and Postgres have their
own tests).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from kagent.mockllm import MockLLM
from tests.runtime_manifests import API_KEY, agent, model, secret, unique

SCRIPT = {
    "rules": [
        {"name": "intro", "contains": "my name is", "content": "Nice to meet you!"},
        {"name": "ask-name", "contains": "what is my name", "content": "Let me think."},
        {"name": "bad-key", "contains": "use the bad key",
         "error": {"status": 401, "message": f"Incorrect API key provided: {API_KEY}",
                   "type": "invalid_api_key"}},
        {"name": "busy", "contains": "rate limit me",
         "error": {"status": 429, "message": "Rate limit reached", "retry_after": 0.01}},
    ],
    "default": {"content": "echo: {{last_user}}"},
}


@pytest.fixture(scope="module")
def llm() -> Iterator[MockLLM]:
    with MockLLM(SCRIPT) as server:
        yield server


@pytest.fixture
def runtime(llm: MockLLM, agent_runtime: Any) -> Any:
    llm.reset()
    return agent_runtime([
        agent(unique("chat"), model("openai", llm.url), systemPrompt="You are a test agent."),
        secret(),
    ])


@pytest.fixture
def client(runtime: Any) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=runtime.openai_base_url, api_key="unused") as c:
        yield c


def conversation(cid: str) -> dict[str, Any]:
    return {"extra_headers": {"X-Conversation-Id": cid}}


def test_plain_multi_turn_carries_memory(client: openai.OpenAI, runtime: Any,
                                         llm: MockLLM) -> None:
    cid = str(uuid.uuid4())
    first = client.chat.completions.create(
        model=runtime.name, messages=[{"role": "user", "content": "Hi, my name is Ada"}],
        **conversation(cid),
    )
    assert first.choices[0].message.content == "Nice to meet you!"
    assert first.choices[0].finish_reason == "stop"
    assert first.model == runtime.name
    assert first.usage is not None and first.usage.prompt_tokens > 0

    # Only the new message is sent: the runtime's memory supplies the rest.
    second = client.chat.completions.create(
        model=runtime.name, messages=[{"role": "user", "content": "So what is my name?"}],
        **conversation(cid),
    )
    assert second.choices[0].message.content == "Let me think."
    seen = llm.calls[-1]
    assert [(m["role"], m["text"]) for m in seen.messages] == [
        ("user", "Hi, my name is Ada"),
        ("assistant", "Nice to meet you!"),
        ("user", "So what is my name?"),
    ]
    assert "You are a test agent." in seen.system
    assert seen.api_key == API_KEY

    # Another conversation id starts from nothing.
    client.chat.completions.create(
        model=runtime.name, messages=[{"role": "user", "content": "what is my name?"}],
        **conversation(str(uuid.uuid4())),
    )
    assert [m["text"] for m in llm.calls[-1].messages] == ["what is my name?"]


def test_streaming_multi_turn_carries_memory(client: openai.OpenAI, runtime: Any,
                                             llm: MockLLM) -> None:
    cid = str(uuid.uuid4())

    def ask(text: str) -> tuple[str, list[Any]]:
        chunks = list(client.chat.completions.create(
            model=runtime.name, messages=[{"role": "user", "content": text}], stream=True,
            stream_options={"include_usage": True}, **conversation(cid),
        ))
        content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        return content, chunks

    text, chunks = ask("hello there, my name is Grace")
    assert text == "Nice to meet you!"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert all(c.id == chunks[0].id for c in chunks)

    text, _ = ask("what is my name")
    assert text == "Let me think."
    assert [m["text"] for m in llm.calls[-1].messages] == [
        "hello there, my name is Grace", "Nice to meet you!", "what is my name",
    ]
    assert llm.calls[-1].stream is True


def test_stateless_requests_use_the_history_sent(client: openai.OpenAI, runtime: Any,
                                                 llm: MockLLM) -> None:
    answer = client.chat.completions.create(model=runtime.name, messages=[
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "my name is Linus"},
        {"role": "assistant", "content": "Hello Linus"},
        {"role": "user", "content": "repeat after me"},
    ])
    assert answer.choices[0].message.content == "echo: repeat after me"
    seen = llm.calls[-1]
    assert [m["text"] for m in seen.messages] == [
        "my name is Linus", "Hello Linus", "repeat after me"
    ]
    assert "Answer briefly." in seen.system and "You are a test agent." in seen.system
    # Nothing was stored: the same text without history reaches the model alone.
    client.chat.completions.create(model=runtime.name,
                                   messages=[{"role": "user", "content": "again"}])
    assert [m["text"] for m in llm.calls[-1].messages] == ["again"]


def test_models_lists_the_agent_and_other_models_are_refused(client: openai.OpenAI,
                                                             runtime: Any) -> None:
    assert [m.id for m in client.models.list()] == [runtime.name]
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-4o",
                                       messages=[{"role": "user", "content": "hi"}])
    assert runtime.name in str(caught.value)


def test_provider_bad_key_is_a_clear_error_without_the_key(client: openai.OpenAI,
                                                           runtime: Any, llm: MockLLM) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model=runtime.name,
                                       messages=[{"role": "user", "content": "use the bad key"}])
    error = caught.value
    assert error.status_code == 502
    assert error.body["code"] == "provider_authentication_error"
    assert "rejected the agent's API key" in error.message
    assert "apiKeySecretRef" in error.message
    assert API_KEY not in str(error.body) and API_KEY not in error.message
    # An authentication error is not retried, by the runtime or (x-should-retry) the client.
    assert len([c for c in llm.calls if c.rule == "bad-key"]) == 1


def test_provider_rate_limit_is_retried_then_reported(runtime: Any, llm: MockLLM) -> None:
    with (openai.OpenAI(base_url=runtime.openai_base_url, api_key="x", max_retries=0) as client,
          pytest.raises(openai.RateLimitError) as caught):
        client.chat.completions.create(
            model=runtime.name, messages=[{"role": "user", "content": "rate limit me"}])
    assert caught.value.body["code"] == "provider_rate_limited"
    assert "rate limiting" in caught.value.message
    # The runtime's provider client retried (safe for a 429) before giving up.
    assert len([c for c in llm.calls if c.rule == "busy"]) == 3


def test_streaming_error_before_output_is_an_http_error(client: openai.OpenAI,
                                                        runtime: Any) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        list(client.chat.completions.create(
            model=runtime.name, messages=[{"role": "user", "content": "use the bad key"}],
            stream=True))
    assert caught.value.status_code == 502


def test_probes_and_metrics(runtime: Any, client: openai.OpenAI) -> None:
    client.chat.completions.create(model=runtime.name,
                                   messages=[{"role": "user", "content": "count me"}])
    assert httpx.get(f"{runtime.url}/healthz").json()["status"] == "ok"
    ready = httpx.get(f"{runtime.url}/readyz")
    assert ready.status_code == 200 and ready.json()["memory"] == "in-memory"
    metrics = httpx.get(f"{runtime.url}/metrics").text
    label = f'agent="{runtime.name}"'
    assert f'agent_requests_total{{{label},outcome="success",protocol="openai"}} 1.0' in metrics
    assert f"agent_active_sessions{{{label}}} 0.0" in metrics
    assert f'agent_llm_tokens_total{{{label},direction="input",model="openai/gpt-4o"}}' in metrics
    assert f'agent_request_duration_seconds_count{{{label},protocol="openai"}} 1.0' in metrics


def test_human_question_over_the_openai_api(llm: MockLLM, agent_runtime: Any) -> None:
    """With a conversation id, a human tool's question is the reply and the next message is
    the answer — the same pause and resume as A2A input-required."""
    from tests.runtime_manifests import human_tool

    llm.set_script({"rules": [
        {"name": "ask", "contains": "refund", "has_tool_result": False,
         "tool_calls": [{"name": "ask-operator", "arguments": {"question": "Approve 40 EUR?"}}]},
        {"name": "done", "has_tool_result": "ask-operator", "content": "Operator said {{tool_result}}"},
    ]})
    try:
        name = unique("human")
        runtime = agent_runtime([agent(name, model("openai", llm.url),
                                       tools=[{"name": "ask-operator"}]),
                                 human_tool(), secret()])
        cid = str(uuid.uuid4())
        with openai.OpenAI(base_url=runtime.openai_base_url, api_key="x") as client:
            chunks = list(client.chat.completions.create(
                model=name, messages=[{"role": "user", "content": "refund my order"}],
                stream=True, extra_headers={"X-Conversation-Id": cid}))
            question = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            assert question == "An agent needs your decision.\n\nApprove 40 EUR?"
            assert chunks[-1].model_extra["kagent"] == {"input_required": True,
                                                        "model": "openai/gpt-4o"}
            answer = client.chat.completions.create(
                model=name, messages=[{"role": "user", "content": "yes"}],
                extra_headers={"X-Conversation-Id": cid})
        assert answer.choices[0].message.content == "Operator said yes"
        assert answer.model_extra["kagent"] == {"input_required": False, "model": "openai/gpt-4o"}
    finally:
        llm.set_script(SCRIPT)
