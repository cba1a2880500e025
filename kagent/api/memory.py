"""Memory: how an agent remembers a conversation and what it learned across conversations."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from kagent.api.base import (
    ACCEPTED_COLUMN,
    AGE_COLUMN,
    Condition,
    KagentModel,
    PrinterColumn,
    Resource,
    SecretKeySelector,
    cel,
)
from kagent.api.model import EmbeddingSpec, ModelSpec
from kagent.api.vectorstore import VectorStore

MemoryType = Literal["redis", "postgres", "in-memory"]


class BackendConnection(KagentModel):
    """How to reach a Redis or PostgreSQL server (session memory, Budget counters)."""

    host: Annotated[str, Field(max_length=253)] | None = None
    """Host of the Redis or PostgreSQL server, e.g. redis-master.ai-data.svc.cluster.local."""
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    """Port; defaults to 6379 for redis and 5432 for postgres."""
    url: Annotated[str, Field(max_length=2048)] | None = None
    """A full connection URL without password (redis://… or postgresql://…), instead of host
    and port."""
    database: Annotated[str, Field(max_length=63)] | None = None
    """Database name (postgres) or number (redis)."""
    secret_ref: SecretKeySelector | None = None
    """Secret key holding the password (it reaches agent pods as an environment variable)."""


class MemoryConfig(BackendConnection):
    """Connection and session-history policy."""
    ttl: Annotated[int, Field(ge=0)] = 3600
    """Seconds a conversation is kept after its last message; 0 keeps it forever."""
    max_history: Annotated[int, Field(ge=1, le=100_000)] = 50
    """Most messages kept per conversation; older ones are dropped (or summarised when
    compression is enabled)."""


class CompressionSpec(KagentModel):
    """Summarise old turns with a language model once a conversation grows long."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "!has(self.keepRecent) || !has(self.threshold) || self.keepRecent < self.threshold",
                    "keepRecent must be smaller than threshold",
                    ".keepRecent",
                )
            ]
        }
    }

    enabled: bool = False
    """Whether to compress."""
    threshold: Annotated[int, Field(ge=2, le=100_000)] = 40
    """Compress when a conversation holds more messages than this."""
    keep_recent: Annotated[int, Field(ge=1, le=100_000)] = 10
    """Most recent messages kept verbatim; everything older becomes one summary."""
    model: ModelSpec | None = None
    """Model that writes the summary; defaults to the agent's own model."""


class LongTermMemorySpec(KagentModel):
    """Facts from conversations, embedded into a vector store and recalled into later ones."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "!self.enabled || has(self.vectorStore)",
                    "vectorStore is required when long-term memory is enabled",
                    ".vectorStore",
                )
            ]
        }
    }

    enabled: bool = False
    """Whether to remember across conversations."""
    vector_store: VectorStore | None = None
    """Where the facts are stored."""
    embedding: EmbeddingSpec | None = None
    """How facts and queries are embedded."""
    top_k: Annotated[int, Field(ge=1, le=100)] = 5
    """How many remembered facts are recalled into a conversation."""


class MemorySpec(KagentModel):
    """Memory for an agent: session history, optional compression and long-term memory."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "self.type == 'in-memory' || (has(self.config) && "
                    "(has(self.config.host) || has(self.config.url)))",
                    "config.host or config.url is required for redis and postgres memory",
                    ".config",
                )
            ]
        }
    }

    type: MemoryType
    """Where session history is kept: redis, postgres, or in-memory (per pod, lost on restart)."""
    config: MemoryConfig | None = None
    """Connection and history policy."""
    compression: CompressionSpec | None = None
    """Summarise old turns once the conversation passes a threshold."""
    long_term: LongTermMemorySpec | None = None
    """Remember facts across conversations."""


class MemoryStatus(KagentModel):
    """Observed state of a Memory."""

    observed_generation: int | None = None
    """The .metadata.generation this status describes."""
    conditions: list[Condition] | None = None
    """Accepted: the Memory's references (Secrets) resolve."""


class Memory(Resource):
    """Session and long-term memory that Agents refer to with memoryRef."""

    kind_name: ClassVar[str] = "Memory"
    plural: ClassVar[str] = "memories"
    short_names: ClassVar[tuple[str, ...]] = ("mem",)
    printer_columns: ClassVar[tuple[PrinterColumn, ...]] = (
        PrinterColumn(name="Type", json_path=".spec.type"),
        ACCEPTED_COLUMN,
        AGE_COLUMN,
    )

    kind: Literal["Memory"] = "Memory"
    """Always Memory."""
    spec: MemorySpec
    """Desired memory."""
    status: MemoryStatus | None = None
    """Observed state, written by the controller."""
