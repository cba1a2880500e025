"""An OpenAI-compatible ``POST /v1/chat/completions`` (plain and streaming) and ``GET
/v1/models``, so existing clients and chat UIs talk to the agent unchanged. ``model`` is the
agent's name.

Conversations, two ways:

- **With memory**: send the header ``X-Conversation-Id``. Session memory holds the history, so
  only the last user message of ``messages`` is new input (earlier ones are ignored; system
  messages add to the agent's instructions). A pending human question is answered by the next
  message. The header is echoed back.
- **Stateless** (no header): like the OpenAI API itself, ``messages`` is the whole
  conversation and nothing is stored — what chat UIs that resend the history expect.

Errors use OpenAI's error body; ``x-should-retry`` tells the official clients whether retrying
can help (a bad provider key cannot; a provider rate limit can).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from pydantic_ai.messages import ModelMessage, ModelRequest, ModelResponse, TextPart, UserPromptPart
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from kagent.runtime.agent import AgentRuntime, TextDelta, Turn, TurnFailed, TurnResult
from kagent.runtime.errors import RequestFailure
from kagent.runtime.tracing import incoming_context

CONVERSATION_HEADER = "X-Conversation-Id"


class BadRequest(ValueError):
    def __init__(self, message: str, status: int = 400, code: str = "invalid_request_error",
                 param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.param = param


def error_response(message: str, status: int, code: str, *, param: str | None = None,
                   retryable: bool = False, retry_after: float | None = None) -> JSONResponse:
    headers = {"x-should-retry": "true" if retryable else "false"}
    if retry_after is not None:
        headers["retry-after"] = str(max(1, round(retry_after)))
    kind = "invalid_request_error" if status < 500 and status != 429 else "api_error"
    body = {"error": {"message": message, "type": kind, "code": code, "param": param}}
    return JSONResponse(body, status_code=status, headers=headers)


def failure_response(failure: RequestFailure) -> JSONResponse:
    return error_response(failure.message, failure.http_status, failure.code,
                          retryable=failure.retryable, retry_after=failure.retry_after)


def text_of(content: Any) -> str:
    """A message's text: a string, or the text parts of a content list."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        return "\n".join(texts)
    raise BadRequest("message content must be a string or a list of content parts",
                     param="messages")


def parse_messages(messages: Any) -> tuple[list[ModelMessage], str, str | None]:
    """Earlier turns (as history), the last user message, and the system instructions."""
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages must be a non-empty list", param="messages")
    system: list[str] = []
    history: list[ModelMessage] = []
    for message in messages[:-1]:
        if not isinstance(message, dict):
            raise BadRequest("every message must be an object", param="messages")
        role, text = message.get("role"), text_of(message.get("content"))
        if role in ("system", "developer"):
            system.append(text)
        elif role == "user":
            history.append(ModelRequest(parts=[UserPromptPart(content=text)]))
        elif role == "assistant" and text:
            history.append(ModelResponse(parts=[TextPart(content=text)]))
    last = messages[-1]
    if not isinstance(last, dict) or last.get("role") != "user":
        raise BadRequest("the last message must have role user", param="messages")
    return history, text_of(last.get("content")), "\n\n".join(system) or None


def usage_body(result: TurnResult) -> dict[str, int]:
    prompt, completion = result.usage.input_tokens, result.usage.output_tokens
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def kagent_extra(result: TurnResult) -> dict[str, Any]:
    """Kagent's own fields beside the OpenAI ones: whether a person must answer, and which model
    of the chain (``model``, ``model.fallbacks``) answered."""
    return {"input_required": result.input_required, "model": result.model}


def openai_routes(runtime: AgentRuntime) -> list[Route]:
    name = runtime.name

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [
            {"id": name, "object": "model", "created": 0, "owned_by": "kagent"}
        ]})

    async def chat_completions(request: Request) -> Response:
        try:
            try:
                body = json.loads(await request.body() or b"{}")
            except json.JSONDecodeError as error:
                raise BadRequest(f"the request body is not valid JSON: {error.msg}") from None
            if not isinstance(body, dict):
                raise BadRequest("the request body must be a JSON object")
            model = body.get("model")
            if model not in (None, "", name):
                raise BadRequest(
                    f"model {model!r} does not exist here: this endpoint serves the agent "
                    f"{name!r}; use it as the model name", status=404, code="model_not_found",
                    param="model",
                )
            history, text, system = parse_messages(body.get("messages"))
        except BadRequest as error:
            return error_response(str(error), error.status, error.code, param=error.param)

        conversation_id = request.headers.get(CONVERSATION_HEADER)
        turn = Turn(
            conversation_id=conversation_id or f"stateless-{uuid.uuid4()}",
            text=text,
            protocol="openai",
            history=None if conversation_id else history,
            instructions=system,
            trace_context=incoming_context(request.headers),
            stream=bool(body.get("stream")),
        )
        headers = {CONVERSATION_HEADER: conversation_id} if conversation_id else {}
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return await _stream(runtime, turn, completion_id, created, include_usage, headers)
        try:
            result = await runtime.run(turn)
        except TurnFailed as failed:
            return failure_response(failed.failure)
        return JSONResponse({
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": name,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": result.text},
                "finish_reason": "stop",
            }],
            "usage": usage_body(result),
            "kagent": kagent_extra(result),
        }, headers=headers)

    async def _stream(runtime: AgentRuntime, turn: Turn, completion_id: str, created: int,
                      include_usage: bool, headers: dict[str, str]) -> Response:
        events = runtime.stream(turn).__aiter__()
        # Wait for the first event so that errors before any output (a bad provider key, a
        # rate limit) are answered with a proper HTTP status, not inside a 200 stream.
        try:
            first = await events.__anext__()
        except TurnFailed as failed:
            return failure_response(failed.failure)

        def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
            data = {
                "id": completion_id, "object": "chat.completion.chunk", "created": created,
                "model": name,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                **extra,
            }
            return f"data: {json.dumps(data)}\n\n"

        async def body() -> AsyncIterator[str]:
            yield chunk({"role": "assistant", "content": ""})
            event: TextDelta | TurnResult | None = first
            streamed = False
            try:
                while event is not None:
                    if isinstance(event, TextDelta):
                        streamed = True
                        yield chunk({"content": event.text})
                    elif isinstance(event, TurnResult):
                        if event.text and (not streamed or event.input_required):
                            # A question for a person is not streamed by the model: send it.
                            yield chunk({"content": ("\n\n" if streamed else "") + event.text})
                        yield chunk({}, "stop", kagent=kagent_extra(event))
                        if include_usage:
                            data = {
                                "id": completion_id, "object": "chat.completion.chunk",
                                "created": created, "model": name, "choices": [],
                                "usage": usage_body(event),
                            }
                            yield f"data: {json.dumps(data)}\n\n"
                        break
                    event = await events.__anext__()
            except TurnFailed as failed:
                failure = failed.failure
                error = {"message": failure.message, "type": "api_error", "code": failure.code}
                yield f"data: {json.dumps({'error': error})}\n\n"
            finally:
                await events.aclose()
            yield "data: [DONE]\n\n"

        return StreamingResponse(body(), media_type="text/event-stream", headers=headers)

    return [
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
    ]
