"""Agent health from the agents' own Prometheus metrics (pure): requests per second, error
rate, p99 latency and tokens.

Every Ready pod of an agent is scraped; two scrapes of the same pod give the rate. Error rate,
p99 and tokens count since the pod started (the counters are cumulative), summed over the
agent's pods — what `kubectl top` would show if it knew about agents.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kagent.controller.rollout.metrics import MAX_SCRAPE_BYTES, quantile
from kagent.runtime.metrics import read_figures

__all__ = ["MAX_SCRAPE_BYTES", "Sample", "agent_health", "parse_sample", "quantile"]


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
    figures = read_figures(text)
    return Sample(at, figures.requests, figures.errors, figures.buckets, figures.input_tokens,
                  figures.output_tokens)


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
