"""Agent memory: session history (in-memory, Redis or PostgreSQL, with TTL and maxHistory
enforced by the backend), compression of old turns, and long-term memory in a vector store."""

from kagent.runtime.memory.base import Session, SessionStore, usable_history
from kagent.runtime.memory.factory import open_session_store

__all__ = ["Session", "SessionStore", "open_session_store", "usable_history"]
