"""Retrieval against pgvector in a real PostgreSQL (password auth over TCP), with embeddings from
the scripted model server's real /v1/embeddings endpoint."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest
from pydantic_ai import Agent
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

from kagent.api import Tool
from kagent.api.model import EmbeddingSpec
from kagent.api.vectorstore import VectorStore as VectorStoreSpec
from kagent.runtime.context import RuntimeContext
from kagent.runtime.secrets import SecretResolver
from kagent.runtime.tools import build_toolset, embed, open_vector_store
from kagent.mockllm import MockLLM, embed_text
from kagent.local.services import PostgresServer

DIMENSIONS = 64
DOCS = [
    ("pgvector stores embeddings in PostgreSQL tables and searches them by cosine distance",
     "pgvector.md"),
    ("Redis keeps session history with a TTL for each conversation", "redis.md"),
    ("Kubernetes Deployments roll out new pods gradually", "k8s.md"),
    ("PostgreSQL tables can hold embeddings next to ordinary columns", "postgres.md"),
]
QUESTION = "How do I store embeddings in PostgreSQL?"


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


@pytest.fixture(scope="module")
def llm() -> Iterator[MockLLM]:
    script = {
        "embeddings": {"dimensions": DIMENSIONS},
        "rules": [
            {"has_tool_result": False, "tools_offered": "search-docs",
             "tool_calls": [{"name": "search-docs", "arguments": {"query": "{{last_user}}"}}]},
            {"has_tool_result": "search-docs", "content": "{{tool_result}}"},
        ],
    }
    with MockLLM(script) as server:
        yield server


@pytest.fixture
async def ctx(postgres: PostgresServer) -> AsyncIterator[RuntimeContext]:
    secrets = SecretResolver(
        [{"metadata": {"name": "pg"}, "stringData": {"password": postgres.password,
                                                     "wrong": "not-the-password"}}],
        environ={},
    )
    context = RuntimeContext(agent_name="rag-agent", namespace="default", secrets=secrets)
    yield context
    await context.http.aclose()


def store_spec(postgres: PostgresServer, collection: str, key: str = "password") -> dict[str, Any]:
    return {"type": "pgvector", "collection": collection,
            "connection": {"url": postgres.url, "secretRef": {"name": "pg", "key": key}}}


def embedding(llm: MockLLM) -> dict[str, Any]:
    return {"provider": "vllm", "model": "mini-embed", "endpoint": llm.openai_base_url,
            "dimensions": DIMENSIONS}


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))  # embed_text vectors are unit length


async def ingest(postgres: PostgresServer, llm: MockLLM, ctx: RuntimeContext) -> str:
    collection = f"support-docs-{uuid.uuid4().hex[:8]}"  # a hyphen: the table name is quoted
    spec = VectorStoreSpec.model_validate(store_spec(postgres, collection))
    store = open_vector_store(spec, DIMENSIONS, ctx)
    texts = [t for t, _ in DOCS]
    vectors = await embed(texts, EmbeddingSpec.model_validate(embedding(llm)), ctx)
    await store.add(texts, vectors, [{"source": s} for _, s in DOCS])
    await store.close()
    return collection


async def test_pgvector_returns_passages_in_similarity_order(
    postgres: PostgresServer, llm: MockLLM, ctx: RuntimeContext
) -> None:
    collection = await ingest(postgres, llm, ctx)
    spec = VectorStoreSpec.model_validate(store_spec(postgres, collection))
    store = open_vector_store(spec, DIMENSIONS, ctx)
    query = embed_text(QUESTION, DIMENSIONS)
    passages = await store.search(query, 3)
    await store.close()

    expected = sorted(DOCS, key=lambda d: -cosine(query, embed_text(d[0], DIMENSIONS)))[:3]
    assert [p.source for p in passages] == [s for _, s in expected]
    assert [p.text for p in passages] == [t for t, _ in expected]
    for passage in passages:
        assert passage.score == pytest.approx(cosine(query, embed_text(passage.text, DIMENSIONS)),
                                              abs=1e-5)
    assert passages[0].source == "pgvector.md"

    with psycopg.connect(postgres.url, password=postgres.password) as conn:
        column = conn.execute(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = %s::regclass AND attname = 'embedding'", (f'"{collection}"',)
        ).fetchone()
        index = conn.execute("SELECT indexdef FROM pg_indexes WHERE tablename = %s "
                             "AND indexname LIKE '%%embedding%%'", (collection,)).fetchone()
    assert column == (f"vector({DIMENSIONS})",)
    assert index is not None and "hnsw" in index[0] and "vector_cosine_ops" in index[0]


async def test_agent_uses_the_retrieval_tool(postgres: PostgresServer, llm: MockLLM,
                                             ctx: RuntimeContext) -> None:
    collection = await ingest(postgres, llm, ctx)
    tool = Tool.model_validate({
        "apiVersion": "kagent.dev/v1alpha1", "kind": "Tool",
        "metadata": {"name": "search-docs", "namespace": "default"},
        "spec": {"type": "retrieval", "description": "Search the documentation.",
                 "retrieval": {"vectorStore": store_spec(postgres, collection), "topK": 2,
                               "embedding": embedding(llm)}},
    })
    toolset = await build_toolset(tool, ctx)
    llm.reset()
    model = OpenAIChatModel("gpt-4o", provider=OpenAIProvider(base_url=llm.openai_base_url,
                                                              api_key="sk-test"))
    result = await Agent(model, toolsets=[toolset]).run(QUESTION)

    passages = json.loads(result.output)
    assert [p["rank"] for p in passages] == [1, 2]
    assert passages[0]["source"] == "pgvector.md"
    assert passages[0]["text"] == DOCS[0][0]
    assert passages[0]["score"] >= passages[1]["score"] > 0
    embedding_calls = [c for c in llm.calls if c.endpoint == "embeddings"]
    assert [c.inputs for c in embedding_calls] == [[QUESTION]]


async def test_wrong_password_and_empty_collection(postgres: PostgresServer, llm: MockLLM,
                                                   ctx: RuntimeContext) -> None:
    def tool(collection: str, key: str) -> Tool:
        return Tool.model_validate({
            "apiVersion": "kagent.dev/v1alpha1", "kind": "Tool",
            "metadata": {"name": "search-docs", "namespace": "default"},
            "spec": {"type": "retrieval", "description": "Search.",
                     "retrieval": {"vectorStore": store_spec(postgres, collection, key),
                                   "embedding": embedding(llm)}},
        })

    model = OpenAIChatModel("gpt-4o", provider=OpenAIProvider(base_url=llm.openai_base_url,
                                                              api_key="sk-test"))
    empty = await Agent(model, toolsets=[await build_toolset(tool("never_written", "password"),
                                                             ctx)]).run(QUESTION)
    assert empty.output == "No passages found."
    denied = await Agent(model, toolsets=[await build_toolset(tool("docs", "wrong"),
                                                              ctx)]).run(QUESTION)
    assert "password authentication failed" in denied.output
    assert "not-the-password" not in denied.output
