"""Model fallbacks and the circuit breaker end to end: the primary model (OpenAI wire format)
answers 429 and then 500, the fallback (Anthropic wire format) answers instead, the primary's
circuit opens so it sees no request for its open period, and a probe closes it again once it has
recovered. Which model answered is in the A2A metadata, the OpenAI answer and the metrics."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import openai
import pytest
from prometheus_client import REGISTRY

from kagent.agentclient import AgentClient
from kagent.mockllm import MockLLM
from tests.runtime_manifests import agent, model, secret, unique

OPEN_SECONDS = 6.0

FAILING = {
    "rules": [
        {"name": "primary-rate-limited", "model": "primary", "times": 1,
         "error": {"status": 429, "message": "slow down", "retry_after": 0}},
        {"name": "primary-down", "model": "primary", "error": {"status": 500, "message": "boom"}},
        {"name": "backup", "model": "backup", "content": "backup answers: {{last_user}}"},
    ]
}
RECOVERED = {
    "rules": [
        {"name": "primary", "model": "primary", "content": "primary answers: {{last_user}}"},
        {"name": "backup", "model": "backup", "content": "backup answers: {{last_user}}"},
    ]
}


def documents(llm: MockLLM) -> list[dict[str, Any]]:
    block = model("openai", llm.url, name="primary", temperature=0.1)
    block["fallbacks"] = [model("anthropic", llm.url, name="backup", temperature=0.7)]
    block["circuitBreaker"] = {"failureThreshold": 2, "openSeconds": OPEN_SECONDS}
    return [agent(unique("fallback"), block, systemPrompt="Answer."), secret()]


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def primary_calls(llm: MockLLM) -> list[Any]:
    return [c for c in llm.calls if c.model == "primary"]


def test_fallback_answers_and_the_circuit_opens_and_closes(agent_runtime: Any) -> None:
    with MockLLM(FAILING) as llm:
        runtime = agent_runtime(documents(llm))
        client = openai.OpenAI(base_url=runtime.openai_base_url, api_key="x", max_retries=0)

        def ask(text: str) -> Any:
            return client.chat.completions.create(
                model=runtime.name, messages=[{"role": "user", "content": text}])

        # 429 from the primary: the fallback answers at once (no SDK retries of the primary).
        first = ask("one")
        assert first.choices[0].message.content == "backup answers: one"
        assert first.model_extra["kagent"]["model"] == "anthropic/backup"
        assert [c.rule for c in primary_calls(llm)] == ["primary-rate-limited"]
        backup = [c for c in llm.calls if c.model == "backup"][0]
        assert backup.provider == "anthropic" and backup.body["temperature"] == 0.7
        assert primary_calls(llm)[0].body["temperature"] == 0.1  # each model its own settings

        # 500: the second consecutive failure opens the primary's circuit.
        assert ask("two").choices[0].message.content == "backup answers: two"
        opened = time.monotonic()
        assert len(primary_calls(llm)) == 2
        labels = {"agent": runtime.name, "model": "openai/primary"}
        assert metric("agent_model_circuit_open", **labels) == 1
        assert metric("agent_model_failovers_total", reason="ModelRateLimitError", **labels) == 1
        assert metric("agent_model_failovers_total", reason="ModelServerError", **labels) == 1

        # While open, the primary sees no request at all, even once it has recovered.
        llm.set_script(RECOVERED)
        before = len(primary_calls(llm))
        while time.monotonic() - opened < OPEN_SECONDS / 3:  # well inside, even on a busy machine
            answer = ask("three")
            assert answer.choices[0].message.content == "backup answers: three"
        assert len(primary_calls(llm)) == before
        assert metric("agent_model_failovers_total", reason="circuit_open", **labels) >= 1
        assert metric("agent_llm_tokens_total", agent=runtime.name, model="anthropic/backup",
                      direction="output") > 0

        # After the open period one probe goes to the primary; it answers and the circuit closes.
        time.sleep(max(0.0, OPEN_SECONDS - (time.monotonic() - opened)) + 0.2)
        fourth = ask("four")
        assert fourth.choices[0].message.content == "primary answers: four"
        assert fourth.model_extra["kagent"]["model"] == "openai/primary"
        assert metric("agent_model_circuit_open", **labels) == 0

        # The A2A answer carries the model too, as the workflow engine reads it.
        answer = asyncio.run(_ask_a2a(runtime.url, runtime.name))
        assert answer.text == "primary answers: five" and answer.model == "openai/primary"
        client.close()


async def _ask_a2a(url: str, name: str) -> Any:
    client = AgentClient()
    try:
        return await client.ask(url, name, "five", message_id=str(uuid.uuid4()))
    finally:
        await client.aclose()


def failed_request(runtime: Any) -> openai.APIStatusError:
    """Send one request that must fail; the error the official client raises."""
    with openai.OpenAI(base_url=runtime.openai_base_url, api_key="x", max_retries=0) as client:
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(
                model=runtime.name, messages=[{"role": "user", "content": "hello"}])
    return caught.value


def test_every_model_failing_says_how_each_failed(agent_runtime: Any) -> None:
    script = {"rules": [
        {"model": "primary", "error": {"status": 503, "message": "primary is down"}},
        {"model": "backup", "error": {"status": 429, "message": "backup is busy", "retry_after": 0}},
    ]}
    with MockLLM(script) as llm:
        error = failed_request(agent_runtime(documents(llm)))
    assert isinstance(error, openai.RateLimitError)  # the last model's status
    message = str(error)
    assert "every model of the agent's chain" in message, message
    assert "primary is down" in message and "backup is busy" in message, message


def test_a_bad_key_is_not_handed_to_the_fallback(agent_runtime: Any) -> None:
    script = {"rules": [
        {"model": "primary", "error": {"status": 401, "message": "bad key"}},
        {"model": "backup", "content": "backup answers"},
    ]}
    with MockLLM(script) as llm:
        error = failed_request(agent_runtime(documents(llm)))
        assert "rejected the agent's API key" in str(error)
        assert [c.model for c in llm.calls] == ["primary"]


def usage_samples(name: str, agent_name: str) -> dict[str, float]:
    """A usage metric of one agent, by model (summed over callers)."""
    found: dict[str, float] = {}
    for family in REGISTRY.collect():
        for sample in family.samples:
            if sample.name == name and sample.labels.get("agent") == agent_name:
                model_name = sample.labels["model"]
                found[model_name] = found.get(model_name, 0.0) + sample.value
    return found


def test_a_fallback_answer_is_charged_to_the_fallback_at_its_own_price(agent_runtime: Any) -> None:
    script = {"rules": [
        {"name": "primary-down", "model": "primary", "error": {"status": 500, "message": "boom"}},
        {"name": "backup", "model": "backup", "content": "backup answers",
         "usage": {"input_tokens": 1000, "output_tokens": 500}}]}
    with MockLLM(script) as llm:
        docs = documents(llm)
        block = docs[0]["spec"]["model"]
        block["pricing"] = {"inputPerMillion": 1.0, "outputPerMillion": 1.0}
        block["fallbacks"][0]["pricing"] = {"inputPerMillion": 100.0, "outputPerMillion": 200.0}
        runtime = agent_runtime(docs)
        with openai.OpenAI(base_url=runtime.openai_base_url, api_key="x", max_retries=0) as client:
            answer = client.chat.completions.create(
                model=runtime.name, messages=[{"role": "user", "content": "hello"}])
        assert answer.model_extra["kagent"]["model"] == "anthropic/backup"
        cost = usage_samples("agent_usage_cost_dollars_total", runtime.name)
        tokens = usage_samples("agent_usage_tokens_total", runtime.name)
        # 1,000 x $100 + 500 x $200 per million: the backup's own price, under its own name.
        assert cost == {"anthropic/backup": pytest.approx(0.2)}, cost
        assert tokens == {"anthropic/backup": 1500}, tokens
