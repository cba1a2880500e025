"""Pick and connect the session store a Memory spec asks for."""

from __future__ import annotations

from urllib.parse import quote

from kagent.api.memory import MemoryConfig, MemorySpec
from kagent.runtime.memory import postgres as pg
from kagent.runtime.memory import redis as rd
from kagent.runtime.memory.base import SessionStore
from kagent.runtime.memory.inmemory import InMemorySessionStore
from kagent.runtime.secrets import SecretResolver

DEFAULT_CONFIG = MemoryConfig()
"""Used when an Agent has no memory: history still carries between turns, in the pod."""


def store_namespace(namespace: str, agent_name: str) -> str:
    return f"{namespace}/{agent_name}"


def open_session_store(
    memory: MemorySpec | None, *, namespace: str, agent_name: str, secrets: SecretResolver
) -> SessionStore:
    """The store for ``memory`` (in-memory when none is given); not yet connected."""
    config = (memory.config if memory else None) or DEFAULT_CONFIG
    common = {
        "namespace": store_namespace(namespace, agent_name),
        "ttl": config.ttl,
        "max_history": config.max_history,
    }
    kind = memory.type if memory else "in-memory"
    if kind == "in-memory":
        return InMemorySessionStore(**common)
    password = secrets.get_optional(config.secret_ref)
    if kind == "redis":
        return rd.RedisSessionStore(redis_url(config), password=password, **common)
    if kind == "postgres":
        return pg.PostgresSessionStore(postgres_conninfo(config), password=password, **common)
    raise ValueError(f"memory type {kind!r} is not supported")


def redis_url(config: MemoryConfig) -> str:
    if config.url:
        return config.url
    port = config.port or rd.DEFAULT_PORT
    database = f"/{config.database}" if config.database else ""
    return f"redis://{config.host}:{port}{database}"


def postgres_conninfo(config: MemoryConfig) -> str:
    """A libpq URL; the user defaults to ``postgres`` when neither url nor anything names one."""
    if config.url:
        return config.url
    port = config.port or pg.DEFAULT_PORT
    database = quote(config.database or "postgres")
    return f"postgresql://{pg.DEFAULT_USER}@{config.host}:{port}/{database}"
