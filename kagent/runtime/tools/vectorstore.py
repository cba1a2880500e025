"""Vector stores behind one small interface: add passages, search by vector, close.

pgvector (PostgreSQL, through psycopg) is the default; Milvus, Pinecone and Qdrant are reached
through their HTTP APIs with the runtime's shared httpx client. Scores are always "higher is
closer" (cosine similarity), whatever the store reports natively.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import httpx

from kagent.api.vectorstore import VectorStore as VectorStoreSpec
from kagent.runtime.context import RuntimeContext

SOURCE_KEYS = ("source", "url", "uri", "path", "file", "title", "document", "doc_id", "id")
TEXT_KEYS = ("text", "content", "page_content", "chunk", "passage")


class VectorStoreError(RuntimeError):
    """The store refused a request or answered something unusable; the message says which."""


@dataclass(frozen=True)
class Passage:
    """One search hit."""

    text: str
    score: float
    """Cosine similarity: 1 is identical, 0 unrelated."""
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def source(self) -> str | None:
        """Where the passage came from: the first of source, url, path, title… in metadata."""
        for key in SOURCE_KEYS:
            value = self.metadata.get(key)
            if value not in (None, ""):
                return str(value)
        return None


class VectorStore(Protocol):
    async def add(self, texts: list[str], vectors: list[list[float]],
                  metadata: list[dict[str, Any]]) -> None: ...

    async def search(self, vector: list[float], top_k: int) -> list[Passage]: ...

    async def close(self) -> None: ...


def open_vector_store(spec: VectorStoreSpec, dimensions: int | None,
                      ctx: RuntimeContext) -> VectorStore:
    """A client for the store; nothing is contacted until the first call.

    ``dimensions`` sizes the table or collection when ``add`` has to create it (the length of
    the first vector is used when it is None).
    """
    secret = ctx.secrets.get_optional(spec.connection.secret_ref)
    if spec.type == "pgvector":
        return PgVectorStore(spec, dimensions, secret)
    stores = {"qdrant": QdrantStore, "pinecone": PineconeStore, "milvus": MilvusStore}
    store_class: type[_HttpStore] = stores[spec.type]
    return store_class(spec, dimensions, secret, ctx.http)


def _check_lengths(texts: Sequence[str], vectors: Sequence[Sequence[float]],
                   metadata: Sequence[dict[str, Any]]) -> None:
    if not (len(texts) == len(vectors) == len(metadata)):
        raise ValueError(
            f"add() needs as many vectors and metadata as texts "
            f"({len(texts)} texts, {len(vectors)} vectors, {len(metadata)} metadata)"
        )


def _split_payload(payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Text and metadata from a stored payload, written by us or by a common ingestion tool
    (LangChain keeps ``page_content`` and a nested ``metadata``)."""
    text = ""
    rest = dict(payload)
    for key in TEXT_KEYS:
        if isinstance(rest.get(key), str):
            text = rest.pop(key)
            break
    nested = rest.pop("metadata", None)
    if isinstance(nested, str):
        try:
            nested = json.loads(nested)
        except ValueError:
            nested = {"metadata": nested}
    if isinstance(nested, dict):
        rest = {**rest, **nested}
    return text, rest


# -- pgvector ----------------------------------------------------------------------------------


def vector_literal(vector: Sequence[float]) -> str:
    """pgvector's text form, ``[0.1,0.2]``: no client-side type registration needed."""
    return "[" + ",".join(repr(float(x)) for x in vector) + "]"


def pgvector_conninfo(spec: VectorStoreSpec, secret: str | None) -> tuple[str, str | None]:
    """Connection string and password. The Secret holds either the password or a whole
    connection string (``postgresql://…`` or ``host=… user=…``)."""
    if secret and (secret.startswith(("postgresql://", "postgres://")) or "host=" in secret):
        return secret, None
    connection = spec.connection
    if connection.url:
        url = connection.url
    else:
        host = connection.host or "localhost"
        url = f"postgresql://{host}:{connection.port or 5432}/{connection.database or 'postgres'}"
    parts = urlsplit(url)
    if not parts.username and not os.environ.get("PGUSER"):
        netloc = f"postgres@{parts.netloc}"
        url = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    if connection.url and connection.database and parts.path in ("", "/"):
        url = url.rstrip("/") + "/" + connection.database
    return url, secret


