"""The human tool: the model asks a person, the request pauses, the person's answer resumes it.

Calling the tool defers the call (pydantic-ai ``CallDeferred(kind='question')``); the run ends
with the question, which A2A reports as ``input-required`` and the OpenAI-compatible API as the
assistant's reply. Nothing is held in the process meanwhile: the unanswered tool call is the
last message of the stored conversation, so whichever replica receives the answer finds the
question there and resumes the run with the answer as the tool's result.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic_ai import Tool as PaiTool
from pydantic_ai.exceptions import CallDeferred
from pydantic_ai.messages import ModelMessage, ModelResponse, ToolCallPart
from pydantic_ai.toolsets import FunctionToolset

from kagent.api.base import parse_duration
from kagent.api.tool import Tool
from kagent.runtime.tools.base import input_schema, model_tool_name

QUESTION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "question": {"type": "string", "description": "What to ask the person, in full."}
    },
    "required": ["question"],
}


@dataclass(frozen=True)
class HumanTool:
    """One human Tool resource as the runtime uses it."""

    name: str
    """The model-visible tool name."""
    description: str
    prompt: str | None
    timeout: timedelta
    schema: dict[str, Any]

    def question(self, arguments: dict[str, Any]) -> str:
        """What the person sees: the Tool's prompt, then the model's question."""
        asked = arguments.get("question")
        if not isinstance(asked, str):
            rest = {k: v for k, v in arguments.items()}
            asked = json.dumps(rest, ensure_ascii=False) if rest else ""
        return "\n\n".join(p for p in (self.prompt, asked) if p)


@dataclass(frozen=True)
class PendingQuestion:
    """A human tool call waiting for its answer."""

    tool: HumanTool
    call: ToolCallPart
    asked_at: datetime | None

    @property
    def text(self) -> str:
        return self.tool.question(self.call.args_as_dict())

    def expired(self, now: datetime | None = None) -> bool:
        if self.asked_at is None:
            return False
        asked = self.asked_at if self.asked_at.tzinfo else self.asked_at.replace(tzinfo=UTC)
        return (now or datetime.now(UTC)) - asked > self.tool.timeout


def human_tools(tools: Sequence[Tool]) -> dict[str, HumanTool]:
    """The human tools among the agent's Tools, by model-visible name."""
    found: dict[str, HumanTool] = {}
    for tool in tools:
        if tool.spec.type != "human":
            continue
        spec = tool.spec.human
        name = model_tool_name(tool.metadata.name or "ask_human")
        found[name] = HumanTool(
            name=name,
            description=tool.spec.description or "Ask a person and wait for the answer.",
            prompt=spec.prompt if spec else None,
            timeout=parse_duration(spec.timeout if spec else "1h"),
            schema=input_schema(tool.spec, default=QUESTION_SCHEMA),
        )
    return found


def human_toolset(tools: dict[str, HumanTool]) -> FunctionToolset[Any] | None:
    """A toolset whose tools defer every call as a question for a person."""
    if not tools:
        return None

    def deferring(tool: HumanTool):
        def ask(**arguments: Any) -> Any:
            raise CallDeferred(metadata={"question": tool.question(arguments)}, kind="question")

        return ask

    return FunctionToolset(
        [
            PaiTool.from_schema(deferring(t), name=t.name, description=t.description,
                                json_schema=t.schema)
            for t in tools.values()
        ],
        id="kagent-human",
    )


def pending_questions(
    pending: Sequence[ToolCallPart], history: Sequence[ModelMessage], tools: dict[str, HumanTool]
) -> list[PendingQuestion]:
    """The pending calls that are human questions, with when they were asked."""
    asked_at = None
    for message in reversed(history):
        if isinstance(message, ModelResponse):
            asked_at = message.timestamp
            break
    return [PendingQuestion(tools[c.tool_name], c, asked_at) for c in pending if c.tool_name in tools]
