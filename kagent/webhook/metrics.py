"""Prometheus metrics of the admission webhook."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

WEBHOOK_REQUESTS = Counter(
    "kagent_webhook_requests_total", "Admission requests by kind, operation and verdict.",
    ["kind", "operation", "allowed"],
)
WEBHOOK_REFUSALS = Counter(
    "kagent_webhook_refusals_total", "Admission requests refused, by kind.", ["kind"]
)
WEBHOOK_LATENCY = Histogram(
    "kagent_webhook_latency_seconds", "Time to answer one admission request, by kind.", ["kind"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
)
