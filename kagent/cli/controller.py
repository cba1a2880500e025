"""`kagent controller`: run the operator (reconcilers, workflow engine, admission webhook)."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import typer

from kagent.api.labels import CONTROLLER_NAMESPACE
from kagent.controller.render import DEFAULT_IMAGE


def controller_command(
    kubeconfig: Path = typer.Option(None, "--kubeconfig", help="Kubeconfig (default: in-cluster or $KUBECONFIG)."),
    namespace: str = typer.Option(
        os.environ.get("KAGENT_NAMESPACE", CONTROLLER_NAMESPACE), "--namespace",
        help="Namespace of the controller: its leader Lease and webhook CA live here.",
    ),
    identity: str = typer.Option(None, "--identity", help="Leader-election identity (default: pod name)."),
    image: str = typer.Option(os.environ.get("KAGENT_IMAGE", DEFAULT_IMAGE), "--image",
                              help="Image the agent pods run."),
    workers: int = typer.Option(8, "--workers", min=1, help="Concurrent reconciles."),
    metrics_port: int = typer.Option(8080, "--metrics-port", help="Port of /metrics (0: off)."),
    webhook: bool = typer.Option(True, "--webhook/--no-webhook", help="Serve the admission webhook."),
    webhook_port: int = typer.Option(9443, "--webhook-port"),
    webhook_listen: str = typer.Option("0.0.0.0", "--webhook-listen", help="Address the webhook binds."),
    webhook_host: str = typer.Option(
        None, "--webhook-host",
        help="Reach the webhook at https://HOST:PORT (e.g. 127.0.0.1 outside a cluster) instead of "
             "through its Service.",
    ),
    webhook_cert_dir: Path = typer.Option(
        None, "--webhook-cert-dir",
        help="tls.crt/tls.key/ca.crt from here (cert-manager) instead of the self-managed CA.",
    ),
    manage_webhook_config: bool = typer.Option(
        True, "--manage-webhook-config/--no-manage-webhook-config",
        help="Create the webhook configurations and inject their caBundle; with "
             "--no-manage-webhook-config they are someone else's (the chart's) and only the "
             "caBundle is injected (none with --webhook-cert-dir: cert-manager's job).",
    ),
    lease_seconds: int = typer.Option(15, "--lease-seconds", min=2, help="Leader lease duration."),
    log_level: str = typer.Option("INFO", "--log-level"),
) -> None:
    """Run the Kagent controller and admission webhook."""
    from kagent.controller.operator import ControllerSettings, WebhookSettings, run

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpx2", "aiohttp.access"):  # aiohttp.access: a line per admission review
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("kopf").setLevel(max(logging.WARNING, logging.getLevelName(log_level.upper())))
    settings = ControllerSettings(
        namespace=namespace,
        image=image,
        workers=workers,
        metrics_port=metrics_port or None,
        kubeconfig=kubeconfig,
        lease_seconds=lease_seconds,
        webhook=WebhookSettings(
            port=webhook_port, listen=webhook_listen, host=webhook_host,
            manage_configuration=manage_webhook_config, cert_dir=webhook_cert_dir,
        ) if webhook else None,
    )
    if identity:
        settings.identity = identity
    elif os.environ.get("KAGENT_POD_NAME"):
        settings.identity = os.environ["KAGENT_POD_NAME"]
    try:
        asyncio.run(run(settings))
    except KeyboardInterrupt:
        pass
