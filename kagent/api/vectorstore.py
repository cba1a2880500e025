"""Where vectors live: shared by retrieval Tools and long-term Memory."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from kagent.api.base import KagentModel, SecretKeySelector

VectorStoreType = Literal["pgvector", "milvus", "pinecone", "qdrant"]


class VectorStoreConnection(KagentModel):
    """How to reach the vector store. Credentials come from a Secret, never inline."""

    url: Annotated[str, Field(max_length=2048)] | None = None
    """Connection URL without credentials, e.g. postgresql://pg.ai-data:5432/vectors or
    http://qdrant:6333."""
    host: Annotated[str, Field(max_length=253)] | None = None
    """Host name, when no url is given."""
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    """Port, when no url is given."""
    database: Annotated[str, Field(max_length=63)] | None = None
    """Database name (pgvector) or namespace (pinecone)."""
    secret_ref: SecretKeySelector | None = None
    """Secret key holding the password, API key or full connection string."""


class VectorStore(KagentModel):
    """A vector store collection."""

    type: VectorStoreType = "pgvector"
    """Which store: pgvector (PostgreSQL), milvus, pinecone or qdrant."""
    connection: VectorStoreConnection
    """How to reach it."""
    collection: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
    """Table (pgvector), collection (milvus, qdrant) or index (pinecone) name."""
