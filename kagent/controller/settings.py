"""How the controller process is configured (the `kagent controller` flags)."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from kagent.api.labels import CONTROLLER_NAMESPACE
from kagent.controller.health import DEFAULT_STALL_SECONDS
from kagent.controller.render import DEFAULT_IMAGE, NetworkPolicySettings
from kagent.webhook.server import WebhookSettings


NETWORK_POLICY_ENV = "KAGENT_AGENT_NETWORK_POLICY"
"""JSON the chart sets from its values: ``controllerPodLabels``, ``allowFrom`` (NetworkPolicy
peers allowed on every agent's serving port) and ``metricsFrom`` (peers allowed on the metrics
port)."""


def network_policy_from_env(environ: dict[str, str] | None = None) -> NetworkPolicySettings:
    """The controller-wide part of agents' NetworkPolicies (the controller's namespace is set
    from ``--namespace`` when the controller starts)."""
    text = (environ if environ is not None else os.environ).get(NETWORK_POLICY_ENV, "").strip()
    if not text:
        return NetworkPolicySettings()
    try:
        values = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{NETWORK_POLICY_ENV} is not JSON: {error}") from None
    defaults = NetworkPolicySettings()
    return NetworkPolicySettings(
        controller_pod_labels=dict(values.get("controllerPodLabels") or defaults.controller_pod_labels),
        allow_from=tuple(values.get("allowFrom") or ()),
        metrics_from=tuple(values["metricsFrom"] if "metricsFrom" in values else defaults.metrics_from),
    )


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
    loop_stall_seconds: float = DEFAULT_STALL_SECONDS
    """``/healthz`` fails once the event loop has not run for this long (see
    :mod:`kagent.controller.health`)."""
    network_policy: NetworkPolicySettings = field(default_factory=network_policy_from_env)
    """Who besides their own namespace may reach agents (the chart's values)."""
