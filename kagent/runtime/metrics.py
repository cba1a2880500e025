"""Prometheus metrics of an agent runtime. Names are part of the API: the chart's alerts and the
seed's KEDA trigger (agent_active_sessions) use them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.parser import text_string_to_metric_families

ACTIVE_SESSIONS = Gauge(
    "agent_active_sessions", "Conversations with a request in flight.", ["agent"]
)
REQUESTS = Counter(
    "agent_requests_total", "Requests by protocol and outcome (success, error, limit, cancelled).",
    ["agent", "protocol", "outcome"],
)
REQUEST_DURATION = Histogram(
    "agent_request_duration_seconds", "Time to answer one request.", ["agent", "protocol"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300),
)
LLM_TOKENS = Counter(
    "agent_llm_tokens_total", "Model tokens by model and direction (input, output).",
    ["agent", "model", "direction"],
)
LLM_REQUESTS = Counter(
    "agent_llm_requests_total", "Model calls by model and outcome.", ["agent", "model", "outcome"]
)
TOOL_CALLS = Counter(
    "agent_tool_calls_total", "Tool calls by tool and outcome (success, error).",
    ["agent", "tool", "outcome"],
)
TOOL_DURATION = Histogram(
    "agent_tool_duration_seconds", "Time one tool call took.", ["agent", "tool"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
MODEL_FAILOVERS = Counter(
    "agent_model_failovers_total",
    "Model calls handed to the next model of the chain, by the model that could not answer and "
    "why (the provider error's kind, or circuit_open).",
    ["agent", "model", "reason"],
)
MODEL_CIRCUIT_OPEN = Gauge(
    "agent_model_circuit_open", "1 while a model's circuit breaker is open or probing.",
    ["agent", "model"],
)
MEMORY_BACKEND_UP = Gauge(
    "agent_memory_backend_up",
    "1 while the memory backend (redis, postgres) answers, 0 while it is unreachable.",
    ["agent", "backend"],
)
MEMORY_UNAVAILABLE = Counter(
    "agent_memory_unavailable_total",
    "Requests refused with 503 because the memory backend was unreachable.",
    ["agent", "backend"],
)

ERROR_OUTCOMES = frozenset({"error", "limit"})
"""Outcomes of agent_requests_total that count as failed requests."""


@dataclass(frozen=True)
class RuntimeFigures:
    """One scrape of a runtime's /metrics, summed over labels: what the dashboard shows and
    what a rollout's analysis compares."""

    requests: float = 0.0
    errors: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)
    """Cumulative request-duration histogram: upper bound → count."""
    tool_calls: float = 0.0
    tool_errors: float = 0.0
    input_tokens: float = 0.0
    output_tokens: float = 0.0
    cost_dollars: float = 0.0
    """Model cost priced by the runtime (the model's pricing, else the default table)."""


def read_figures(text: str) -> RuntimeFigures:
    """A runtime's /metrics text reduced to :class:`RuntimeFigures`; other metrics are ignored
    (pure)."""
    requests = errors = tool_calls = tool_errors = tokens_in = tokens_out = cost = 0.0
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name, labels, value = sample.name, sample.labels, sample.value
            if name == "agent_requests_total":
                requests += value
                if labels.get("outcome") in ERROR_OUTCOMES:
                    errors += value
            elif name == "agent_request_duration_seconds_bucket":
                bound = math.inf if labels.get("le") in ("+Inf", "inf") else float(labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + value
            elif name == "agent_tool_calls_total":
                tool_calls += value
                if labels.get("outcome") == "error":
                    tool_errors += value
            elif name == "agent_llm_tokens_total":
                if labels.get("direction") == "input":
                    tokens_in += value
                elif labels.get("direction") == "output":
                    tokens_out += value
            elif name == "agent_usage_cost_dollars_total":
                cost += value
    return RuntimeFigures(requests, errors, buckets, tool_calls, tool_errors, tokens_in, tokens_out,
                          cost)
