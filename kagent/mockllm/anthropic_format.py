"""Anthropic Messages wire format (``POST /v1/messages``).

Streaming follows the documented event sequence — ``message_start``, a ``ping``, per content
block ``content_block_start`` / ``content_block_delta`` (``text_delta`` or ``input_json_delta``) /
``content_block_stop``, then ``message_delta`` (stop reason, output usage) and ``message_stop`` —
which is exactly what ``client.messages.stream`` and pydantic-ai's ``AnthropicModel`` assemble.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from .conversation import (
    ChatRequest,
    Message,
    ToolCall,
    ToolResult,
    name_tool_results,
    parse_arguments,
    text_of,
)
from .matching import Answer
from .script import ErrorSpec
from .wire import BadRequest, json_pieces, new_id, retry_headers, sse, text_pieces

TOOL_CALL_ID_PREFIX = "toolu_"

_ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def _parse_message(raw: dict[str, Any]) -> Message:
    role = raw.get("role")
    if role not in ("user", "assistant"):
        raise BadRequest(f"messages: unexpected role {role!r}; roles must be 'user' or 'assistant'")
    content = raw.get("content")
    if isinstance(content, str):
        return Message(role, content)
    texts: list[str] = []
    calls: list[ToolCall] = []
    results: list[ToolResult] = []
    for block in content or ():
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text", ""))
        elif kind == "tool_use":
            calls.append(
                ToolCall(
                    block.get("id", ""), block.get("name", ""), parse_arguments(block.get("input"))
                )
            )
        elif kind == "tool_result":
            results.append(
                ToolResult(
                    block.get("tool_use_id", ""),
                    None,
                    text_of(block.get("content")),
                    bool(block.get("is_error", False)),
                )
            )
    return Message(role, "\n".join(t for t in texts if t), tuple(calls), tuple(results))


def parse_request(body: dict[str, Any]) -> ChatRequest:
    for required in ("model", "messages", "max_tokens"):
        if required not in body:
            raise BadRequest(f"{required}: Field required")
    if not isinstance(body["messages"], list) or not body["messages"]:
        raise BadRequest("messages: at least one message is required")
    messages = [_parse_message(m) for m in body["messages"] if isinstance(m, dict)]
    tools = [t["name"] for t in body.get("tools") or () if isinstance(t, dict) and "name" in t]
    return ChatRequest(
        provider="anthropic",
        model=str(body["model"]),
        messages=name_tool_results(messages),
        system=text_of(body.get("system")),
        tools=tuple(tools),
        stream=bool(body.get("stream")),
        body=body,
    )


def _blocks(answer: Answer) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if answer.content or not answer.tool_calls:
        blocks.append({"type": "text", "text": answer.content or ""})
    for call in answer.tool_calls:
        blocks.append(
            {"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments}
        )
    return blocks


def _stop_reason(answer: Answer) -> str:
    return "tool_use" if answer.tool_calls else "end_turn"


def _usage(input_tokens: int, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "service_tier": "standard",
    }


def message(answer: Answer, model: str) -> dict[str, Any]:
    return {
        "id": new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": _blocks(answer),
        "stop_reason": _stop_reason(answer),
        "stop_sequence": None,
        "usage": _usage(answer.input_tokens, answer.output_tokens),
    }


def stream(answer: Answer, model: str) -> Iterator[str]:
    start: dict[str, Any] = {
        "id": new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": _usage(answer.input_tokens, 1),
    }
    yield sse({"type": "message_start", "message": start}, "message_start")
    yield sse({"type": "ping"}, "ping")
    index = 0
    if answer.content or not answer.tool_calls:
        yield sse(
            {
                "type": "content_block_start",
                "index": index,
                "content_block": {"type": "text", "text": ""},
            },
            "content_block_start",
        )
        for piece in text_pieces(answer.content or ""):
            delta = {"type": "text_delta", "text": piece}
            yield sse(
                {"type": "content_block_delta", "index": index, "delta": delta},
                "content_block_delta",
            )
        yield sse({"type": "content_block_stop", "index": index}, "content_block_stop")
        index += 1
    for call in answer.tool_calls:
        block = {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}
        yield sse(
            {"type": "content_block_start", "index": index, "content_block": block},
            "content_block_start",
        )
        for piece in json_pieces(json.dumps(call.arguments)):
            delta = {"type": "input_json_delta", "partial_json": piece}
            yield sse(
                {"type": "content_block_delta", "index": index, "delta": delta},
                "content_block_delta",
            )
        yield sse({"type": "content_block_stop", "index": index}, "content_block_stop")
        index += 1
    yield sse(
        {
            "type": "message_delta",
            "delta": {"stop_reason": _stop_reason(answer), "stop_sequence": None},
            "usage": {"output_tokens": answer.output_tokens},
        },
        "message_delta",
    )
    yield sse({"type": "message_stop"}, "message_stop")


def error(spec: ErrorSpec) -> tuple[int, dict[str, Any], dict[str, str]]:
    request_id = new_id("req_")
    kind = spec.type or _ERROR_TYPES.get(
        spec.status, "api_error" if spec.status >= 500 else "invalid_request_error"
    )
    body = {
        "type": "error",
        "error": {"type": kind, "message": spec.message},
        "request_id": request_id,
    }
    return spec.status, body, {"request-id": request_id, **retry_headers(spec.retry_after)}


def models(names: list[str]) -> dict[str, Any]:
    data = [
        {"type": "model", "id": n, "display_name": n, "created_at": "2025-01-01T00:00:00Z"}
        for n in names
    ]
    return {
        "data": data,
        "has_more": False,
        "first_id": names[0] if names else None,
        "last_id": names[-1] if names else None,
    }
