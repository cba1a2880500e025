"""Long-term memory: what a user said in one conversation is embedded into pgvector (a real
PostgreSQL) and recalled into another conversation of the same agent."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import openai
import psycopg
import pytest

from kagent.runtime.memory.longterm import RECALL_HEADING
from kagent.mockllm import MockLLM
from kagent.local.services import PostgresServer
from tests.runtime_manifests import agent, model, secret, unique

SCRIPT = {
    "rules": [
        {"name": "recalled", "system_contains": "favourite colour is teal",
         "contains": "favourite colour", "content": "Your favourite colour is teal."},
    ],
    "default": {"content": "Noted."},
    "embeddings": {"dimensions": 64},
}


@pytest.fixture(scope="module")
def llm() -> Iterator[MockLLM]:
    with MockLLM(SCRIPT) as server:
        yield server


def test_a_fact_from_one_conversation_is_recalled_in_another(
    llm: MockLLM, agent_runtime: Any, postgres_server: PostgresServer
) -> None:
    llm.reset()
    name = unique("longterm")
    collection = f"facts_{uuid.uuid4().hex[:8]}"
    runtime = agent_runtime([
        agent(name, model("openai", llm.url), memory={
            "type": "in-memory",
            "longTerm": {
                "enabled": True, "topK": 2,
                "vectorStore": {"type": "pgvector", "collection": collection, "connection": {
                    "url": postgres_server.url, "secretRef": {"name": "pg", "key": "password"}}},
                "embedding": {"provider": "vllm", "model": "mock-embed",
                              "endpoint": f"{llm.url}/v1"},
            },
        }),
        secret(),
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "pg"},
         "stringData": {"password": postgres_server.password}},
    ])
    client = openai.OpenAI(base_url=runtime.openai_base_url, api_key="x")

    def say(cid: str, text: str) -> str:
        reply = client.chat.completions.create(
            model=name, messages=[{"role": "user", "content": text}],
            extra_headers={"X-Conversation-Id": cid})
        return reply.choices[0].message.content or ""

    def last_chat() -> Any:
        return [c for c in llm.calls if c.endpoint == "chat"][-1]

    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    say(first, "My favourite colour is teal, by the way.")
    say(first, "I also collect vintage maps of harbours.")
    # Nothing is recalled into the conversation the facts came from: its history has them.
    assert last_chat().messages[0]["text"] == "My favourite colour is teal, by the way."
    assert RECALL_HEADING not in last_chat().system

    assert say(second, "Do you remember my favourite colour?") == "Your favourite colour is teal."
    recalled = last_chat()
    assert recalled.rule == "recalled"
    assert RECALL_HEADING in recalled.system
    # The closest fact comes first; this conversation's own history is empty.
    facts = recalled.system.split(RECALL_HEADING, 1)[1].strip().splitlines()
    assert facts[0] == "- My favourite colour is teal, by the way."
    assert [m["text"] for m in recalled.messages] == ["Do you remember my favourite colour?"]
    client.close()

    # The facts live in the agent's pgvector table, tagged with agent and conversation.
    with psycopg.connect(postgres_server.url, password=postgres_server.password) as connection:
        rows = connection.execute(
            f"SELECT content, metadata FROM {collection} ORDER BY content").fetchall()
    contents = [row[0] for row in rows]
    assert "My favourite colour is teal, by the way." in contents
    metadata = {row[0]: row[1] for row in rows}["My favourite colour is teal, by the way."]
    assert metadata["agent"] == name and metadata["conversation_id"] == first
    embed_calls = [c for c in llm.calls if c.endpoint == "embeddings"]
    assert embed_calls and all(c.model == "mock-embed" for c in embed_calls)
