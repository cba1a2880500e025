"""Model fallbacks and circuit breakers.

pydantic-ai's :class:`FallbackModel` tries the models of a chain in order; this module adds what
it leaves to us: a circuit breaker per model (so a failing provider is not hammered by every
request, and is probed again after a while), and a record of which model answered, for the
response metadata, the span, the metrics and the workflow step status.

The breaker is a pure state machine with an injected clock (:class:`CircuitBreaker`); the model
wrapper (:class:`GuardedModel`) is the thin shell that consults it around each provider call.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import AsyncGenerator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic_ai.exceptions import (
    ModelConnectionError,
    ModelQuotaExceededError,
    ModelRateLimitError,
    ModelRequestTimeout,
    ModelServerError,
    ModelUnavailableError,
)
from pydantic_ai.messages import ModelMessage, ModelResponse
from pydantic_ai.models import ModelRequestParameters, StreamedResponse
from pydantic_ai.models.wrapper import WrapperModel
from pydantic_ai.settings import ModelSettings

from kagent.runtime.metrics import MODEL_CIRCUIT_OPEN, MODEL_FAILOVERS

FALLBACK_ON: tuple[type[Exception], ...] = (
    ModelRateLimitError,
    ModelQuotaExceededError,
    ModelUnavailableError,
    ModelServerError,
    ModelConnectionError,
    ModelRequestTimeout,
)
"""Failures after which the next model of the chain is tried, and which count against a model's
circuit: rate limits, exhausted quota, provider 5xx, connection errors and timeouts. A bad request
or a bad key is the caller's or the operator's to fix and fails the request as it is."""

CircuitState = Literal["closed", "open", "half-open"]


class CircuitOpenError(ModelUnavailableError):
    """The model's circuit is open: no request was sent to it."""

    def __init__(self, label: str, retry_in: float) -> None:
        super().__init__(label, f"model {label} is not called for {retry_in:.0f}s more: its "
                         "circuit is open after repeated failures", retry_after=retry_in)


@dataclass
class CircuitBreaker:
    """Consecutive failures open the circuit for ``open_seconds``; then one probe is let through.

    Not tied to any I/O: ``now`` is injected, so every transition is tested without sleeping.
    One breaker is shared by every request of a runtime process; a lock keeps it consistent when
    it is used from more than one thread (the event loop and a test's)."""

    failure_threshold: int = 3
    open_seconds: float = 30.0
    now: Callable[[], float] = time.monotonic
    failures: int = 0
    opened_at: float | None = None
    probing: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def state(self) -> CircuitState:
        if self.opened_at is None:
            return "closed"
        if self.probing or self.now() - self.opened_at >= self.open_seconds:
            return "half-open"
        return "open"

    def acquire(self) -> float | None:
        """None if a request may go out now (and, when half-open, it is the probe); else the
        seconds until the circuit lets a probe through."""
        with self._lock:
            if self.opened_at is None:
                return None
            waited = self.now() - self.opened_at
            if waited < self.open_seconds:
                return self.open_seconds - waited
            if self.probing:
                return self.open_seconds
            self.probing = True
            return None

    def succeeded(self) -> None:
        with self._lock:
            self.failures = 0
            self.opened_at = None
            self.probing = False

    def failed(self) -> None:
        with self._lock:
            self.failures += 1
            if self.probing or self.failures >= self.failure_threshold:
                self.opened_at = self.now()
            self.probing = False

    def released(self) -> None:
        """A request that neither succeeded nor failed in a way that counts (cancelled, a bad
        request) gives a held probe back."""
        with self._lock:
            self.probing = False


@dataclass
class AnsweredBy:
    """Which model of the chain answered a turn's last model call (``provider/name``)."""

    label: str | None = None


_answered_by: contextvars.ContextVar[AnsweredBy | None] = contextvars.ContextVar(
    "kagent_answered_by", default=None
)


def track_answers() -> AnsweredBy:
    """Start recording, for the current task and the tasks it starts, which model answered."""
    holder = AnsweredBy()
    _answered_by.set(holder)
    return holder


def answered_label() -> str | None:
    holder = _answered_by.get()
    return holder.label if holder is not None else None


class GuardedModel(WrapperModel):
    """One model of a chain behind its circuit breaker, noting when it answers."""

    def __init__(self, wrapped: Any, *, label: str, agent: str,
                 breaker: CircuitBreaker | None) -> None:
        super().__init__(wrapped)
        self.chain_label = label
        self.agent = agent
        self.breaker = breaker

    def _admit(self) -> None:
        if self.breaker is None:
            return
        wait = self.breaker.acquire()
        if wait is not None:
            MODEL_FAILOVERS.labels(agent=self.agent, model=self.chain_label, reason="circuit_open").inc()
            raise CircuitOpenError(self.chain_label, wait)

    def _record(self, error: BaseException | None) -> None:
        if error is None:
            holder = _answered_by.get()
            if holder is not None:
                holder.label = self.chain_label
            if self.breaker is not None:
                self.breaker.succeeded()
        elif isinstance(error, FALLBACK_ON):
            MODEL_FAILOVERS.labels(agent=self.agent, model=self.chain_label,
                                   reason=type(error).__name__).inc()
            if self.breaker is not None:
                self.breaker.failed()
        elif self.breaker is not None:
            self.breaker.released()
        if self.breaker is not None:
            MODEL_CIRCUIT_OPEN.labels(agent=self.agent, model=self.chain_label).set(
                0 if self.breaker.state == "closed" else 1
            )

    async def request(self, messages: list[ModelMessage], model_settings: ModelSettings | None,
                      model_request_parameters: ModelRequestParameters) -> ModelResponse:
        self._admit()
        try:
            response = await super().request(messages, model_settings, model_request_parameters)
        except BaseException as error:
            self._record(error)
            raise
        self._record(None)
        return response

    @asynccontextmanager
    async def request_stream(self, messages: list[ModelMessage],
                             model_settings: ModelSettings | None,
                             model_request_parameters: ModelRequestParameters,
                             run_context: Any = None) -> AsyncGenerator[StreamedResponse]:
        self._admit()
        try:
            async with super().request_stream(messages, model_settings, model_request_parameters,
                                              run_context) as stream:
                yield stream
        except BaseException as error:
            self._record(error)
            raise
        self._record(None)
