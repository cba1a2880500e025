"""Bearer tokens for ServiceAccounts (TokenRequest): how a process that logs in to the API
server some other way (a client certificate) gets a token to call agents with."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

DEFAULT_TOKEN_SECONDS = 3600


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
