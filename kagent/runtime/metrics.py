"""Prometheus metrics of an agent runtime. Names are part of the API: the chart's alerts and the
seed's KEDA trigger (agent_active_sessions) use them."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