class PgVectorStore:
    """A table ``<collection>(id, content, metadata jsonb, embedding vector(N))`` searched by
    cosine distance (``<=>``). The extension, table and HNSW index are created by the first
    ``add``; a retrieval tool that only searches needs no more than SELECT rights."""

    def __init__(self, spec: VectorStoreSpec, dimensions: int | None, secret: str | None) -> None:
        self.spec = spec
        self.dimensions = dimensions
        self._conninfo, self._password = pgvector_conninfo(spec, secret)
        self._connection: Any = None
        self._lock = asyncio.Lock()
        self._schema_ready = False

    async def _connect(self) -> Any:
        import psycopg

        if self._connection is None or self._connection.closed:
            kwargs: dict[str, Any] = {"autocommit": True, "connect_timeout": 10}
            if self._password is not None:
                kwargs["password"] = self._password
            try:
                self._connection = await psycopg.AsyncConnection.connect(self._conninfo, **kwargs)
            except psycopg.OperationalError as exc:
                raise VectorStoreError(
                    f"cannot connect to PostgreSQL for collection {self.spec.collection}: "
                    + _first_line(str(exc))
                ) from None
        return self._connection

    def _table(self) -> Any:
        from psycopg import sql

        return sql.Identifier(self.spec.collection)

    async def _ensure_schema(self, connection: Any, dimensions: int) -> None:
        from psycopg import sql

        if self._schema_ready:
            return
        await connection.execute("CREATE EXTENSION IF NOT EXISTS vector")
        await connection.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (id bigserial PRIMARY KEY, content text NOT NULL, "
                "metadata jsonb NOT NULL DEFAULT '{{}}'::jsonb, embedding vector({}) NOT NULL)"
            ).format(self._table(), sql.Literal(dimensions))
        )
        if dimensions <= 2000:  # pgvector's HNSW index limit for the vector type
            await connection.execute(
                sql.SQL(
                    "CREATE INDEX IF NOT EXISTS {} ON {} USING hnsw (embedding vector_cosine_ops)"
                ).format(sql.Identifier(f"{self.spec.collection}_embedding_idx"), self._table())
            )
        self._schema_ready = True

    async def add(self, texts: list[str], vectors: list[list[float]],
                  metadata: list[dict[str, Any]]) -> None:
        from psycopg import sql
        from psycopg.types.json import Jsonb

        _check_lengths(texts, vectors, metadata)
        if not texts:
            return
        async with self._lock:
            connection = await self._connect()
            await self._ensure_schema(connection, self.dimensions or len(vectors[0]))
            async with connection.cursor() as cursor:
                await cursor.executemany(
                    sql.SQL(
                        "INSERT INTO {} (content, metadata, embedding) VALUES (%s, %s, %s::vector)"
                    ).format(self._table()),
                    [(t, Jsonb(m), vector_literal(v)) for t, v, m in zip(texts, vectors, metadata,
                                                                         strict=True)],
                )

    async def search(self, vector: list[float], top_k: int) -> list[Passage]:
        import psycopg
        from psycopg import sql

        async with self._lock:
            connection = await self._connect()
            try:
                cursor = await connection.execute(
                    sql.SQL(
                        "SELECT content, metadata, embedding <=> %s::vector AS distance "
                        "FROM {} ORDER BY distance LIMIT %s"
                    ).format(self._table()),
                    (vector_literal(vector), top_k),
                )
            except psycopg.errors.UndefinedTable:
                return []  # nothing was ever added to this collection
            except psycopg.errors.DataException as exc:
                raise VectorStoreError(
                    f"searching {self.spec.collection} failed: {_first_line(str(exc))}"
                ) from None
            rows = await cursor.fetchall()
        return [
            Passage(text=content, score=1.0 - float(distance), metadata=dict(meta or {}))
            for content, meta, distance in rows
        ]

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


# -- HTTP stores -------------------------------------------------------------------------------


