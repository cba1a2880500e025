"""``kagent runtime``: read the manifests, build the agent, serve it.

The same entry point runs in an agent pod (``kagent runtime -f /etc/kagent/agent.yaml --port
8080 --metrics-port 9090``, secrets as environment variables) and on a laptop (``-f`` the
manifests you would apply, Secret manifests included).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import uvicorn
from opentelemetry.sdk.trace.export import SpanExporter

from kagent.api.manifests import ManifestError
from kagent.runtime.agent import AgentRuntime
from kagent.runtime.app import create_app
from kagent.runtime.config import ConfigError, RuntimeConfig, load_runtime_config
from kagent.runtime.models import ModelConfigError
from kagent.runtime.secrets import MissingSecretError, SecretResolver
from kagent.runtime.tracing import TracingConfigError, build_tracer_provider

logger = logging.getLogger("kagent.runtime")

QUIET_LOGGERS = ("httpx", "httpx2", "a2a")
"""Libraries that log a line at INFO for every request (each model call, each A2A task): an
access log by another name, off like uvicorn's."""

STARTUP_ERRORS = (ConfigError, ManifestError, MissingSecretError, ModelConfigError,
                  TracingConfigError)


class RedactingFilter(logging.Filter):
    """Scrubs secret values from every log record, whoever logs it."""

    def __init__(self, secrets: SecretResolver) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = self.secrets.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def build_runtime(
    config: RuntimeConfig,
    *,
    environ: Mapping[str, str] | None = None,
    exporter: SpanExporter | None = None,
) -> AgentRuntime:
    """The runtime for ``config``, with tracing as the Agent's observability block asks."""
    env = os.environ if environ is None else environ
    observability = config.agent.spec.observability
    tracing = observability.tracing if observability else None
    try:
        provider = build_tracer_provider(
            tracing, config.secrets, service_name=config.name, namespace=config.namespace,
            pod_name=env.get("KAGENT_POD_NAME"), exporter=exporter,
        )
    except TracingConfigError as error:
        # Traces are an aid, not the service: answer requests, and say loudly what is missing.
        logger.warning("tracing is off: %s", error)
        provider = None
    return AgentRuntime(
        config, tracer_provider=provider, agent_url_template=env.get("KAGENT_AGENT_URL_TEMPLATE")
    )


def metrics_enabled(config: RuntimeConfig) -> bool:
    observability = config.agent.spec.observability
    return not (observability and observability.metrics and not observability.metrics.enabled)


async def serve(
    files: Sequence[Path], port: int, metrics_port: int | None = None, host: str = "0.0.0.0"
) -> None:
    """Serve the agent described by ``files`` until interrupted."""
    config = load_runtime_config(files)
    logging.getLogger().addFilter(RedactingFilter(config.secrets))
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter(config.secrets))
    runtime = build_runtime(config)
    await runtime.start()  # before serving: a bad model block or missing Secret fails plainly
    # The agent's tracer provider is deliberately not made the global one: a2a-sdk traces
    # every internal method call to the global provider, outside the caller's trace.
    serve_metrics = metrics_enabled(config)
    separate_metrics = serve_metrics and metrics_port is not None and metrics_port != port
    if separate_metrics:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr=host)
    app = create_app(runtime, serve_metrics=serve_metrics and not separate_metrics)
    server = uvicorn.Server(uvicorn.Config(
        app, host=host, port=port, lifespan="on", log_level="info", access_log=False,
        timeout_graceful_shutdown=10,
    ))
    logger.info("agent %s serving on %s:%d", config.name, host, port)
    await server.serve()
    if not server.started:
        raise SystemExit(1)


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when it is installed (it is a dependency): the runtime spends much
    of a request in the event loop and socket calls, which uvloop does in C."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def runtime_command(files: list[Path], port: int, metrics_port: int | None, host: str) -> None:
    """What ``kagent runtime`` runs; configuration errors exit with status 2 and a message."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            runner.run(serve(files, port, metrics_port, host))
    except STARTUP_ERRORS as error:
        print(f"kagent runtime: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        pass
