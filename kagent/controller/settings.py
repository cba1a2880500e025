"""How the controller process is configured (the `kagent controller` flags)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from kagent.api.labels import CONTROLLER_NAMESPACE
from kagent.controller.render import DEFAULT_IMAGE
from kagent.webhook.server import WebhookSettings


@dataclass
class ControllerSettings:
    namespace: str = CONTROLLER_NAMESPACE
    identity: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    image: str = DEFAULT_IMAGE
    workers: int = 8
    resync_seconds: float = 300.0
    metrics_port: int | None = 8080
    kubeconfig: Path | None = None
    webhook: WebhookSettings | None = field(default_factory=WebhookSettings)
    lease_seconds: int = 15
