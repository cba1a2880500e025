"""Compression: once a conversation passes ``threshold`` messages, a model summarises the older
turns and the summary replaces them; the ``keepRecent`` newest messages stay verbatim.

The cut is moved to the start of a user turn so a tool call is never separated from its result,
and the previous summary is fed to the summariser so nothing said early is lost twice.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from pydantic_ai import Agent, InstrumentationSettings
from pydantic_ai.capabilities import AbstractCapability
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    SystemPromptPart,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models import Model
from pydantic_ai.settings import ModelSettings

from kagent.api.memory import CompressionSpec
from kagent.runtime.memory.base import SessionStore, turn_start_at_or_after

logger = logging.getLogger("kagent.runtime.memory")

SUMMARY_INSTRUCTIONS = (
    "You write summaries of conversations between a user and an AI assistant. Summarise the "
    "conversation you are given so that the assistant can continue it without the original: "
    "keep facts about the user, their requests and preferences, decisions made, names, numbers, "
    "results of tool calls and open questions. Be concise (at most 300 words) and write only "
    "the summary."
)
MAX_PART_CHARS = 2000


def transcript(messages: Sequence[ModelMessage], previous_summary: str | None = None) -> str:
    """The messages as plain text a summariser can read."""
    lines: list[str] = []
    if previous_summary:
        lines.append(f"Summary of what came before:\n{previous_summary}\n")
    for message in messages:
        if isinstance(message, ModelRequest):
            for part in message.parts:
                if isinstance(part, UserPromptPart):
                    content = part.content if isinstance(part.content, str) else str(part.content)
                    lines.append(f"User: {_clip(content)}")
                elif isinstance(part, ToolReturnPart):
                    lines.append(f"Tool {part.tool_name} returned: {_clip(part.model_response_str())}")
                elif isinstance(part, SystemPromptPart):
                    continue
        elif isinstance(message, ModelResponse):
            for part in message.parts:
                if isinstance(part, TextPart) and part.content:
                    lines.append(f"Assistant: {_clip(part.content)}")
                elif isinstance(part, ToolCallPart):
                    args = part.args if isinstance(part.args, str) else json.dumps(part.args)
                    lines.append(f"Assistant called tool {part.tool_name} with {_clip(args or '{}')}")
    return "\n".join(lines)


def _clip(text: str) -> str:
    return text if len(text) <= MAX_PART_CHARS else text[:MAX_PART_CHARS] + " …"


def split_point(messages: Sequence[ModelMessage], keep_recent: int) -> int:
    """How many of the oldest messages to summarise: at most ``keep_recent`` stay, starting at a
    user turn; if the last turn alone is longer than that, the whole last turn stays."""
    cut = turn_start_at_or_after(messages, len(messages) - keep_recent)
    if cut >= len(messages):
        starts = [i for i in range(len(messages)) if turn_start_at_or_after(messages, i) == i]
        cut = starts[-1] if starts else 0
    return cut


class Compressor:
    """Summarises old turns of a conversation with a model (the agent's own unless the spec
    names another)."""

    def __init__(
        self,
        spec: CompressionSpec,
        model: Model,
        settings: ModelSettings | None = None,
        *,
        max_history: int | None = None,
        capabilities: Sequence[AbstractCapability[Any]] = (),
        instrument: InstrumentationSettings | None = None,
    ) -> None:
        self.keep_recent = spec.keep_recent
        self.threshold = spec.threshold
        if max_history is not None and self.threshold >= max_history:
            # maxHistory trims on every append; compress before that limit drops anything.
            logger.warning(
                "compression.threshold %d is not below maxHistory %d; compressing past %d "
                "messages instead", self.threshold, max_history, max_history - 1,
            )
            self.threshold = max(max_history - 1, 1)
        self._summariser: Agent[None, str] = Agent(
            model, instructions=SUMMARY_INSTRUCTIONS, model_settings=settings, name="summariser",
            capabilities=list(capabilities),
        )
        if instrument is not None:
            self._summariser.instrument = instrument

    def due(self, stored_count: int) -> bool:
        return stored_count > self.threshold

    async def summarise(self, messages: Sequence[ModelMessage], previous: str | None) -> str:
        result = await self._summariser.run(transcript(messages, previous))
        return result.output.strip()

    async def compress(self, store: SessionStore, conversation_id: str) -> bool:
        """Summarise and drop the old part of the stored conversation; True if it did."""
        session = await store.load(conversation_id)
        if not self.due(len(session.messages)):
            return False
        cut = split_point(session.messages, self.keep_recent)
        if cut <= 0:
            return False
        summary = await self.summarise(session.messages[:cut], session.summary)
        await store.compact(conversation_id, summary, cut)
        logger.info("compressed %d messages of conversation %s", cut, conversation_id)
        return True
