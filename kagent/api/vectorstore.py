"""Where vectors live: shared by retrieval Tools and long-term Memory."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from kagent.api.base import KagentModel, SecretKeySelector, cel

VectorStoreType = Literal["pgvector", "milvus", "pinecone", "qdrant"]


@dataclass(frozen=True)
class CollectionRule:
    """How one store names its collections: a pattern, a length limit, and the words that say so."""

    pattern: str
    max_length: int
    says: str


COLLECTION_RULES: dict[str, CollectionRule] = {
    # A quoted identifier; PostgreSQL cuts names at 63 bytes and the index adds "_embedding_idx".
    "pgvector": CollectionRule(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$", 49,
                               "a pgvector table name is letters, digits, '_' and '-', at most 49 "
                               "characters"),
    "milvus": CollectionRule(r"^[A-Za-z_][A-Za-z0-9_]*$", 255,
                             "a Milvus collection name starts with a letter or '_' and holds only "
                             "letters, digits and '_', at most 255 characters"),
    "pinecone": CollectionRule(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$", 45,
                               "a Pinecone index name is lower-case letters, digits and '-', starting "
                               "and ending with a letter or digit, at most 45 characters"),
    "qdrant": CollectionRule(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$", 255,
                             "a Qdrant collection name is letters, digits, '_', '-' and '.', at most "
                             "255 characters"),
}


def _collection_validations() -> list[dict[str, str]]:
    rules = []
    for store, rule in COLLECTION_RULES.items():
        this_store = (f"(has(self.type) ? self.type : 'pgvector') != '{store}'")
        rules.append(cel(
            f"{this_store} || (self.collection.matches('{rule.pattern}') "
            f"&& size(self.collection) <= {rule.max_length})",
            f"collection: {rule.says}", ".collection"))
    return rules


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

    model_config = {"json_schema_extra": {"x-kubernetes-validations": _collection_validations()}}

    type: VectorStoreType = "pgvector"
    """Which store: pgvector (PostgreSQL), milvus, pinecone or qdrant."""
    connection: VectorStoreConnection
    """How to reach it."""
    collection: Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")]
    """Table (pgvector), collection (milvus, qdrant) or index (pinecone) name, by the store's own
    rules: pgvector letters, digits, '_' and '-' (at most 49); Milvus a letter or '_' then letters,
    digits and '_'; Pinecone lower-case letters, digits and '-' (at most 45); Qdrant letters,
    digits, '_', '-' and '.'."""

    @model_validator(mode="after")
    def _collection_fits_the_store(self) -> Self:
        rule = COLLECTION_RULES[self.type]
        if len(self.collection) > rule.max_length or not re.fullmatch(rule.pattern, self.collection):
            raise ValueError(f"collection {self.collection!r}: {rule.says}")
        return self
