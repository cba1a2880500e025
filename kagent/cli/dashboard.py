"""`kagent dashboard`: the web dashboard, served from this machine with your own kubeconfig
(nothing is installed in the cluster), or in a cluster where each viewer signs in."""

from __future__ import annotations

import webbrowser
from pathlib import Path

import typer

from kagent.cli.common import EXIT_USAGE, KubeconfigOption, err_console, fail


def dashboard(
    port: int = typer.Option(8001, "--port", "-p", help="Port to serve on."),
    open_browser: bool = typer.Option(False, "--open", help="Open the dashboard in a browser."),
    host: str = typer.Option("127.0.0.1", "--host",
                             help="Address to listen on (0.0.0.0 only behind authentication, "
                                  "as the Helm chart does)."),
    kubeconfig: Path = KubeconfigOption,
    context: str = typer.Option(None, "--context", help="Kubeconfig context (default: current)."),
    auth_mode: str = typer.Option(
        "kubeconfig", "--auth-mode",
        help="kubeconfig: act as the kubeconfig's user (one person, this machine); token: each "
             "viewer signs in with their own Kubernetes bearer token (in a cluster)."),
    agents_url: str = typer.Option(
        None, "--agents-url", help="Reach agents at URL/<namespace>/<agent> instead of through "
                                   "the API server (found by itself for `kagent dev`)."),
    allowed_host: list[str] = typer.Option(
        None, "--allowed-host", help="Host header to answer, e.g. dashboard.example.com "
                                     "(repeat; default: the loopback names when on loopback)."),
    secure_cookies: bool = typer.Option(False, "--secure-cookies",
                                        help="Mark the session cookie Secure (behind HTTPS)."),
    log_level: str = typer.Option("WARNING", "--log-level", help="DEBUG, INFO, WARNING, ERROR."),
) -> None:
    """Serve the web dashboard: agents, chat, workflows and live runs as graphs."""
    import logging

    from lightkube.core.exceptions import ConfigError

    from kagent.cli.common import kubeconfig_path
    from kagent.dashboard.server import Options, build, loopback, run

    if log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        fail(f"--log-level {log_level!r}: use DEBUG, INFO, WARNING or ERROR", code=EXIT_USAGE)
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: "
                                                        "%(message)s")
    for noisy in ("httpx", "httpx2", "httpcore", "httpcore2", "sse_starlette"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if auth_mode not in ("kubeconfig", "token"):
        fail(f"--auth-mode {auth_mode!r}: use kubeconfig or token", code=EXIT_USAGE)
    if auth_mode == "kubeconfig" and not loopback(host):
        fail("--auth-mode kubeconfig shares your kubeconfig's rights with whoever reaches the "
             "port; it only listens on loopback", "use --auth-mode token to serve others",
             EXIT_USAGE)
    options = Options(port=port, host=host, kubeconfig=kubeconfig_path(kubeconfig),
                      context=context, auth_mode=auth_mode,  # type: ignore[arg-type]
                      agents_url=agents_url, allowed_hosts=tuple(allowed_host or ()),
                      secure_cookies=secure_cookies)
    try:
        dash, url = build(options)
    except (ConfigError, OSError, KeyError) as error:
        fail(f"cannot load the cluster configuration: {error}",
             "point --kubeconfig (or KUBECONFIG) at a valid kubeconfig")
    typer.echo(f"Kagent dashboard: {url}", err=True)  # plain: a long URL must not wrap
    who = dash.auth.viewer.user if dash.auth.viewer else "each signed-in viewer"
    err_console.print(f"  acting as {who}; "
                      f"agents reached through {dash.network.description}", style="dim",
                      highlight=False)
    if open_browser:
        webbrowser.open(url)
    run(dash, options)
