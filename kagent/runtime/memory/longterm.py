"""Long-term memory: what users said in one conversation, embedded into a vector store and
recalled into later conversations by similarity to the new message.

What is remembered is the user's own words, one entry per message, tagged with the agent and
conversation; nothing is paraphrased by a model, so nothing is invented and no extra model call
is paid per turn. Recall skips entries of the current conversation (they are in its history).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from kagent.api.memory import LongTermMemorySpec
from kagent.runtime.context import RuntimeContext

logger = logging.getLogger("kagent.runtime.memory")

MIN_WORDS = 3
"""Shorter messages ("yes", "thanks!") carry no fact worth recalling."""

RECALL_HEADING = (
    "Things the user told you in earlier conversations (use them if they help; they may be "
    "out of date):"
)


class LongTermMemory:
    def __init__(self, spec: LongTermMemorySpec, ctx: RuntimeContext, *, agent_name: str) -> None:
        if spec.vector_store is None:
            raise ValueError("longTerm.vectorStore is required when long-term memory is enabled")
        self.spec = spec
        self.ctx = ctx
        self.agent_name = agent_name
        self._store = None

    def _open(self, dimensions: int):
        if self._store is None:
            from kagent.runtime.tools.vectorstore import open_vector_store

            assert self.spec.vector_store is not None
            self._store = open_vector_store(self.spec.vector_store, dimensions, self.ctx)
        return self._store

    async def _embed(self, texts: list[str]) -> list[list[float]]:
        from kagent.runtime.tools.embeddings import embed

        return await embed(texts, self.spec.embedding, self.ctx)

    async def remember(self, conversation_id: str, texts: list[str]) -> int:
        """Store the user's messages worth keeping; returns how many were stored."""
        keep = [t.strip() for t in texts if t and len(t.split()) >= MIN_WORDS]
        if not keep:
            return 0
        vectors = await self._embed(keep)
        now = datetime.now(UTC).isoformat()
        metadata = [
            {"agent": self.agent_name, "conversation_id": conversation_id, "role": "user",
             "remembered_at": now}
            for _ in keep
        ]
        await self._open(len(vectors[0])).add(keep, vectors, metadata)
        return len(keep)

    async def recall(self, query: str, conversation_id: str) -> list[str]:
        """Remembered texts closest to ``query`` from other conversations of this agent."""
        if not query.strip():
            return []
        (vector,) = await self._embed([query])
        store = self._open(len(vector))
        # Ask for more than top_k: hits from this conversation or another agent are skipped.
        hits = await store.search(vector, self.spec.top_k * 3)
        found: list[str] = []
        for hit in hits:
            metadata = getattr(hit, "metadata", None) or {}
            if metadata.get("conversation_id") == conversation_id:
                continue
            if metadata.get("agent") not in (None, self.agent_name):
                continue
            text = getattr(hit, "text", "")
            if text and text not in found:
                found.append(text)
            if len(found) >= self.spec.top_k:
                break
        return found

    async def close(self) -> None:
        if self._store is not None:
            await self._store.close()


def recall_instructions(facts: list[str]) -> str | None:
    if not facts:
        return None
    return RECALL_HEADING + "\n" + "\n".join(f"- {fact}" for fact in facts)
