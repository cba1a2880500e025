"""Running agent runtimes in tests: in this process (fast, inspectable) or as a real
``kagent runtime`` process (exactly what a pod runs).

Both take the manifests a user would apply — dicts or YAML files — and expose the base
:attr:`url` (A2A JSON-RPC and the agent card), :attr:`openai_base_url` for the official
``openai`` client, and :attr:`name`.

>>> with RuntimeServer([agent, tool]) as runtime:
...     openai.OpenAI(base_url=runtime.openai_base_url, api_key="x")
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import yaml

from kagent.local.process import Process, ProcessError
from kagent.local.services import AsgiServer, free_port

Documents = Sequence[Mapping[str, Any]]


def _agent_name(documents: Documents) -> str:
    for document in documents:
        if document.get("kind") == "Agent":
            return str(document["metadata"]["name"])
    raise ValueError("the documents hold no Agent")


def write_manifests(documents: Documents, path: Path) -> Path:
    path.write_text(yaml.safe_dump_all([dict(d) for d in documents], sort_keys=False))
    return path


class RuntimeServer:
    """An agent runtime served in a background thread of this process.

    ``exporter`` receives the agent's spans (an ``InMemorySpanExporter``, say) even when the
    Agent does not enable tracing; ``environ`` stands in for the pod's environment (secrets as
    ``KAGENT_SECRET_*`` variables, ``KAGENT_AGENT_URL_TEMPLATE``).
    """

    def __init__(
        self,
        documents: Documents,
        *,
        environ: Mapping[str, str] | None = None,
        exporter: Any = None,
    ) -> None:
        from kagent.runtime.config import build_runtime_config
        from kagent.runtime.server import build_runtime

        env = dict(environ or {})
        self.config = build_runtime_config([dict(d) for d in documents], environ=env)
        self.runtime = build_runtime(self.config, environ=env, exporter=exporter)
        self.name = self.config.name
        self._server: AsgiServer | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("RuntimeServer is not started")
        return self._server.url

    @property
    def openai_base_url(self) -> str:
        return f"{self.url}/v1"

    def start(self) -> Self:
        from kagent.runtime.app import create_app

        self._server = AsgiServer(create_app(self.runtime), lifespan="on").start(timeout=30)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self.runtime.tracer_provider is not None:
            self.runtime.tracer_provider.shutdown()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class RuntimeProcess:
    """``python -m kagent runtime -f <manifests>`` as a child process on a free port."""

    def __init__(
        self,
        documents: Documents,
        *,
        environ: Mapping[str, str] | None = None,
        port: int | None = None,
        metrics_port: int | None = None,
    ) -> None:
        self.documents = [dict(d) for d in documents]
        self.name = _agent_name(self.documents)
        self.environ = dict(environ or {})
        self.port = port or free_port()
        self.metrics_port = metrics_port
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._process: Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def log_path(self) -> Path:
        assert self._dir is not None
        return Path(self._dir.name) / "runtime.log"

    def logs(self) -> str:
        return self.log_path.read_text() if self._dir is not None and self.log_path.exists() else ""

    def start(self, timeout: float = 60.0) -> Self:
        """Start it and wait for ``/readyz``; a RuntimeError (with the log) if it exits first or
        is not ready within ``timeout`` seconds."""
        self._dir = tempfile.TemporaryDirectory(prefix="kagent-runtime-")
        manifest = write_manifests(self.documents, Path(self._dir.name) / "agent.yaml")
        command = [sys.executable, "-m", "kagent", "runtime", "-f", str(manifest),
                   "--port", str(self.port), "--host", "127.0.0.1"]
        if self.metrics_port is not None:
            command += ["--metrics-port", str(self.metrics_port)]
        env = {**os.environ, "KAGENT_AGENT_NAME": self.name, **self.environ}
        self._process = Process.start(command, name="kagent runtime", log_file=self.log_path,
                                      env=env, die_with_parent=True)
        try:
            self._process.wait_ready(f"{self.url}/readyz", timeout=timeout, what="/readyz")
        except ProcessError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop(grace=15)
            self._process = None

    def cleanup(self) -> None:
        self.stop()
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.cleanup()
