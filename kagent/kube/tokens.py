"""Bearer tokens to call agents with: a kubeconfig user's own, or one minted with TokenRequest
for a ServiceAccount — how a user who logs in to the API server some other way (a client
certificate, an exec plugin) gets a token an agent can check."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kagent.api.labels import CLI_ACCOUNT, CONTROLLER_NAMESPACE

DEFAULT_TOKEN_SECONDS = 3600
SERVICE_ACCOUNT_ENV = "KAGENT_SERVICE_ACCOUNT"
DEFAULT_CLI_ACCOUNT = f"{CONTROLLER_NAMESPACE}/{CLI_ACCOUNT}"
"""The ServiceAccount the CLI and the dashboard mint tokens for when the user has no bearer
token of their own (``kagent dev`` creates it)."""
MINTED_TOKEN_SECONDS = 600


def kubeconfig_token(config: Any) -> str | None:
    """A kubeconfig user's bearer token (inline or from its token file), if it has one."""
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


def user_service_account(environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    """(namespace, name) of the ServiceAccount to mint a token for; a ValueError if the
    variable is not ``namespace/name``."""
    env = os.environ if environ is None else environ
    value = env.get(SERVICE_ACCOUNT_ENV) or DEFAULT_CLI_ACCOUNT
    namespace, _, name = value.partition("/")
    if not namespace or not name:
        raise ValueError(f"{SERVICE_ACCOUNT_ENV} must be namespace/name, not {value!r}")
    return namespace, name


def _request(namespace: str, account: str, audiences: Sequence[str] | None, seconds: int) -> Any:
    from lightkube.models.authentication_v1 import TokenRequestSpec
    from lightkube.models.meta_v1 import ObjectMeta
    from lightkube.resources.core_v1 import ServiceAccount

    return ServiceAccount.Token(metadata=ObjectMeta(name=account, namespace=namespace),
                                spec=TokenRequestSpec(
        audiences=list(audiences) if audiences else [], expirationSeconds=seconds))


def _answer(answer: Any, seconds: int) -> tuple[str, float]:
    status = answer.status
    if status is None or not status.token:
        raise RuntimeError("the API server answered the TokenRequest without a token")
    return status.token, float(seconds)


async def request_token(client: Any, namespace: str, account: str, *,
                        audiences: Sequence[str] | None = None,
                        seconds: int = DEFAULT_TOKEN_SECONDS) -> tuple[str, float]:
    """A token of ServiceAccount ``namespace/account`` and its lifetime in seconds (an async
    lightkube client; the caller needs ``create`` on ``serviceaccounts/token``). No audiences:
    the API server's own."""
    answer = await client.create(_request(namespace, account, audiences, seconds), account,
                                 namespace=namespace)
    return _answer(answer, seconds)


def request_token_sync(client: Any, namespace: str, account: str, *,
                       audiences: Sequence[str] | None = None,
                       seconds: int = DEFAULT_TOKEN_SECONDS) -> tuple[str, float]:
    """:func:`request_token` with a synchronous lightkube client."""
    answer = client.create(_request(namespace, account, audiences, seconds), account,
                           namespace=namespace)
    return _answer(answer, seconds)
