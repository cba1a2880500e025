"""A provider-neutral view of a chat request, so rules match the same way for every wire format.

Each format module parses its own JSON into a :class:`ChatRequest`; matching, templating and the
call records only ever look at this shape.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class ToolResult:
    tool_call_id: str
    name: str | None
    content: str
    is_error: bool = False


@dataclass(frozen=True)
class Message:
    role: Role
    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_results: tuple[ToolResult, ...] = ()


@dataclass(frozen=True)
class ChatRequest:
    provider: str
    model: str
    messages: tuple[Message, ...]
    system: str = ""
    tools: tuple[str, ...] = ()
    stream: bool = False
    body: dict[str, Any] = field(default_factory=dict)

    @property
    def last_user(self) -> str:
        """Text of the latest user message that has text (tool-result carriers are skipped)."""
        for message in reversed(self.messages):
            if message.role == "user" and message.text:
                return message.text
        return ""

    @property
    def trailing_tool_results(self) -> tuple[ToolResult, ...]:
        """Tool results at the end of the conversation — i.e. what the model must answer now."""
        results: list[ToolResult] = []
        for message in reversed(self.messages):
            if not message.tool_results:
                break
            results[:0] = message.tool_results
            if message.text:  # a message mixing text and results ends the run
                break
        return tuple(results)

    def input_text(self) -> str:
        """Everything the model 'reads', used to estimate input tokens."""
        parts = [self.system]
        for message in self.messages:
            parts.append(message.text)
            parts.extend(json.dumps(call.arguments) for call in message.tool_calls)
            parts.extend(result.content for result in message.tool_results)
        return "\n".join(p for p in parts if p)

    def messages_as_dicts(self) -> list[dict[str, Any]]:
        """JSON-shaped messages (lists, not tuples): records look alike in-process and over HTTP."""
        return [
            {
                "role": m.role,
                "text": m.text,
                "tool_calls": [asdict(c) for c in m.tool_calls],
                "tool_results": [asdict(r) for r in m.tool_results],
            }
            for m in self.messages
        ]


def name_tool_results(messages: list[Message]) -> tuple[Message, ...]:
    """Fill in tool names on results from the assistant calls they answer.

    OpenAI, Anthropic and Bedrock all identify a result only by the call id, but scripts match on
    the tool *name* (``has_tool_result: get_weather``).
    """
    names: dict[str, str] = {}
    out: list[Message] = []
    for message in messages:
        for call in message.tool_calls:
            names[call.id] = call.name
        if message.tool_results:
            results = tuple(
                ToolResult(
                    r.tool_call_id, r.name or names.get(r.tool_call_id), r.content, r.is_error
                )
                for r in message.tool_results
            )
            message = Message(message.role, message.text, message.tool_calls, results)
        out.append(message)
    return tuple(out)


def text_of(content: Any) -> str:
    """Join the text parts of a content value shaped like any of the three providers use."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(t for t in (text_of(part) for part in content) if t)
    if isinstance(content, dict):
        if isinstance(text := content.get("text"), str):
            return text
        if "json" in content:
            return json.dumps(content["json"])
        if "content" in content:
            return text_of(content["content"])
    return ""


def parse_arguments(raw: Any) -> dict[str, Any]:
    """Tool arguments arrive as a JSON string (OpenAI) or an object (Anthropic, Bedrock)."""
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, str) and raw.strip():
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            return {"_raw": raw}
        return value if isinstance(value, dict) else {"_value": value}
    return {}
