"""The circuit breaker's transitions (a fake clock, no sleeping), how a model chain is built from
``model.fallbacks``, and how a chain's failure is told."""

from __future__ import annotations

import pytest
from pydantic_ai.exceptions import FallbackExceptionGroup, ModelHTTPError
from pydantic_ai.models.fallback import FallbackModel

from kagent.api.model import ModelSpec
from kagent.runtime.errors import describe_failure
from kagent.runtime.fallback import CircuitBreaker, CircuitOpenError, GuardedModel
from kagent.runtime.models import ModelConfigError, build_model
from kagent.runtime.secrets import SecretResolver


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_consecutive_failures_open_the_circuit_and_one_probe_closes_it() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=2, open_seconds=10, now=clock)
    assert breaker.acquire() is None
    breaker.failed()
    assert breaker.state == "closed" and breaker.acquire() is None
    breaker.succeeded()  # a success in between resets the count
    breaker.failed()
    assert breaker.state == "closed"
    breaker.failed()
    assert breaker.state == "open"
    clock.t += 4
    assert breaker.acquire() == pytest.approx(6)
    clock.t += 6
    assert breaker.state == "half-open"
    assert breaker.acquire() is None  # the probe
    assert breaker.acquire() == 10  # only one probe at a time
    breaker.succeeded()
    assert breaker.state == "closed" and breaker.acquire() is None


def probing(clock: Clock) -> CircuitBreaker:
    """A breaker that opened once and has just let its probe through."""
    breaker = CircuitBreaker(failure_threshold=1, open_seconds=5, now=clock)
    breaker.failed()
    clock.t += 5
    assert breaker.acquire() is None
    return breaker


def test_a_failed_probe_opens_the_circuit_again_for_the_whole_period() -> None:
    breaker = probing(Clock())
    breaker.failed()
    assert breaker.state == "open" and breaker.acquire() == 5


def test_a_probe_that_neither_succeeds_nor_fails_is_given_back() -> None:
    breaker = probing(Clock())
    breaker.released()
    assert breaker.acquire() is None  # another request may probe


def chain(**extra: object) -> ModelSpec:
    return ModelSpec.model_validate({
        "provider": "openai", "name": "primary", "endpoint": "http://llm/v1",
        "fallbacks": [
            {"provider": "anthropic", "name": "backup", "endpoint": "http://llm",
             "apiKeySecretRef": {"name": "keys", "key": "anthropic"}},
            {"provider": "vllm", "name": "local", "endpoint": "http://vllm/v1"},
        ],
        **extra,
    })


def test_a_chain_is_a_fallback_model_of_guarded_models_with_default_breakers() -> None:
    secrets = SecretResolver([{"metadata": {"name": "keys"}, "stringData": {"anthropic": "k1"}}])
    built = build_model(chain(), secrets, agent="a")
    assert isinstance(built, FallbackModel)
    labels = [m.chain_label for m in built.models]  # type: ignore[attr-defined]
    assert labels == ["openai/primary", "anthropic/backup", "vllm/local"]
    breakers = [m.breaker for m in built.models]  # type: ignore[attr-defined]
    assert all(b is not None and b.failure_threshold == 3 for b in breakers)
    assert len({id(b) for b in breakers}) == 3  # one breaker per model


def test_a_single_model_has_no_breaker_unless_asked() -> None:
    spec = ModelSpec.model_validate({"provider": "vllm", "name": "m", "endpoint": "http://v/v1"})
    built = build_model(spec, SecretResolver())
    assert isinstance(built, GuardedModel) and built.breaker is None
    spec = spec.model_copy(update={"circuit_breaker": chain(
        circuitBreaker={"failureThreshold": 7}).circuit_breaker})
    built = build_model(spec, SecretResolver())
    assert isinstance(built, GuardedModel) and built.breaker is not None
    assert built.breaker.failure_threshold == 7


def test_a_fallback_that_cannot_work_is_named_by_its_place_in_the_chain(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    spec = chain()
    spec.fallbacks[0].api_key_secret_ref = None  # type: ignore[index]
    with pytest.raises(ModelConfigError, match=r"^model\.fallbacks\[0\]\.apiKeySecretRef is required"):
        build_model(spec, SecretResolver())


def test_when_every_model_fails_the_answer_says_how_each_one_did() -> None:
    group = FallbackExceptionGroup("All models from FallbackModel failed", [
        ModelHTTPError(503, "primary", {"error": {"message": "primary is down"}}),
        CircuitOpenError("anthropic/backup", 12),
        ModelHTTPError(500, "local", {"error": {"message": "busy"}}),
    ])
    failure = describe_failure(group, provider="openai", model="primary")
    assert failure.message.startswith("every model of the agent's chain")
    assert "primary is down" in failure.message and "busy" in failure.message
    assert "anthropic/backup" in failure.message and "circuit is open" in failure.message
    # The status is the last model's; retrying may help (a circuit closes again).
    assert failure.http_status == 502 and failure.retryable and failure.retry_after == 12
