"""Agent health from the agents' own Prometheus metrics (pure): requests per second, error
rate, p99 latency and tokens.

Every Ready pod of an agent is scraped; two scrapes of the same pod give the rate. Error rate,
p99 and tokens count since the pod started (the counters are cumulative), summed over the
agent's pods — what `kubectl top` would show if it knew about agents.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

ERROR_OUTCOMES = frozenset({"error", "limit"})
MAX_SCRAPE_BYTES = 2 * 1024 * 1024


@dataclass(frozen=True)
class Sample:
    """What one scrape of one pod says, reduced to what the dashboard shows."""

    at: float
    requests: float = 0.0
    errors: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)
    """Cumulative request-duration histogram: upper bound → count."""
    input_tokens: float = 0.0
    output_tokens: float = 0.0


def parse_sample(text: str, at: float) -> Sample:
    """A pod's /metrics text as a :class:`Sample`; unknown metrics are ignored."""
    requests = errors = tokens_in = tokens_out = 0.0
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
            elif name == "agent_llm_tokens_total":
                if labels.get("direction") == "input":
                    tokens_in += value
                elif labels.get("direction") == "output":
                    tokens_out += value
    return Sample(at, requests, errors, buckets, tokens_in, tokens_out)


def quantile(buckets: dict[float, float], q: float) -> float | None:
    """The q-quantile of a cumulative histogram, interpolated inside its bucket as Prometheus'
    histogram_quantile does; None without observations."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    total = buckets[bounds[-1]]
    rank = q * total
    previous_bound, previous_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return previous_bound
            inside = count - previous_count
            fraction = (rank - previous_count) / inside if inside > 0 else 1.0
            return previous_bound + (bound - previous_bound) * fraction
        previous_bound, previous_count = bound, count
    return previous_bound


def agent_health(current: list[Sample], previous: list[Sample | None]) -> dict[str, Any]:
    """One agent's figures from its pods' latest samples and the sample before each (None for a
    pod seen once): ``rps`` is None until a pod has been scraped twice."""
    requests = sum(s.requests for s in current)
    errors = sum(s.errors for s in current)
    buckets: dict[float, float] = {}
    for sample in current:
        for bound, count in sample.buckets.items():
            buckets[bound] = buckets.get(bound, 0.0) + count
    rates = []
    for now, before in zip(current, previous, strict=True):
        if before is not None and now.at > before.at:
            # a restarted pod's counters start again from zero: count from there
            restarted = now.requests < before.requests
            delta = now.requests if restarted else now.requests - before.requests
            rates.append(delta / (now.at - before.at))
    return {
        "requests": int(requests),
        "rps": round(sum(rates), 3) if rates else None,
        "errorRate": round(errors / requests, 4) if requests else None,
        "p99": quantile(buckets, 0.99),
        "tokens": int(sum(s.input_tokens + s.output_tokens for s in current)),
        "pods": len(current),
    }
