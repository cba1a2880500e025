"""What every request to the agent passes before it is served: a body size limit, the memory
backend's availability, and the chain of agents that led to it.

- A body over ``max_body_bytes`` is refused with 413 (by its Content-Length, or while it is
  read when it has none), before any handler buffers it.
- While the memory backend (Redis, PostgreSQL) is unreachable, requests are refused at once
  with 503, a Retry-After, the ``agent_memory_unavailable_total`` metric and a clear message —
  not answered without their history, and not by an unready pod: readiness reflects the pod
  itself. The backend is probed at most once a second and requests flow again as soon as it
  answers.
- ``X-Kagent-Agent-Chain`` (the agents that called this one, set by the agent tool) is kept
  for the request so an agent-as-tool call can refuse cycles and excessive depth.

The probes, metrics and the agent card are never refused.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kagent.runtime.memory.base import BackendUnavailable, SessionStore
from kagent.runtime.metrics import MEMORY_UNAVAILABLE
from kagent.runtime.tools.agent import CHAIN_HEADER, parse_chain, set_incoming_chain

MAX_BODY_BYTES = 8 << 20
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/.well-known/agent-card.json"})


class BodyTooLarge(HTTPException):
    """Raised while a body without a (truthful) Content-Length is read past the limit; an
    HTTPException so the app's own handlers (and the A2A SDK's) answer 413 too."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, detail=f"the request body is larger than {limit} bytes")


def error_body(message: str, code: str) -> bytes:
    """The OpenAI error shape, which A2A and plain HTTP clients read as well as any."""
    kind = "invalid_request_error" if code == "request_too_large" else "api_error"
    return json.dumps({"error": {"message": message, "type": kind, "code": code,
                                 "param": None}}).encode()


async def send_error(send: Send, status: int, message: str, code: str,
                     headers: dict[str, str] | None = None) -> None:
    body = error_body(message, code)
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def unavailable_response_args(error: BackendUnavailable) -> tuple[int, str, str, dict[str, str]]:
    return 503, str(error), "memory_unavailable", dict(error.headers or {})


class RequestGuard:
    """ASGI middleware; see the module docstring."""

    def __init__(self, app: ASGIApp, *, store: SessionStore, agent_name: str,
                 max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.store = store
        self.agent_name = agent_name
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body_bytes:
            await send_error(send, 413, self._too_large(), "request_too_large")
            return
        health = self.store.health
        if health.down and not await health.available(self.store.ping):
            MEMORY_UNAVAILABLE.labels(agent=self.agent_name, backend=health.kind).inc()
            await send_error(send, *unavailable_response_args(
                BackendUnavailable(health.kind, health.reason)))
            return
        set_incoming_chain(parse_chain(headers.get(CHAIN_HEADER.lower(), "")))

        seen = 0
        started = False

        async def bounded_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body_bytes:
                    raise BodyTooLarge(self.max_body_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, bounded_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await send_error(send, 413, self._too_large(), "request_too_large")
        except BackendUnavailable as error:
            MEMORY_UNAVAILABLE.labels(agent=self.agent_name, backend=error.kind).inc()
            if not started:
                await send_error(send, *unavailable_response_args(error))

    def _too_large(self) -> str:
        return f"the request body is larger than {self.max_body_bytes} bytes"


def starlette_unavailable_handler(agent_name: str) -> Any:
    """A Starlette exception handler: BackendUnavailable raised inside a route (the A2A SDK
    passes HTTP exceptions through) becomes the same 503 answer."""
    from starlette.requests import Request
    from starlette.responses import Response

    async def handle(request: Request, error: Exception) -> Response:
        assert isinstance(error, BackendUnavailable)
        MEMORY_UNAVAILABLE.labels(agent=agent_name, backend=error.kind).inc()
        status, message, code, headers = unavailable_response_args(error)
        return Response(error_body(message, code), status_code=status, headers=headers,
                        media_type="application/json")

    return handle
