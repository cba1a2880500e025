"""How the controller process is configured (the `kagent controller` flags)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from kagent.controller.render import DEFAULT_IMAGE


@dataclass
class WebhookSettings:
    port: int = 9443
    listen: str = "0.0.0.0"
    host: str | None = None
    """URL host the apiserver uses (dev mode: 127.0.0.1). None: reach it through the Service."""
    service_name: str = "kagent-webhook"
    service_port: int = 443
    manage_configuration: bool = True
    """Create the webhook configurations and inject the caBundle (off when cert-manager does)."""
    cert_dir: Path | None = None
    """Serving certificate from here (tls.crt, tls.key, ca.crt) instead of the managed CA."""


@dataclass
class ControllerSettings:
    namespace: str = "kagent-system"
    identity: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    image: str = DEFAULT_IMAGE
    workers: int = 8
    resync_seconds: float = 300.0
    metrics_port: int | None = 8080
    kubeconfig: Path | None = None
    webhook: WebhookSettings | None = field(default_factory=WebhookSettings)
    lease_seconds: int = 15
