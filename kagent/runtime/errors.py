"""Why a request failed, said the same way to every caller.

The agent loop raises many kinds of exceptions — usage limits, timeouts, provider errors of
every category. Callers (the OpenAI-compatible API, A2A, metrics) need one small answer: what
happened in a sentence, which HTTP status says it, whether retrying can help, and which outcome
label the request metrics get. Secret values are scrubbed from every message.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Literal

from pydantic_ai import exceptions as pai

Outcome = Literal["success", "error", "limit", "cancelled"]
MEMORY_UNAVAILABLE = "memory_unavailable"


@dataclass(frozen=True)
class RequestFailure:
    """A failed request, ready to show a caller."""

    code: str
    """Machine-readable kind, e.g. ``limit_exceeded``, ``provider_rate_limited``."""
    message: str
    """One or two sentences for a person."""
    http_status: int
    outcome: Outcome
    retryable: bool = False
    retry_after: float | None = None


class LimitExceeded(Exception):
    """A per-request budget of the Agent's ``spec.limits`` ran out."""

    def __init__(self, limit: str, message: str) -> None:
        super().__init__(message)
        self.limit = limit


def describe_failure(error: BaseException, *, provider: str, model: str) -> RequestFailure:
    """Turn an exception from the agent loop into a :class:`RequestFailure`.

    HTTP statuses are chosen so the official clients behave sensibly: limit stops are 422 (not
    retried; the same request would run away again), provider errors that retrying cannot fix
    are 502 with ``retryable`` False, rate limits stay 429 with the provider's ``retry-after``.
    """
    where = f"model provider {provider} (model {model})" if provider else f"model {model}"
    from kagent.runtime.memory.base import RETRY_AFTER_SECONDS, BackendUnavailable

    if isinstance(error, BackendUnavailable):
        return RequestFailure(MEMORY_UNAVAILABLE, str(error), 503, "error", retryable=True,
                              retry_after=RETRY_AFTER_SECONDS)
    if isinstance(error, pai.FallbackExceptionGroup):
        return _chain_failure(error)
    if isinstance(error, LimitExceeded):
        return RequestFailure("limit_exceeded", str(error), 422, "limit")
    if isinstance(error, pai.RunTimedOut):
        return RequestFailure(
            "limit_exceeded", "the request took longer than the agent's time limit", 422, "limit"
        )
    if isinstance(error, pai.UsageLimitExceeded):
        return RequestFailure("limit_exceeded", _usage_limit_message(str(error)), 422, "limit")
    if isinstance(error, (asyncio.CancelledError, pai.RunCancelled)):
        return RequestFailure("cancelled", "the request was cancelled", 499, "cancelled")
    if isinstance(error, pai.ModelAPIError):
        return _provider_failure(error, where)
    if isinstance(error, pai.UnexpectedModelBehavior):
        return RequestFailure(
            "model_error", f"the {where} answered in a way the agent could not use: {error}",
            502, "error",
        )
    return RequestFailure(
        "internal_error", f"the agent failed: {type(error).__name__}: {error}", 500, "error"
    )


def _chain_failure(group: pai.FallbackExceptionGroup) -> RequestFailure:
    """Every model of ``model`` and ``model.fallbacks`` failed: say how each one did; the status
    and code are the last model's."""
    failures = [
        describe_failure(e, provider="", model=getattr(e, "model_name", "?"))
        for e in group.exceptions
    ]
    last = failures[-1]
    waits = [f.retry_after for f in failures if f.retry_after is not None]
    return RequestFailure(
        last.code,
        "every model of the agent's chain (model, then model.fallbacks) failed: "
        + "; ".join(f.message for f in failures),
        last.http_status, last.outcome,
        retryable=any(f.retryable for f in failures),
        retry_after=min(waits) if waits else None,
    )


def _provider_failure(error: pai.ModelAPIError, where: str) -> RequestFailure:
    detail = _provider_detail(error)
    status = getattr(error, "status_code", None)
    got = f" (HTTP {status})" if status else ""
    if isinstance(error, pai.ModelAuthenticationError):
        return RequestFailure(
            "provider_authentication_error",
            f"the {where} rejected the agent's API key{got}: check the Secret named by "
            f"model.apiKeySecretRef. Provider said: {detail}",
            502, "error",
        )
    if isinstance(error, pai.ModelQuotaExceededError):
        return RequestFailure(
            "provider_quota_exceeded", f"the {where} reports the quota is used up{got}: {detail}",
            502, "error",
        )
    if isinstance(error, pai.ModelRateLimitError):
        return RequestFailure(
            "provider_rate_limited",
            f"the {where} is rate limiting the agent{got} and retries did not get through: "
            f"{detail}",
            429, "error", retryable=True, retry_after=error.retry_after,
        )
    if isinstance(error, (pai.ModelTimeoutError, pai.ModelRequestTimeout)):
        return RequestFailure(
            "provider_timeout", f"the {where} did not answer in time: {detail}", 504, "error",
            retryable=True,
        )
    if isinstance(error, pai.ModelConnectionError):
        return RequestFailure(
            "provider_unreachable", f"the {where} could not be reached: {detail}", 502, "error",
            retryable=True,
        )
    if isinstance(error, (pai.ModelUnavailableError, pai.ModelServerError)):
        return RequestFailure(
            "provider_unavailable", f"the {where} failed{got}: {detail}", 502, "error",
            retryable=True, retry_after=error.retry_after,
        )
    if isinstance(error, pai.ModelNotFoundError):
        return RequestFailure(
            "provider_model_not_found", f"the {where} does not know the model{got}: {detail}",
            502, "error",
        )
    return RequestFailure(
        "provider_error", f"the {where} refused the request{got}: {detail}", 502, "error"
    )


def _provider_detail(error: pai.ModelAPIError) -> str:
    body = error.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
        if body.get("message"):
            return str(body["message"])
        if body.get("Message"):
            return str(body["Message"])
    if isinstance(body, str) and body:
        return body
    return str(error)


def _usage_limit_message(text: str) -> str:
    """pydantic-ai's message without its pointer to its own docs, in the Agent's field names."""
    text = text.split(". Consider raising the limit", 1)[0]
    replacements = {
        "request_limit": "limits.maxTurns",
        "tool_calls_limit": "limits.maxToolCalls",
        "total_tokens_limit": "limits.maxTokens",
    }
    for old, new in replacements.items():
        text = text.replace(old, new)
    return f"the request was stopped: {text}"
