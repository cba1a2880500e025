"""Deterministic embeddings: shared words mean closer vectors, through the openai SDK."""

from __future__ import annotations

import math
from collections.abc import Iterator

import openai
import pytest

from kagent.mockllm import MockLLM, embed_text
from kagent.mockllm.embeddings import cosine


@pytest.fixture(scope="module")
def llm() -> Iterator[MockLLM]:
    with MockLLM({"embeddings": {"dimensions": 128}}) as server:
        yield server


def test_vectors_are_unit_length_and_stable() -> None:
    first = embed_text("Kubernetes operators reconcile state", 64)
    assert first == embed_text("Kubernetes operators reconcile state", 64)
    assert math.isclose(sum(v * v for v in first), 1.0, rel_tol=1e-9)
    assert math.isclose(sum(v * v for v in embed_text("", 64)), 1.0, rel_tol=1e-9)


def test_shared_words_rank_above_unrelated_text() -> None:
    query = embed_text("how do I reset my postgres password", 256)
    related = embed_text("Resetting the Postgres password for a database user", 256)
    unrelated = embed_text("The cat sat quietly on the warm windowsill", 256)
    assert cosine(query, related) > 0.3
    assert cosine(query, related) > cosine(query, unrelated) + 0.2


def test_openai_client_gets_base64_and_float_vectors(llm: MockLLM) -> None:
    client = openai.OpenAI(base_url=llm.openai_base_url, api_key="sk-emb", max_retries=0)
    texts = [
        "deploy the agent with helm",
        "use helm to deploy an agent",
        "bananas are rich in potassium",
    ]
    default = client.embeddings.create(
        model="text-embedding-3-small", input=texts
    )  # SDK asks for base64
    floats = client.embeddings.create(
        model="text-embedding-3-small", input=texts, encoding_format="float"
    )
    vectors = [d.embedding for d in default.data]
    assert [len(v) for v in vectors] == [128, 128, 128]
    for decoded, exact in zip(vectors, (d.embedding for d in floats.data), strict=True):
        assert all(math.isclose(a, b, abs_tol=1e-6) for a, b in zip(decoded, exact, strict=True))
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2]) + 0.3
    assert default.usage.prompt_tokens > 0

    narrow = client.embeddings.create(model="text-embedding-3-small", input="helm", dimensions=32)
    assert len(narrow.data[0].embedding) == 32

    recorded = [c for c in llm.calls if c.endpoint == "embeddings"]
    assert recorded[0].inputs == texts and recorded[0].api_key == "sk-emb"
