"""Qdrant, Pinecone and Milvus adapters, against in-memory stand-ins of their REST APIs.

Those servers cannot run here, so each stand-in (an httpx MockTransport) checks that requests
have the documented shape — paths, methods, auth headers, body fields — and answers in the
documented response shape, computing real cosine similarities so search order means something.
pgvector is tested against a real PostgreSQL in tests/integration/test_tools_retrieval.py.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from kagent.api.vectorstore import VectorStore as VectorStoreSpec
from kagent.runtime.context import RuntimeContext
from kagent.runtime.secrets import SecretResolver
from kagent.runtime.tools.vectorstore import VectorStoreError, open_vector_store

KEY = "store-api-key-1"
TEXTS = ["alpha document", "beta document", "gamma document"]
VECTORS = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.7, 0.7, 0.0]]
META = [{"source": "a.md"}, {"source": "b.md", "page": 2}, {"url": "https://c"}]


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


class StandIn:
    """Records requests; ``routes`` maps (method, path) to a handler returning (status, json)."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.routes: dict[tuple[str, str], Callable[[httpx.Request], tuple[int, Any]]] = {}

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        handler = self.routes.get((request.method, request.url.path))
        if handler is None:
            return httpx.Response(404, json={"error": f"no route {request.url.path}"})
        status, body = handler(request)
        return httpx.Response(status, json=body)

    def paths(self) -> list[str]:
        return [f"{r.method} {r.url.path}" for r in self.requests]


def body(request: httpx.Request) -> Any:
    return json.loads(request.content)


@pytest.fixture
async def stand_in() -> AsyncIterator[tuple[StandIn, RuntimeContext]]:
    fake = StandIn()
    secrets = SecretResolver([{"metadata": {"name": "store"}, "stringData": {"key": KEY}}],
                             environ={})
    ctx = RuntimeContext(agent_name="a", namespace="n", secrets=secrets,
                         http=httpx.AsyncClient(transport=httpx.MockTransport(fake.handle)))
    yield fake, ctx
    await ctx.http.aclose()


def spec(kind: str, **connection: Any) -> VectorStoreSpec:
    return VectorStoreSpec.model_validate({
        "type": kind, "collection": "docs",
        "connection": {"secretRef": {"name": "store", "key": "key"}, **connection},
    })


async def test_qdrant(stand_in: tuple[StandIn, RuntimeContext]) -> None:
    fake, ctx = stand_in
    points: list[dict[str, Any]] = []
    created: list[Any] = []

    def get_collection(request: httpx.Request) -> tuple[int, Any]:
        if not created:
            return 404, {"status": {"error": "Not found: Collection `docs` doesn't exist!"}}
        return 200, {"result": {"status": "green"}, "status": "ok"}

    def put_collection(request: httpx.Request) -> tuple[int, Any]:
        created.append(body(request))
        return 200, {"result": True, "status": "ok", "time": 0.01}

    def upsert(request: httpx.Request) -> tuple[int, Any]:
        assert request.url.params["wait"] == "true"
        for point in body(request)["points"]:
            assert set(point) == {"id", "vector", "payload"}
            points.append(point)
        return 200, {"result": {"operation_id": 1, "status": "completed"}, "status": "ok"}

    def query(request: httpx.Request) -> tuple[int, Any]:
        query = body(request)
        assert set(query) == {"query", "limit", "with_payload"} and query["with_payload"] is True
        scored = sorted(({"id": p["id"], "version": 1, "score": cosine(query["query"], p["vector"]),
                          "payload": p["payload"]} for p in points), key=lambda p: -p["score"])
        return 200, {"result": {"points": scored[: query["limit"]]}, "status": "ok"}

    fake.routes = {
        ("GET", "/collections/docs"): get_collection,
        ("PUT", "/collections/docs"): put_collection,
        ("PUT", "/collections/docs/points"): upsert,
        ("POST", "/collections/docs/points/query"): query,
    }
    store = open_vector_store(spec("qdrant", host="qdrant", port=6333), 3, ctx)
    await store.add(TEXTS, VECTORS, META)
    passages = await store.search([0.9, 0.1, 0.0], 2)
    assert created == [{"vectors": {"size": 3, "distance": "Cosine"}}]
    assert all(r.headers["api-key"] == KEY for r in fake.requests)
    assert all(str(r.url).startswith("http://qdrant:6333/") for r in fake.requests)
    assert [p.text for p in passages] == ["alpha document", "gamma document"]
    assert passages[0].source == "a.md" and passages[1].source == "https://c"
    assert passages[0].score == pytest.approx(cosine([0.9, 0.1, 0.0], [1, 0, 0]))
    await store.add(["delta"], [[0.0, 0.0, 1.0]], [{}])
    assert fake.paths().count("GET /collections/docs") == 1  # existence is checked once


