"""OpenAI Chat Completions and Embeddings wire format.

Shapes follow the public API reference (``chat.completion``, ``chat.completion.chunk`` with
``tool_calls`` deltas keyed by ``index``, the trailing usage-only chunk when
``stream_options.include_usage`` is set, then ``data: [DONE]``), because any OpenAI-compatible
client — the official SDK, pydantic-ai, vLLM users — must accept them unchanged.
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
from .embeddings import embed_text, encode_base64
from .matching import Answer, estimate_tokens
from .script import ErrorSpec
from .wire import BadRequest, json_pieces, new_id, retry_headers, sse, text_pieces

TOOL_CALL_ID_PREFIX = "call_"

_ERROR_KINDS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}


def parse_request(body: dict[str, Any]) -> ChatRequest:
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise BadRequest("you must provide a model parameter")
    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list) or not raw_messages:
        raise BadRequest("'messages' must be a non-empty array")
    system: list[str] = []
    messages: list[Message] = []
    for raw in raw_messages:
        if not isinstance(raw, dict) or "role" not in raw:
            raise BadRequest("each message needs a 'role'")
        role, content = raw["role"], raw.get("content")
        if role in ("system", "developer"):
            system.append(text_of(content))
        elif role == "user":
            messages.append(Message("user", text_of(content)))
        elif role == "assistant":
            calls = tuple(
                ToolCall(
                    c.get("id", ""),
                    str(c["function"].get("name", "")),
                    parse_arguments(c["function"].get("arguments")),
                )
                for c in raw.get("tool_calls") or ()
                if isinstance(c, dict) and isinstance(c.get("function"), dict)
            )
            messages.append(Message("assistant", text_of(content), calls))
        elif role in ("tool", "function"):
            result = ToolResult(raw.get("tool_call_id", ""), raw.get("name"), text_of(content))
            messages.append(Message("tool", tool_results=(result,)))
        else:
            raise BadRequest(f"invalid role {role!r}")
    tools = [
        t["function"]["name"]
        for t in body.get("tools") or ()
        if isinstance(t, dict) and isinstance(t.get("function"), dict) and "name" in t["function"]
    ]
    tools += [f["name"] for f in body.get("functions") or () if isinstance(f, dict) and "name" in f]
    return ChatRequest(
        provider="openai",
        model=body["model"],
        messages=name_tool_results(messages),
        system="\n".join(s for s in system if s),
        tools=tuple(tools),
        stream=bool(body.get("stream")),
        body=body,
    )


def _usage(answer: Answer) -> dict[str, Any]:
    return {
        "prompt_tokens": answer.input_tokens,
        "completion_tokens": answer.output_tokens,
        "total_tokens": answer.input_tokens + answer.output_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _finish_reason(answer: Answer) -> str:
    return "tool_calls" if answer.tool_calls else "stop"


def completion(answer: Answer, model: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": answer.content, "refusal": None}
    if answer.tool_calls:
        message["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
            }
            for call in answer.tool_calls
        ]
    return {
        "id": new_id("chatcmpl-"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": _finish_reason(answer),
            }
        ],
        "usage": _usage(answer),
        "service_tier": "default",
        "system_fingerprint": "fp_mockllm",
    }


def stream(answer: Answer, model: str, include_usage: bool) -> Iterator[str]:
    """The SSE lines of a streamed completion, ending with ``data: [DONE]``."""
    base = {
        "id": new_id("chatcmpl-"),
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "service_tier": "default",
        "system_fingerprint": "fp_mockllm",
    }

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> str:
        body = {
            **base,
            "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ],
        }
        if include_usage:
            body["usage"] = None
        return sse(body)

    yield chunk({"role": "assistant", "content": "", "refusal": None})
    if answer.content:
        for piece in text_pieces(answer.content):
            yield chunk({"content": piece})
    for index, call in enumerate(answer.tool_calls):
        opening = {
            "index": index,
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        yield chunk({"tool_calls": [opening]})
        for piece in json_pieces(json.dumps(call.arguments)):
            yield chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
    yield chunk({}, _finish_reason(answer))
    if include_usage:
        yield sse({**base, "choices": [], "usage": _usage(answer)})
    yield sse("[DONE]")


def error(spec: ErrorSpec) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Status, body and headers of an OpenAI error response."""
    default_type = "server_error" if spec.status >= 500 else "invalid_request_error"
    kind, code = _ERROR_KINDS.get(spec.status, (default_type, None))
    body = {
        "error": {"message": spec.message, "type": spec.type or kind, "param": None, "code": code}
    }
    headers = {"x-request-id": new_id("req_"), **retry_headers(spec.retry_after)}
    return spec.status, body, headers


def models(names: list[str]) -> dict[str, Any]:
    created = int(time.time())
    return {
        "object": "list",
        "data": [
            {"id": n, "object": "model", "created": created, "owned_by": "mockllm"} for n in names
        ],
    }


def embedding_inputs(body: dict[str, Any]) -> list[str]:
    """``input`` may be a string, a list of strings, or token arrays (joined as text here)."""
    raw = body.get("input")
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list) and raw and all(isinstance(i, int) for i in raw):
        return [" ".join(str(i) for i in raw)]
    if isinstance(raw, list) and raw:
        return [i if isinstance(i, str) else " ".join(str(t) for t in i) for i in raw]
    raise BadRequest("'input' must be a string or a non-empty array")


def embeddings(body: dict[str, Any], inputs: list[str], dimensions: int) -> dict[str, Any]:
    """Deterministic vectors; ``dimensions`` in the request wins over the script's default."""
    dims = body.get("dimensions") or dimensions
    as_base64 = body.get("encoding_format") == "base64"
    data = []
    for index, text in enumerate(inputs):
        vector = embed_text(text, int(dims))
        data.append(
            {
                "object": "embedding",
                "index": index,
                "embedding": encode_base64(vector) if as_base64 else vector,
            }
        )
    tokens = sum(estimate_tokens(t) for t in inputs)
    return {
        "object": "list",
        "data": data,
        "model": body.get("model", ""),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
