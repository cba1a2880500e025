"""The runtime's HTTP app: A2A, the OpenAI-compatible API, probes and metrics on one port.

``/healthz`` answers while the process serves; ``/readyz`` only while the memory backend
answers too, so Kubernetes stops sending traffic to a pod that cannot remember conversations.
"""

from __future__ import annotations

import asyncio
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
from kagent.runtime.openai_api import openai_routes

READY_TIMEOUT = 3.0


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
        try:
            await asyncio.wait_for(runtime.ready(), READY_TIMEOUT)
        except Exception as error:  # noqa: BLE001 - any failure means not ready
            reason = runtime.config.secrets.redact(f"{type(error).__name__}: {error}")
            return JSONResponse(
                {"status": "not ready", "reason": f"{runtime.store.kind} memory: {reason}"},
                status_code=503,
            )
        return JSONResponse({"status": "ready", "memory": runtime.store.kind})

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
    return Starlette(routes=routes, lifespan=lifespan,
                     middleware=[Middleware(AuthMiddleware, authenticator=authenticator)])
