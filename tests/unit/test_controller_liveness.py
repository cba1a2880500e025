"""The controller's liveness reflects its event loop: ``/healthz``, served from its own thread,
fails within a bounded time once the loop stops running, and recovers when it runs again;
``/metrics`` is served beside it."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import urllib.error
import urllib.request

from kagent.controller.health import LoopHeartbeat, start_health_server


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _probe(port: int, path: str = "/healthz") -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


async def test_a_blocked_event_loop_fails_liveness_within_the_stall_limit() -> None:
    heartbeat = LoopHeartbeat(stall_seconds=0.5)
    beating = asyncio.create_task(heartbeat.run(interval=0.05))
    port = _free_port()
    server = start_health_server(port, heartbeat, addr="127.0.0.1")
    try:
        await asyncio.sleep(0.2)
        status, text = await asyncio.to_thread(_probe, port)
        assert status == 200 and text.startswith("ok: the event loop ran")

        # Block the loop (as a runaway computation would) and probe from another thread.
        results: list[tuple[float, int, str]] = []

        def probe_while_blocked() -> None:
            started = time.monotonic()
            while time.monotonic() - started < 3.0:
                code, body = _probe(port)
                results.append((time.monotonic() - started, code, body))
                if code == 503:
                    return
                time.sleep(0.1)

        prober = threading.Thread(target=probe_while_blocked)
        prober.start()
        time.sleep(2.0)  # noqa: ASYNC251 - blocking the loop on purpose
        prober.join()
        failed = [(t, body) for t, code, body in results if code == 503]
        assert failed, f"liveness never failed while the loop was blocked: {results}"
        when, body = failed[0]
        assert when < 1.5, f"liveness failed only after {when:.1f}s (limit 0.5s + probe interval)"
        assert "the event loop has not run for" in body

        await asyncio.sleep(0.2)  # the loop runs again: liveness recovers
        status, _ = await asyncio.to_thread(_probe, port)
        assert status == 200
        status, metrics = await asyncio.to_thread(_probe, port, "/metrics")
        assert status == 200 and "python_info" in metrics
    finally:
        beating.cancel()
        server.shutdown()
