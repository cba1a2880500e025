"""The bearer token ``kagent chat`` and ``kagent invoke`` present to an agent.

Agents authenticate every request with Kubernetes tokens (or API keys), so the CLI sends, in
order: ``--token`` / ``KAGENT_TOKEN`` (any token or API key); the kubeconfig user's own bearer
token; otherwise — a client certificate or an exec plugin, which yield no token to forward — a
short-lived token minted with TokenRequest for a ServiceAccount the user may create tokens for
(``KAGENT_SERVICE_ACCOUNT=namespace/name``, default ``kagent-system/kagent-cli``, which
``kagent dev`` creates), bound to the agents' audience so it is useless against the API server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kagent.api.labels import AGENT_TOKEN_AUDIENCE
from kagent.kube.tokens import (
    MINTED_TOKEN_SECONDS,
    SERVICE_ACCOUNT_ENV,
    kubeconfig_token,
    request_token_sync,
    user_service_account,
)

TOKEN_ENV = "KAGENT_TOKEN"
PROXY_TOKEN_HEADER = "Kagent-Authorization"
"""The API server's service proxy consumes ``Authorization`` (it authenticates the user with
it); the agent reads its caller's token from this header instead."""

__all__ = ["PROXY_TOKEN_HEADER", "SERVICE_ACCOUNT_ENV", "TOKEN_ENV", "agent_token",
           "kubeconfig_token"]


def agent_token(config: Any, kubeconfig: Path | None, explicit: str | None = None) -> str:
    """The token to call agents with, as the module docstring says; fails with a hint."""
    if explicit:
        return explicit
    token = kubeconfig_token(config)
    if token:
        return token
    from kagent.cli.common import EXIT_USAGE, fail
    from kagent.kube import sync_client

    try:
        namespace, name = user_service_account()
    except ValueError as error:
        fail(str(error), code=EXIT_USAGE)
    try:
        minted, _ = request_token_sync(sync_client(kubeconfig), namespace, name,
                                       audiences=[AGENT_TOKEN_AUDIENCE],
                                       seconds=MINTED_TOKEN_SECONDS)
    except Exception as error:  # noqa: BLE001 - say which account and how to pick another
        fail(f"your kubeconfig's user has no bearer token, and no token could be minted for "
             f"ServiceAccount {namespace}/{name}: {error}",
             f"set {SERVICE_ACCOUNT_ENV}=namespace/name to a ServiceAccount you may create "
             f"tokens for (and that may invoke the agent), or pass --token")
    return minted
