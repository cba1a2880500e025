"""The runtime's HTTP app: A2A, the OpenAI-compatible API, probes and metrics on one port.

``/healthz`` answers while the process serves; ``/readyz`` once the agent is built and its
event loop answers — the pod itself, not the shared memory backend: a Redis or PostgreSQL
blip must not make every agent unready at once and empty every Service. While the backend is
down, requests are refused fast with 503 instead (:mod:`kagent.runtime.guard`).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from kagent.runtime.a2a_server import a2a_routes
from kagent.runtime.agent import AgentRuntime
from kagent.runtime.auth import AuthMiddleware, Authenticator, authenticator_for
from kagent.runtime.guard import RequestGuard, starlette_unavailable_handler
from kagent.runtime.memory.base import BackendUnavailable
from kagent.runtime.openai_api import openai_routes


async def metrics(request: Request) -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


def metrics_app() -> Starlette:
    """``/metrics`` alone, for a separate metrics port."""
    return Starlette(routes=[Route("/metrics", metrics, methods=["GET"])])


def create_app(runtime: AgentRuntime, *, serve_metrics: bool = True,
               authenticator: Authenticator | None = None) -> Starlette:
    """The app for ``runtime``; the runtime is started and closed by the app's lifespan.

    Every request but the probes, metrics and the agent card goes through ``authenticator``
    (default: the one a runtime with no Kubernetes API gets, serving loopback)."""
    if authenticator is None:
        authenticator = authenticator_for(runtime.config, None, loopback=True)
    a2a, handler = a2a_routes(runtime, schemes=authenticator.schemes)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "agent": runtime.name})

    async def readyz(request: Request) -> Response:
        health = runtime.store.health
        memory = {"memory": runtime.store.kind, "memoryAvailable": not health.down}
        if runtime.agent is None:
            return JSONResponse({"status": "not ready", "reason": "the agent is starting",
                                 **memory}, status_code=503)
        return JSONResponse({"status": "ready", **memory})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                await handler.aclose()
            await runtime.close()
            if runtime.tracer_provider is not None:
                runtime.tracer_provider.force_flush(5_000)

    routes: list[BaseRoute] = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        *openai_routes(runtime),
    ]
    if serve_metrics:
        routes.append(Route("/metrics", metrics, methods=["GET"]))
    routes += a2a
    # Authentication wraps the guard: an unauthenticated caller gets 401, never a memory 503.
    return Starlette(
        routes=routes, lifespan=lifespan,
        middleware=[Middleware(AuthMiddleware, authenticator=authenticator),
                    Middleware(RequestGuard, store=runtime.store, agent_name=runtime.name)],
        exception_handlers={BackendUnavailable: starlette_unavailable_handler(runtime.name)},
    )
