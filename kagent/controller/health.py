"""Liveness that reflects the controller's event loop.

Everything the controller does — reconciles, workflow runs, renewing the leader Lease, serving
the admission webhook — runs on one asyncio event loop. A loop blocked by a runaway computation
does none of it, yet ``/metrics`` (served from its own thread) still answers, so a probe on it
never restarts a frozen controller. Here a heartbeat task on the loop records when it last ran,
and ``/healthz`` — served from a thread, so it answers even while the loop is stuck — fails once
the heartbeat is older than the stall limit. The kubelet then restarts the pod within
``stall limit + periodSeconds × failureThreshold`` of the loop freezing.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app

HEARTBEAT_SECONDS = 1.0
DEFAULT_STALL_SECONDS = 15.0
"""How long the loop may go without running its heartbeat before liveness fails."""


class LoopHeartbeat:
    """Records, from a task on the event loop, the last moment the loop ran it."""

    def __init__(self, stall_seconds: float = DEFAULT_STALL_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stall_seconds = stall_seconds
        self.clock = clock
        self.last = clock()

    async def run(self, interval: float = HEARTBEAT_SECONDS) -> None:
        while True:
            self.last = self.clock()
            await asyncio.sleep(interval)

    def stalled_for(self) -> float:
        """Seconds since the loop last ran the heartbeat."""
        return max(0.0, self.clock() - self.last)

    def alive(self) -> tuple[bool, str]:
        stalled = self.stalled_for()
        if stalled > self.stall_seconds:
            return False, (f"the event loop has not run for {stalled:.1f}s (limit "
                           f"{self.stall_seconds:.0f}s): reconciles, the leader lease and the "
                           "webhook are stuck\n")
        return True, f"ok: the event loop ran {stalled:.1f}s ago\n"


def health_app(heartbeat: LoopHeartbeat) -> Callable[..., Iterable[bytes]]:
    """``/healthz`` from the heartbeat; everything else is Prometheus' ``/metrics``."""
    metrics = make_wsgi_app()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/healthz":
            ok, text = heartbeat.alive()
            start_response("200 OK" if ok else "503 Service Unavailable",
                           [("Content-Type", "text/plain; charset=utf-8")])
            return [text.encode()]
        return metrics(environ, start_response)

    return app


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        """Probes every few seconds are not worth a log line."""


def start_health_server(port: int, heartbeat: LoopHeartbeat, addr: str = "0.0.0.0") -> WSGIServer:
    """Serve ``/healthz`` and ``/metrics`` on ``port`` from a daemon thread."""
    server = make_server(addr, port, health_app(heartbeat), _ThreadingServer, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="health-server", daemon=True).start()
    return server