class _HttpStore:
    default_port = 80

    def __init__(self, spec: VectorStoreSpec, dimensions: int | None, secret: str | None,
                 http: httpx.AsyncClient) -> None:
        self.spec = spec
        self.dimensions = dimensions
        self.secret = secret
        self.http = http
        self._collection_ready = False

    def base_url(self) -> str:
        connection = self.spec.connection
        if connection.url:
            return connection.url.rstrip("/")
        host = connection.host or "localhost"
        return f"http://{host}:{connection.port or self.default_port}"

    def headers(self) -> dict[str, str]:
        return {"Content-Type": "application/json"}

    async def _request(self, method: str, url: str, body: Any = None,
                       allow: tuple[int, ...] = ()) -> httpx.Response:
        try:
            response = await self.http.request(method, url, json=body, headers=self.headers())
        except httpx.HTTPError as exc:
            raise VectorStoreError(f"cannot reach {self.spec.type} at {url}: {exc}") from None
        if not response.is_success and response.status_code not in allow:
            excerpt = response.text[:300]
            if self.secret:
                excerpt = excerpt.replace(self.secret, "[REDACTED]")
            raise VectorStoreError(
                f"{self.spec.type} answered HTTP {response.status_code} for {method} {url}: "
                f"{excerpt}"
            )
        return response

    async def close(self) -> None:
        """The HTTP client is the runtime's; nothing to release."""


class QdrantStore(_HttpStore):
    """Qdrant's REST API: points with payload ``{text, …metadata}``, cosine distance."""

    default_port = 6333

    def headers(self) -> dict[str, str]:
        headers = super().headers()
        if self.secret:
            headers["api-key"] = self.secret
        return headers

    def _collection_url(self) -> str:
        return f"{self.base_url()}/collections/{self.spec.collection}"

    async def _ensure_collection(self, dimensions: int) -> None:
        if self._collection_ready:
            return
        response = await self._request("GET", self._collection_url(), allow=(404,))
        if response.status_code == 404:
            await self._request("PUT", self._collection_url(),
                                {"vectors": {"size": dimensions, "distance": "Cosine"}})
        self._collection_ready = True

    async def add(self, texts: list[str], vectors: list[list[float]],
                  metadata: list[dict[str, Any]]) -> None:
        _check_lengths(texts, vectors, metadata)
        if not texts:
            return
        await self._ensure_collection(self.dimensions or len(vectors[0]))
        points = [
            {"id": str(uuid.uuid4()), "vector": list(v), "payload": {**m, "text": t}}
            for t, v, m in zip(texts, vectors, metadata, strict=True)
        ]
        await self._request("PUT", f"{self._collection_url()}/points?wait=true",
                            {"points": points})

    async def search(self, vector: list[float], top_k: int) -> list[Passage]:
        response = await self._request(
            "POST", f"{self._collection_url()}/points/query",
            {"query": list(vector), "limit": top_k, "with_payload": True}, allow=(404,),
        )
        if response.status_code == 404:
            return []
        result = response.json().get("result") or {}
        points = result.get("points", []) if isinstance(result, dict) else result
        passages = []
        for point in points:
            text, meta = _split_payload(point.get("payload") or {})
            meta.setdefault("id", point.get("id"))
            passages.append(Passage(text=text, score=float(point.get("score", 0.0)), metadata=meta))
        return passages


PINECONE_CONTROL_PLANE = "https://api.pinecone.io"
PINECONE_API_VERSION = "2025-04"