async def test_pinecone_resolves_the_index_host_and_uses_the_namespace(
    stand_in: tuple[StandIn, RuntimeContext]
) -> None:
    fake, ctx = stand_in
    vectors: list[dict[str, Any]] = []

    def describe(request: httpx.Request) -> tuple[int, Any]:
        assert request.url.host == "api.pinecone.io"
        return 200, {"name": "docs", "dimension": 3, "metric": "cosine",
                     "host": "docs-abc123.svc.aped-4627-b74a.pinecone.io",
                     "status": {"ready": True, "state": "Ready"}}

    def upsert(request: httpx.Request) -> tuple[int, Any]:
        assert request.url.host == "docs-abc123.svc.aped-4627-b74a.pinecone.io"
        payload = body(request)
        assert payload["namespace"] == "team-a"
        for record in payload["vectors"]:
            assert set(record) == {"id", "values", "metadata"}
            assert all(isinstance(v, (str, int, float, bool, list)) for v in
                       record["metadata"].values())
            vectors.append(record)
        return 200, {"upsertedCount": len(payload["vectors"])}

    def query(request: httpx.Request) -> tuple[int, Any]:
        payload = body(request)
        assert payload["namespace"] == "team-a" and payload["includeMetadata"] is True
        matches = sorted(({"id": v["id"], "score": cosine(payload["vector"], v["values"]),
                           "values": [], "metadata": v["metadata"]} for v in vectors),
                         key=lambda m: -m["score"])
        return 200, {"matches": matches[: payload["topK"]], "namespace": "team-a",
                     "usage": {"readUnits": 1}}

    fake.routes = {
        ("GET", "/indexes/docs"): describe,
        ("POST", "/vectors/upsert"): upsert,
        ("POST", "/query"): query,
    }
    store = open_vector_store(spec("pinecone", database="team-a"), None, ctx)
    await store.add(TEXTS, VECTORS, [{"source": "a.md", "tags": {"nested": True}}, {}, {}])
    passages = await store.search([0.0, 1.0, 0.1], 3)
    assert [p.text for p in passages] == ["beta document", "gamma document", "alpha document"]
    assert passages[2].metadata["tags"] == '{"nested": true}'  # flattened for Pinecone
    assert all(r.headers["Api-Key"] == KEY and r.headers["X-Pinecone-API-Version"]
               for r in fake.requests)
    assert fake.paths().count("GET /indexes/docs") == 1


async def test_milvus(stand_in: tuple[StandIn, RuntimeContext]) -> None:
    fake, ctx = stand_in
    rows: list[dict[str, Any]] = []
    created: list[dict[str, Any]] = []

    def has(request: httpx.Request) -> tuple[int, Any]:
        assert body(request) == {"collectionName": "docs", "dbName": "kb"}
        return 200, {"code": 0, "data": {"has": bool(created)}}

    def create(request: httpx.Request) -> tuple[int, Any]:
        created.append(body(request))
        return 200, {"code": 0, "data": {}}

    def insert(request: httpx.Request) -> tuple[int, Any]:
        data = body(request)["data"]
        for row in data:
            rows.append({**row, "id": 1000 + len(rows)})
        return 200, {"code": 0, "data": {"insertCount": len(data), "insertIds": []}}

    def search(request: httpx.Request) -> tuple[int, Any]:
        payload = body(request)
        assert payload["annsField"] == "vector" and payload["outputFields"] == ["text", "metadata"]
        [query] = payload["data"]
        hits = sorted(({"id": r["id"], "distance": cosine(query, r["vector"]), "text": r["text"],
                        "metadata": r["metadata"]} for r in rows), key=lambda h: -h["distance"])
        return 200, {"code": 0, "cost": 0, "data": hits[: payload["limit"]]}

    fake.routes = {
        ("POST", "/v2/vectordb/collections/has"): has,
        ("POST", "/v2/vectordb/collections/create"): create,
        ("POST", "/v2/vectordb/entities/insert"): insert,
        ("POST", "/v2/vectordb/entities/search"): search,
    }
    store = open_vector_store(spec("milvus", url="http://milvus:19530", database="kb"), None, ctx)
    await store.add(TEXTS, VECTORS, META)
    passages = await store.search([0.6, 0.8, 0.0], 2)
    assert created == [{"collectionName": "docs", "dbName": "kb", "dimension": 3,
                        "metricType": "COSINE", "idType": "Int64", "autoID": True,
                        "primaryFieldName": "id", "vectorFieldName": "vector"}]
    assert [p.text for p in passages] == ["gamma document", "beta document"]
    assert passages[1].metadata == {"source": "b.md", "page": 2, "id": 1001}
    assert all(r.headers["authorization"] == f"Bearer {KEY}" for r in fake.requests)

    fake.routes[("POST", "/v2/vectordb/entities/search")] = lambda r: (
        200, {"code": 1100, "message": "collection not loaded"})
    with pytest.raises(VectorStoreError, match="collection not loaded"):
        await store.search([1.0, 0.0, 0.0], 1)


async def test_http_errors_never_show_the_key(stand_in: tuple[StandIn, RuntimeContext]) -> None:
    fake, ctx = stand_in
    fake.routes = {("POST", "/collections/docs/points/query"):
                   lambda r: (403, {"status": {"error": f"bad key {KEY}"}})}
    store = open_vector_store(spec("qdrant", url="http://qdrant:6333"), 3, ctx)
    with pytest.raises(VectorStoreError) as error:
        await store.search([1.0, 0.0, 0.0], 1)
    assert "HTTP 403" in str(error.value) and KEY not in str(error.value)
