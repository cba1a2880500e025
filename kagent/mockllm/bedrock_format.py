"""Amazon Bedrock Converse wire format (``/model/{modelId}/converse`` and ``converse-stream``).

Errors use the rest-json convention botocore reads (``x-amzn-ErrorType`` header plus a
``{"message": ...}`` body), so ``client.exceptions.ThrottlingException`` and friends are raised.
AWS never answers 401: bad credentials come back as 403 ``UnrecognizedClientException``, and a
script's ``status: 401`` is mapped to that real shape.
"""

from __future__ import annotations

import json
import time
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
from .eventstream import encode_event
from .matching import Answer
from .script import ErrorSpec
from .wire import BadRequest, json_pieces, new_id, retry_headers, text_pieces

TOOL_CALL_ID_PREFIX = "tooluse_"

_ERRORS: dict[int, tuple[int, str]] = {
    400: (400, "ValidationException"),
    401: (403, "UnrecognizedClientException"),
    403: (403, "AccessDeniedException"),
    404: (404, "ResourceNotFoundException"),
    408: (408, "ModelTimeoutException"),
    424: (424, "ModelErrorException"),
    429: (429, "ThrottlingException"),
    500: (500, "InternalServerException"),
    503: (503, "ServiceUnavailableException"),
}


def _parse_message(raw: dict[str, Any]) -> Message:
    role = raw.get("role")
    if role not in ("user", "assistant"):
        raise BadRequest(f"messages: role must be 'user' or 'assistant', got {role!r}")
    texts: list[str] = []
    calls: list[ToolCall] = []
    results: list[ToolResult] = []
    for block in raw.get("content") or ():
        if not isinstance(block, dict):
            continue
        if isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif isinstance(use := block.get("toolUse"), dict):
            calls.append(
                ToolCall(
                    use.get("toolUseId", ""), use.get("name", ""), parse_arguments(use.get("input"))
                )
            )
        elif isinstance(result := block.get("toolResult"), dict):
            results.append(
                ToolResult(
                    result.get("toolUseId", ""),
                    None,
                    text_of(result.get("content")),
                    result.get("status") == "error",
                )
            )
    return Message(role, "\n".join(t for t in texts if t), tuple(calls), tuple(results))


def parse_request(model_id: str, body: dict[str, Any], stream: bool) -> ChatRequest:
    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list) or not raw_messages:
        raise BadRequest("A conversation must start with a user message.")
    messages = [_parse_message(m) for m in raw_messages if isinstance(m, dict)]
    tools = [
        t["toolSpec"]["name"]
        for t in (body.get("toolConfig") or {}).get("tools") or ()
        if isinstance(t, dict) and isinstance(t.get("toolSpec"), dict) and "name" in t["toolSpec"]
    ]
    return ChatRequest(
        provider="bedrock",
        model=model_id,
        messages=name_tool_results(messages),
        system=text_of(body.get("system")),
        tools=tuple(tools),
        stream=stream,
        body=body,
    )


def _stop_reason(answer: Answer) -> str:
    return "tool_use" if answer.tool_calls else "end_turn"


def _usage(answer: Answer) -> dict[str, int]:
    return {
        "inputTokens": answer.input_tokens,
        "outputTokens": answer.output_tokens,
        "totalTokens": answer.input_tokens + answer.output_tokens,
    }


def converse(answer: Answer, started: float) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if answer.content or not answer.tool_calls:
        content.append({"text": answer.content or ""})
    for call in answer.tool_calls:
        content.append(
            {"toolUse": {"toolUseId": call.id, "name": call.name, "input": call.arguments}}
        )
    return {
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": _stop_reason(answer),
        "usage": _usage(answer),
        "metrics": {"latencyMs": int((time.monotonic() - started) * 1000)},
    }


def converse_stream(answer: Answer, started: float) -> Iterator[bytes]:
    """Event-stream frames; like Bedrock, text blocks get no ``contentBlockStart``."""
    yield encode_event("messageStart", {"role": "assistant"})
    index = 0
    if answer.content or not answer.tool_calls:
        for piece in text_pieces(answer.content or ""):
            yield encode_event(
                "contentBlockDelta", {"contentBlockIndex": index, "delta": {"text": piece}}
            )
        yield encode_event("contentBlockStop", {"contentBlockIndex": index})
        index += 1
    for call in answer.tool_calls:
        start = {"toolUse": {"toolUseId": call.id, "name": call.name}}
        yield encode_event("contentBlockStart", {"contentBlockIndex": index, "start": start})
        for piece in json_pieces(json.dumps(call.arguments)):
            delta = {"toolUse": {"input": piece}}
            yield encode_event("contentBlockDelta", {"contentBlockIndex": index, "delta": delta})
        yield encode_event("contentBlockStop", {"contentBlockIndex": index})
        index += 1
    yield encode_event("messageStop", {"stopReason": _stop_reason(answer)})
    metrics = {"latencyMs": int((time.monotonic() - started) * 1000)}
    yield encode_event("metadata", {"usage": _usage(answer), "metrics": metrics})


def error(spec: ErrorSpec) -> tuple[int, dict[str, Any], dict[str, str]]:
    default = (
        spec.status,
        "InternalServerException" if spec.status >= 500 else "ValidationException",
    )
    status, code = _ERRORS.get(spec.status, default)
    code = spec.type or code
    headers = {
        "x-amzn-ErrorType": f"{code}:http://internal.amazon.com/coral/com.amazon.bedrock/",
        "x-amzn-RequestId": new_id(""),
        **retry_headers(spec.retry_after),
    }
    return status, {"message": spec.message}, headers