class PineconeStore(_HttpStore):
    """Pinecone's data-plane API. ``connection.url`` is the index host; without it the host is
    looked up from the index name (``collection``). ``connection.database`` is the namespace.
    The index must exist: creating one needs a cloud and region Kagent does not know."""

    default_port = 443

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        url = self.spec.connection.url
        self._host: str | None = url.rstrip("/") if url else None

    def headers(self) -> dict[str, str]:
        headers = super().headers()
        headers["X-Pinecone-API-Version"] = PINECONE_API_VERSION
        if self.secret:
            headers["Api-Key"] = self.secret
        return headers

    async def _index_host(self) -> str:
        if self._host is None:
            response = await self._request(
                "GET", f"{PINECONE_CONTROL_PLANE}/indexes/{self.spec.collection}"
            )
            host = response.json()["host"]
            self._host = host if host.startswith("http") else f"https://{host}"
        return self._host

    def _namespace(self) -> dict[str, str]:
        ns = self.spec.connection.database
        return {"namespace": ns} if ns else {}

    async def add(self, texts: list[str], vectors: list[list[float]],
                  metadata: list[dict[str, Any]]) -> None:
        _check_lengths(texts, vectors, metadata)
        if not texts:
            return
        records = [
            {"id": str(uuid.uuid4()), "values": list(v), "metadata": {**_flat(m), "text": t}}
            for t, v, m in zip(texts, vectors, metadata, strict=True)
        ]
        host = await self._index_host()
        for start in range(0, len(records), 100):  # Pinecone's documented batch size
            await self._request("POST", f"{host}/vectors/upsert",
                                {"vectors": records[start:start + 100], **self._namespace()})

    async def search(self, vector: list[float], top_k: int) -> list[Passage]:
        host = await self._index_host()
        response = await self._request(
            "POST", f"{host}/query",
            {"vector": list(vector), "topK": top_k, "includeMetadata": True,
             "includeValues": False, **self._namespace()},
        )
        passages = []
        for match in response.json().get("matches", []):
            text, meta = _split_payload(match.get("metadata") or {})
            meta.setdefault("id", match.get("id"))
            passages.append(Passage(text=text, score=float(match.get("score", 0.0)), metadata=meta))
        return passages


def _flat(metadata: dict[str, Any]) -> dict[str, Any]:
    """Pinecone metadata values must be strings, numbers, booleans or lists of strings."""
    out: dict[str, Any] = {}
    for key, value in metadata.items():
        if value is None:
            continue
        if isinstance(value, (str, int, float, bool)):
            out[key] = value
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            out[key] = value
        else:
            out[key] = json.dumps(value)
    return out


class MilvusStore(_HttpStore):
    """Milvus's RESTful API v2. Collections made here use the quick setup (auto id, ``vector``
    field, COSINE metric, dynamic fields for ``text`` and ``metadata``). The Secret holds the
    token: ``user:password`` or an API key."""

    default_port = 19530

    def headers(self) -> dict[str, str]:
        headers = super().headers()
        if self.secret:
            headers["Authorization"] = f"Bearer {self.secret}"
        return headers

    def _body(self, **fields: Any) -> dict[str, Any]:
        body = {"collectionName": self.spec.collection, **fields}
        if self.spec.connection.database:
            body["dbName"] = self.spec.connection.database
        return body

    async def _call(self, path: str, body: dict[str, Any]) -> Any:
        response = await self._request("POST", f"{self.base_url()}/v2/vectordb/{path}", body)
        answer = response.json()
        if answer.get("code", 0) != 0:
            raise VectorStoreError(
                f"milvus refused {path}: {answer.get('message', answer)} "
                f"(code {answer.get('code')})"
            )
        return answer.get("data")

    async def _ensure_collection(self, dimensions: int) -> None:
        if self._collection_ready:
            return
        has = await self._call("collections/has", self._body())
        if not (has or {}).get("has"):
            await self._call("collections/create", self._body(
                dimension=dimensions, metricType="COSINE", idType="Int64", autoID=True,
                primaryFieldName="id", vectorFieldName="vector",
            ))
        self._collection_ready = True

    async def add(self, texts: list[str], vectors: list[list[float]],
                  metadata: list[dict[str, Any]]) -> None:
        _check_lengths(texts, vectors, metadata)
        if not texts:
            return
        await self._ensure_collection(self.dimensions or len(vectors[0]))
        rows = [{"vector": list(v), "text": t, "metadata": m}
                for t, v, m in zip(texts, vectors, metadata, strict=True)]
        await self._call("entities/insert", self._body(data=rows))

    async def search(self, vector: list[float], top_k: int) -> list[Passage]:
        hits = await self._call("entities/search", self._body(
            data=[list(vector)], annsField="vector", limit=top_k,
            outputFields=["text", "metadata"],
        ))
        passages = []
        for hit in hits or []:
            hit = dict(hit)
            score = float(hit.pop("distance", 0.0))
            hit_id = hit.pop("id", None)
            text, meta = _split_payload(hit)
            if hit_id is not None:
                meta.setdefault("id", hit_id)
            passages.append(Passage(text=text, score=score, metadata=meta))
        return passages
