"""The Starlette app: provider endpoints plus the ``/_mock`` control endpoints.

Every provider handler follows the same path — parse the provider's JSON into a ``ChatRequest``,
let :class:`MockState` pick and record the answer, wait ``delay``, then answer in the provider's
own shape (error, plain or streamed). Any auth header is accepted; it is recorded, never logged.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any
from urllib.parse import unquote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from . import anthropic_format, bedrock_format, openai_format
from .eventstream import CONTENT_TYPE as EVENTSTREAM
from .script import ErrorSpec, ScriptError, parse_script, parse_script_text
from .state import MockState, auth_from_headers
from .wire import BadRequest

ErrorFormatter = Callable[[ErrorSpec], tuple[int, dict[str, Any], dict[str, str]]]


def _error_response(format_error: ErrorFormatter, spec: ErrorSpec) -> JSONResponse:
    status, body, headers = format_error(spec)
    return JSONResponse(body, status_code=status, headers=headers)


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"{}")
    except json.JSONDecodeError as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc.msg}") from None
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    return body


async def _paced(items: Iterable[Any], delay: float = 0.0) -> AsyncIterator[Any]:
    """Yield to the loop (or wait ``delay``) between chunks so they leave as separate writes,
    like a real stream."""
    for item in items:
        yield item
        await asyncio.sleep(delay)


def _bedrock_model_id(request: Request) -> str:
    """Model ids arrive percent-encoded (``:``, and ``/`` in ARNs); decode the raw path once."""
    raw = request.scope.get("raw_path")
    if isinstance(raw, bytes):
        path = raw.decode("latin-1").split("?", 1)[0]
        inner = path.removeprefix("/model/").rsplit("/", 1)[0]
        return unquote(inner)
    return str(request.path_params["model_id"])


def create_app(state: MockState) -> Starlette:
    """Build the ASGI app around ``state`` (shared with the test thread that owns it)."""

    async def openai_chat(request: Request) -> Response:
        try:
            body = await _json_body(request)
            chat = openai_format.parse_request(body)
        except BadRequest as exc:
            return _error_response(openai_format.error, ErrorSpec(status=400, message=str(exc)))
        answer = state.answer(
            chat,
            auth_from_headers(request.headers),
            request.headers,
            openai_format.TOOL_CALL_ID_PREFIX,
        )
        if answer.delay:
            await asyncio.sleep(answer.delay)
        if answer.error is not None:
            return _error_response(openai_format.error, answer.error)
        if chat.stream:
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            lines = openai_format.stream(answer, chat.model, include_usage)
            return StreamingResponse(_paced(lines, answer.chunk_delay), media_type="text/event-stream")
        return JSONResponse(openai_format.completion(answer, chat.model))

    async def openai_embeddings(request: Request) -> Response:
        try:
            body = await _json_body(request)
            inputs = openai_format.embedding_inputs(body)
        except BadRequest as exc:
            return _error_response(openai_format.error, ErrorSpec(status=400, message=str(exc)))
        auth = auth_from_headers(request.headers)
        dimensions = state.record_embeddings(
            str(body.get("model", "")), inputs, auth, request.headers, body
        )
        return JSONResponse(openai_format.embeddings(body, inputs, dimensions))

    async def list_models(request: Request) -> Response:
        names = state.script.model_names()
        if "anthropic-version" in request.headers:
            return JSONResponse(anthropic_format.models(names))
        return JSONResponse(openai_format.models(names))

    async def anthropic_messages(request: Request) -> Response:
        try:
            chat = anthropic_format.parse_request(await _json_body(request))
        except BadRequest as exc:
            return _error_response(anthropic_format.error, ErrorSpec(status=400, message=str(exc)))
        answer = state.answer(
            chat,
            auth_from_headers(request.headers),
            request.headers,
            anthropic_format.TOOL_CALL_ID_PREFIX,
        )
        if answer.delay:
            await asyncio.sleep(answer.delay)
        if answer.error is not None:
            return _error_response(anthropic_format.error, answer.error)
        if chat.stream:
            events = anthropic_format.stream(answer, chat.model)
            return StreamingResponse(_paced(events, answer.chunk_delay), media_type="text/event-stream")
        return JSONResponse(anthropic_format.message(answer, chat.model))

    async def bedrock(request: Request, stream: bool) -> Response:
        started = time.monotonic()
        model_id = _bedrock_model_id(request)
        try:
            chat = bedrock_format.parse_request(model_id, await _json_body(request), stream)
        except BadRequest as exc:
            return _error_response(bedrock_format.error, ErrorSpec(status=400, message=str(exc)))
        answer = state.answer(
            chat,
            auth_from_headers(request.headers),
            request.headers,
            bedrock_format.TOOL_CALL_ID_PREFIX,
        )
        if answer.delay:
            await asyncio.sleep(answer.delay)
        if answer.error is not None:
            return _error_response(bedrock_format.error, answer.error)
        if stream:
            frames = bedrock_format.converse_stream(answer, started)
            return StreamingResponse(_paced(frames, answer.chunk_delay), media_type=EVENTSTREAM)
        return JSONResponse(bedrock_format.converse(answer, started))

    async def bedrock_converse(request: Request) -> Response:
        return await bedrock(request, stream=False)

    async def bedrock_converse_stream(request: Request) -> Response:
        return await bedrock(request, stream=True)

    async def mock_calls(request: Request) -> Response:
        return JSONResponse(state.snapshot())

    async def mock_reset(request: Request) -> Response:
        state.reset()
        return JSONResponse({"reset": True})

    async def mock_get_script(request: Request) -> Response:
        return JSONResponse(state.script.model_dump(mode="json", exclude_none=True))

    async def mock_put_script(request: Request) -> Response:
        raw = (await request.body()).decode()
        try:
            if "json" in request.headers.get("content-type", ""):
                script = parse_script(json.loads(raw or "{}"), origin="POST /_mock/script")
            else:
                script = parse_script_text(raw, origin="POST /_mock/script")
        except (ScriptError, json.JSONDecodeError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        state.replace_script(script)
        return JSONResponse({"rules": len(script.rules)})

    async def health(request: Request) -> Response:
        return JSONResponse({"ok": True})

    routes = [
        Route("/v1/chat/completions", openai_chat, methods=["POST"]),
        Route("/v1/embeddings", openai_embeddings, methods=["POST"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/messages", anthropic_messages, methods=["POST"]),
        Route("/model/{model_id:path}/converse", bedrock_converse, methods=["POST"]),
        Route("/model/{model_id:path}/converse-stream", bedrock_converse_stream, methods=["POST"]),
        Route("/_mock/calls", mock_calls, methods=["GET"]),
        Route("/_mock/reset", mock_reset, methods=["POST"]),
        Route("/_mock/script", mock_get_script, methods=["GET"]),
        Route("/_mock/script", mock_put_script, methods=["POST", "PUT"]),
        Route("/_mock/health", health, methods=["GET"]),
    ]
    return Starlette(routes=routes)
