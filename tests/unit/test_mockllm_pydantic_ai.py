"""pydantic-ai agents (the runtime's agent loop) against the mock, one per provider.

Each agent really calls a Python function tool chosen by the scripted model and then answers with
its result — the same path kagent's runtime takes against a real provider.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from anthropic import AsyncAnthropic
from pydantic_ai import Agent
from pydantic_ai.models import Model
from pydantic_ai.models.anthropic import AnthropicModel
from pydantic_ai.models.bedrock import BedrockConverseModel
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.anthropic import AnthropicProvider
from pydantic_ai.providers.bedrock import BedrockProvider
from pydantic_ai.providers.openai import OpenAIProvider

from kagent.mockllm import MockLLM

SCRIPT = {
    "rules": [
        {
            "name": "answer",
            "has_tool_result": "convert_currency",
            "content": "That is {{tool_result}}.",
        },
        {
            "name": "call",
            "regex": r"(?P<amount>\d+) (?P<src>[A-Z]{3}) in (?P<dst>[A-Z]{3})",
            "tools_offered": "convert_currency",
            "tool_calls": [
                {
                    "name": "convert_currency",
                    "arguments": {
                        "amount": "{{match.amount}}",
                        "source": "{{match.src}}",
                        "target": "{{match.dst}}",
                    },
                }
            ],
        },
    ]
}


def openai_model(llm: MockLLM) -> Model:
    return OpenAIChatModel(
        "gpt-4o", provider=OpenAIProvider(base_url=llm.openai_base_url, api_key="sk-openai")
    )


def anthropic_model(llm: MockLLM) -> Model:
    client = AsyncAnthropic(base_url=llm.url, api_key="sk-anthropic", max_retries=0)
    return AnthropicModel("claude-mock", provider=AnthropicProvider(anthropic_client=client))


def bedrock_model(llm: MockLLM) -> Model:
    client = boto3.client(
        "bedrock-runtime",
        endpoint_url=llm.url,
        region_name="us-east-1",
        aws_access_key_id="AKIDBEDROCK",
        aws_secret_access_key="y",
    )
    return BedrockConverseModel(
        "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
        provider=BedrockProvider(bedrock_client=client),
    )


PROVIDERS: dict[str, tuple[Callable[[MockLLM], Model], str]] = {
    "openai": (openai_model, "sk-openai"),
    "anthropic": (anthropic_model, "sk-anthropic"),
    "bedrock": (bedrock_model, "AKIDBEDROCK"),
}


@pytest.fixture(scope="module")
def llm() -> Iterator[MockLLM]:
    with MockLLM(SCRIPT) as server:
        yield server


async def close_client(model: Model) -> None:
    """Close the SDK client so its pooled connections do not outlive the test."""
    client: Any = getattr(model, "client", None)
    closing = client.close() if client is not None else None
    if inspect.isawaitable(closing):
        await closing


def make_agent(model: Model, seen: list[dict[str, Any]]) -> Agent[None, str]:
    agent = Agent(model, instructions="You convert currencies with the tool.")

    @agent.tool_plain
    def convert_currency(amount: int, source: str, target: str) -> str:
        """Convert an amount between currencies."""
        seen.append({"amount": amount, "source": source, "target": target})
        return f"{amount * 2} {target}"

    return agent


@pytest.mark.parametrize("provider", list(PROVIDERS))
@pytest.mark.parametrize("streaming", [False, True], ids=["run", "run_stream"])
async def test_agent_tool_round_trip(llm: MockLLM, provider: str, streaming: bool) -> None:
    llm.reset()
    build, key = PROVIDERS[provider]
    seen: list[dict[str, Any]] = []
    model = build(llm)
    agent = make_agent(model, seen)
    prompt = "How much is 50 EUR in USD?"
    try:
        if streaming:
            async with agent.run_stream(prompt) as run:
                output = await run.get_output()
                usage = run.usage
        else:
            result = await agent.run(prompt)
            output, usage = result.output, result.usage
    finally:
        await close_client(model)
    # pydantic-ai validated the scripted string "50" against the int parameter, then ran the tool.
    assert seen == [{"amount": 50, "source": "EUR", "target": "USD"}]
    assert output == "That is 100 USD."
    assert usage.requests == 2 and usage.tool_calls == 1
    assert usage.input_tokens > 0 and usage.output_tokens > 0

    first, second = llm.calls
    assert {first.provider, second.provider} == {provider}
    assert (first.rule, second.rule) == ("call", "answer")
    assert first.tools == ["convert_currency"]
    assert "convert currencies" in first.system
    assert first.api_key == key
    assert second.messages[-1]["tool_results"][0]["content"] == "100 USD"
