"""Start the dashboard: pick how viewers sign in and how agents are reached, then serve."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import secrets
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from kagent.dashboard.access import cluster_only, kubeconfig_viewer
from kagent.dashboard.agents import (
    AgentNetwork,
    ApiServerNetwork,
    LocalProxyNetwork,
    ServiceNetwork,
)
from kagent.dashboard.app import Dashboard, create_app
from kagent.dashboard.auth import Authenticator, Mode

ACCESS_KEY_ENV = "KAGENT_DASHBOARD_ACCESS_KEY"
"""The access key to use instead of a random one (set by whoever starts the dashboard for you, so
it can print the URL; an environment variable, so it never shows in a process list)."""
DEV_PORT = 8001


@dataclass(frozen=True)
class Options:
    port: int = 8001
    host: str = "127.0.0.1"
    kubeconfig: Path | None = None
    context: str | None = None
    auth_mode: Mode = "kubeconfig"
    agents_url: str | None = None
    """Reach agents at ``<url>/<namespace>/<agent>`` (a local proxy) instead of the default."""
    allowed_hosts: tuple[str, ...] = ()
    secure_cookies: bool = False


def pick_network(options: Options) -> AgentNetwork:
    """The local proxy when asked for or when the kubeconfig is a running `kagent dev`
    environment's; the agents' Services when deployed in a cluster with viewers' tokens; else
    the API server's proxy."""
    from kagent.local.dev import local_agents_url

    url = options.agents_url or local_agents_url(options.kubeconfig)
    if url:
        return LocalProxyNetwork(url)
    in_cluster = options.kubeconfig is None and "KUBERNETES_SERVICE_HOST" in os.environ
    if options.auth_mode == "token" and in_cluster:
        return ServiceNetwork()
    return ApiServerNetwork()


def loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def build(options: Options) -> tuple[Dashboard, str]:
    """The dashboard and the URL to open (in kubeconfig mode it carries the access key)."""
    if options.auth_mode == "kubeconfig":
        auth = Authenticator("kubeconfig", viewer=kubeconfig_viewer(options.kubeconfig,
                                                                    options.context))
        auth.access_key = os.environ.get(ACCESS_KEY_ENV) or auth.access_key
    else:
        auth = Authenticator("token", cluster=cluster_only(options.kubeconfig))
    shown = "127.0.0.1" if options.host in ("0.0.0.0", "::") else options.host
    hosts: set[str] | None = set(options.allowed_hosts) or None
    if hosts is None and loopback(options.host):
        hosts = {f"{name}:{options.port}" for name in ("127.0.0.1", "localhost", "[::1]")}
    dashboard = Dashboard(auth=auth, network=pick_network(options), allowed_hosts=hosts,
                          secure_cookies=options.secure_cookies)
    url = f"http://{shown}:{options.port}/"
    if options.auth_mode == "kubeconfig":
        url += f"?key={auth.access_key}"
    return dashboard, url


async def serve(dashboard: Dashboard, options: Options) -> None:
    server = uvicorn.Server(uvicorn.Config(
        create_app(dashboard), host=options.host, port=options.port, log_level="warning",
        lifespan="on", timeout_graceful_shutdown=3, proxy_headers=False))
    await server.serve()
    if not server.started:
        raise SystemExit(1)


def run(dashboard: Dashboard, options: Options) -> None:
    try:
        asyncio.run(serve(dashboard, options))
    except KeyboardInterrupt:
        pass


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def dashboard_for_dev(kubeconfig: Path, workdir: Path, namespace: str | None = None) -> str:
    """The dashboard of a `kagent dev` environment, started detached beside it if it is not
    running yet (`kagent dev down` stops it): its URL (opening on ``namespace`` when given), or
    why it could not start."""
    from kagent.local.dev import read_state, start_process
    from kagent.local.services import free_port

    page = f"#/ns/{namespace}" if namespace else ""
    running = read_state(workdir).get("dashboard")
    if running is not None and running.alive():
        return running.url + page
    port = DEV_PORT if _port_free(DEV_PORT) else free_port()
    key = secrets.token_urlsafe(24)
    url = f"http://127.0.0.1:{port}/?key={key}"
    argv = [sys.executable, "-m", "kagent", "dashboard", "--kubeconfig", str(kubeconfig),
            "--port", str(port)]
    try:
        start_process(workdir, "dashboard", "the dashboard", argv, port, "/healthz",
                      env={ACCESS_KEY_ENV: key}, shown_url=url)
    except RuntimeError as error:
        return f"(the dashboard did not start: {error}; try `kagent dashboard`)"
    return url + page
