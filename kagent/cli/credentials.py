"""The bearer token ``kagent chat`` and ``kagent invoke`` present to an agent.

Agents authenticate every request with Kubernetes tokens (or API keys), so the CLI sends, in
order: ``--token`` / ``KAGENT_TOKEN`` (any token or API key); the kubeconfig user's own bearer
token; otherwise — a client certificate or an exec plugin, which yield no token to forward — a
short-lived token minted with TokenRequest for a ServiceAccount the user may create tokens for
(``KAGENT_SERVICE_ACCOUNT=namespace/name``, default ``kagent-system/kagent-cli``, which
``kagent dev`` creates), bound to the agents' audience so it is useless against the API server.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kagent.api.labels import AGENT_TOKEN_AUDIENCE, CONTROLLER_NAMESPACE

TOKEN_ENV = "KAGENT_TOKEN"
SERVICE_ACCOUNT_ENV = "KAGENT_SERVICE_ACCOUNT"
DEFAULT_CLI_ACCOUNT = f"{CONTROLLER_NAMESPACE}/kagent-cli"
MINTED_TOKEN_SECONDS = 600
PROXY_TOKEN_HEADER = "Kagent-Authorization"
"""The API server's service proxy consumes ``Authorization`` (it authenticates the user with
it); the agent reads its caller's token from this header instead."""


def kubeconfig_token(config: Any) -> str | None:
    """The kubeconfig user's bearer token (inline or from its token file), if it has one."""
    user = getattr(config, "user", None)
    if user is None:
        return None
    if user.token:
        return str(user.token).strip() or None
    if user.token_file:
        try:
            return Path(user.token_file).read_text().strip() or None
        except OSError:
            return None
    return None


def service_account(environ: dict[str, str] | None = None) -> tuple[str, str]:
    """(namespace, name) of the ServiceAccount to mint a token for."""
    env = os.environ if environ is None else environ
    value = env.get(SERVICE_ACCOUNT_ENV) or DEFAULT_CLI_ACCOUNT
    namespace, _, name = value.partition("/")
    if not name:
        from kagent.cli.common import EXIT_USAGE, fail

        fail(f"{SERVICE_ACCOUNT_ENV} must be namespace/name, not {value!r}", code=EXIT_USAGE)
    return namespace, name


def agent_token(config: Any, kubeconfig: Path | None, explicit: str | None = None) -> str:
    """The token to call agents with, as the module docstring says; fails with a hint."""
    if explicit:
        return explicit
    token = kubeconfig_token(config)
    if token:
        return token
    from kagent.cli.common import fail
    from kagent.kube import sync_client
    from kagent.kube.tokens import request_token_sync

    namespace, name = service_account()
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
