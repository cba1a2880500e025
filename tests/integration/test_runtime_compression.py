"""Compression: past the threshold, the model summarises the older turns; the summary replaces
them in the backend and the recent turns stay verbatim."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from kagent.runtime.memory.compression import SUMMARY_INSTRUCTIONS
from kagent.runtime.memory.factory import open_session_store
from kagent.mockllm import MockLLM
from kagent.local.services import RedisServer
from tests.runtime_manifests import agent, model, secret, unique

SUMMARY = "The user is Ada; she likes green tea and lives in Lisbon."
SCRIPT = {
    "rules": [
        {"name": "summarise", "system_contains": "You write summaries of conversations",
         "model": "summary-model", "content": SUMMARY},
        {"name": "with-summary", "system_contains": "likes green tea",
         "content": "(knows the summary) {{last_user}}"},
    ],
    "default": {"content": "ok: {{last_user}}"},
}


@pytest.fixture(scope="module")
def llm() -> Iterator[MockLLM]:
    with MockLLM(SCRIPT) as server:
        yield server


@pytest.mark.parametrize("backend", ["in-memory", "redis"])
def test_compression_keeps_recent_turns_and_the_summary(
    backend: str, llm: MockLLM, agent_runtime: Any, redis_server: RedisServer
) -> None:
    llm.reset()
    name = unique("compress")
    memory: dict[str, Any] = {
        "type": backend,
        "config": {"maxHistory": 50},
        "compression": {"enabled": True, "threshold": 4, "keepRecent": 2,
                        "model": model("openai", llm.url, name="summary-model")},
    }
    if backend == "redis":
        memory["config"]["url"] = redis_server.url
    runtime = agent_runtime([agent(name, model("openai", llm.url), memory=memory), secret()])
    client = openai.OpenAI(base_url=runtime.openai_base_url, api_key="x")
    cid = str(uuid.uuid4())

    def say(text: str) -> str:
        reply = client.chat.completions.create(
            model=name, messages=[{"role": "user", "content": text}],
            extra_headers={"X-Conversation-Id": cid})
        return reply.choices[0].message.content or ""

    say("Hi, I am Ada")
    say("I like green tea")
    assert not [c for c in llm.calls if c.rule == "summarise"]  # 4 messages: not past threshold
    say("I live in Lisbon")  # 6 messages > 4: the first two exchanges are summarised

    summaries = [c for c in llm.calls if c.rule == "summarise"]
    assert len(summaries) == 1
    assert summaries[0].system.strip() == SUMMARY_INSTRUCTIONS
    transcript = summaries[0].last_user
    assert "User: Hi, I am Ada" in transcript and "Assistant: ok: I like green tea" in transcript
    assert "Lisbon" not in transcript  # the recent turn is kept, not summarised

    session = asyncio.run(_load(runtime, cid))
    assert session.summary == SUMMARY
    assert [str(p.content) for m in session.messages for p in m.parts] == [
        "I live in Lisbon", "ok: I live in Lisbon"]

    # The next turn sees the summary (as a system prompt) and the recent turn verbatim.
    assert say("Where do I live?") == "(knows the summary) Where do I live?"
    last = llm.calls[-1]
    assert SUMMARY in last.system
    assert [m["text"] for m in last.messages] == [
        "I live in Lisbon", "ok: I live in Lisbon", "Where do I live?"]
    client.close()


async def _load(runtime: Any, cid: str) -> Any:
    config = runtime.config
    if config.memory.type == "in-memory":
        return await runtime.runtime.store.load(cid)
    store = open_session_store(config.memory, namespace=config.namespace, agent_name=config.name,
                               secrets=config.secrets)
    try:
        return await store.load(cid)
    finally:
        await store.close()
