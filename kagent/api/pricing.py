"""What model tokens cost: the ``pricing`` block of a model and the default price table.

Budgets with a ``cost`` limit and the usage report price every model response with the model's
own ``pricing`` when it has one, else with :data:`DEFAULT_PRICES`. The table is part of the API
(documented in docs/budgets.md) and deliberately small: list prices of well-known models in US
dollars per million tokens, late 2026. A model that is in neither costs nothing, which
docs/budgets.md warns about: declare ``pricing`` for every model a cost Budget covers.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from kagent.api.base import KagentModel

Price = Annotated[float, Field(ge=0.0, le=1_000_000.0)]


class ModelPricing(KagentModel):
    """What the model costs, in US dollars per million tokens (overrides the default table)."""

    input_per_million: Price = 0.0
    """Dollars per million input (prompt) tokens."""
    output_per_million: Price = 0.0
    """Dollars per million output (generated) tokens."""


DEFAULT_PRICES: dict[str, ModelPricing] = {
    # provider/model name -> price; keys are matched exactly, then by the longest prefix.
    "openai/gpt-4o": ModelPricing(input_per_million=2.5, output_per_million=10.0),
    "openai/gpt-4o-mini": ModelPricing(input_per_million=0.15, output_per_million=0.6),
    "openai/gpt-4-turbo": ModelPricing(input_per_million=10.0, output_per_million=30.0),
    "openai/gpt-4.1": ModelPricing(input_per_million=2.0, output_per_million=8.0),
    "openai/gpt-4.1-mini": ModelPricing(input_per_million=0.4, output_per_million=1.6),
    "openai/gpt-5": ModelPricing(input_per_million=1.25, output_per_million=10.0),
    "openai/gpt-5-mini": ModelPricing(input_per_million=0.25, output_per_million=2.0),
    "anthropic/claude-opus-4": ModelPricing(input_per_million=15.0, output_per_million=75.0),
    "anthropic/claude-sonnet-4": ModelPricing(input_per_million=3.0, output_per_million=15.0),
    "anthropic/claude-haiku-4": ModelPricing(input_per_million=1.0, output_per_million=5.0),
    "bedrock/anthropic.claude-sonnet-4": ModelPricing(input_per_million=3.0, output_per_million=15.0),
    "bedrock/anthropic.claude-haiku-4": ModelPricing(input_per_million=1.0, output_per_million=5.0),
}
"""Default prices by ``provider/name`` (a name starting with a key's name matches it too, so
``claude-sonnet-4-5`` is priced as ``claude-sonnet-4``). vllm models are self-hosted: no default."""

MICROS = 1_000_000
"""Costs are counted in millionths of a dollar (integers add up exactly across replicas)."""


def price_for(provider: str, name: str, declared: ModelPricing | None = None) -> ModelPricing | None:
    """The price of ``provider/name``: the declared one, else the default table's, else None."""
    if declared is not None:
        return declared
    label = f"{provider}/{name}"
    if label in DEFAULT_PRICES:
        return DEFAULT_PRICES[label]
    matches = [key for key in DEFAULT_PRICES if label.startswith(key)]
    return DEFAULT_PRICES[max(matches, key=len)] if matches else None


def cost_micros(price: ModelPricing | None, input_tokens: int, output_tokens: int) -> int:
    """The cost of one response in millionths of a dollar (rounded to the nearest)."""
    if price is None:
        return 0
    # per-million prices times tokens = micro-dollars directly.
    return round(price.input_per_million * input_tokens + price.output_per_million * output_tokens)
