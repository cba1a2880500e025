"""Analysis from the runtimes' own Prometheus metrics (pure): what one scrape of one pod says,
what changed over a window, and whether a new revision measures up to its thresholds.

Counters are cumulative per pod, so a window is the difference between a scrape at its start
and one at its end; a pod that appeared (or restarted) during the window counts from zero.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from kagent.api.base import parse_duration
from kagent.api.rollout import AnalysisResult, AnalysisSpec
from kagent.runtime.metrics import read_figures

"""Request outcomes that count as failed answers (cancelled ones are the caller's doing)."""
MAX_SCRAPE_BYTES = 2 * 1024 * 1024


@dataclass(frozen=True)
class Counts:
    """The agent metrics of one pod (a scrape) or of a revision over a window (a difference)."""

    requests: float = 0.0
    errors: float = 0.0
    buckets: Mapping[float, float] = field(default_factory=dict)
    """Cumulative request-duration histogram: upper bound → count."""
    tool_calls: float = 0.0
    tool_errors: float = 0.0
    tokens: float = 0.0
    """Model tokens, input and output."""
    cost: float = 0.0
    """Model cost in US dollars."""

    def __add__(self, other: Counts) -> Counts:
        buckets = dict(self.buckets)
        for bound, count in other.buckets.items():
            buckets[bound] = buckets.get(bound, 0.0) + count
        return Counts(self.requests + other.requests, self.errors + other.errors, buckets,
                      self.tool_calls + other.tool_calls, self.tool_errors + other.tool_errors,
                      self.tokens + other.tokens, self.cost + other.cost)

    def __sub__(self, before: Counts) -> Counts:
        if self.requests < before.requests or self.tool_calls < before.tool_calls \
                or self.tokens < before.tokens:
            return self  # the pod restarted: its counters began again inside the window
        return Counts(self.requests - before.requests, self.errors - before.errors,
                      {b: c - before.buckets.get(b, 0.0) for b, c in self.buckets.items()},
                      self.tool_calls - before.tool_calls, self.tool_errors - before.tool_errors,
                      self.tokens - before.tokens, max(self.cost - before.cost, 0.0))


def parse_counts(text: str) -> Counts:
    """A pod's /metrics text reduced to what analysis reads; other metrics are ignored."""
    figures = read_figures(text)
    return Counts(figures.requests, figures.errors, figures.buckets, figures.tool_calls,
                  figures.tool_errors, figures.input_tokens + figures.output_tokens,
                  figures.cost_dollars)


def window(now: Mapping[str, Counts], start: Mapping[str, Counts]) -> Counts:
    """A revision's counts over a window: per pod, end minus start (a pod first seen at the end
    counts in full); summed over the pods."""
    total = Counts()
    for pod, counts in now.items():
        before = start.get(pod)
        total = total + (counts - before if before is not None else counts)
    return total


def quantile(buckets: Mapping[float, float], q: float) -> float | None:
    """The q-quantile of a cumulative histogram, interpolated inside its bucket as Prometheus'
    histogram_quantile does; None without observations."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
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


def _ratio(part: float, whole: float) -> float | None:
    return part / whole if whole > 0 else None


def _decimal(value: float | None) -> str | None:
    return None if value is None else f"{value:.4g}"


def result(counts: Counts) -> AnalysisResult:
    """What the status shows of one revision's window."""
    return AnalysisResult(
        requests=int(counts.requests), errors=int(counts.errors),
        error_rate=_decimal(_ratio(counts.errors, counts.requests)),
        p99_latency_seconds=_decimal(quantile(counts.buckets, 0.99)),
        tool_calls=int(counts.tool_calls),
        tool_failure_rate=_decimal(_ratio(counts.tool_errors, counts.tool_calls)),
        tokens_per_request=_decimal(_ratio(counts.tokens, counts.requests)),
        cost_per_request=_decimal(_ratio(counts.cost, counts.requests)),
    )


@dataclass(frozen=True)
class Judgement:
    verdict: str
    """Passed, Failed or Inconclusive."""
    message: str


def judge(spec: AnalysisSpec, canary: Counts, stable: Counts) -> Judgement:
    """Whether the new revision measures up, every failed threshold named with its numbers."""
    if canary.requests < spec.min_requests:
        return Judgement("Inconclusive", f"the new revision answered {int(canary.requests)} of the "
                         f"{spec.min_requests} requests analysis needs")
    failures: list[str] = []
    error_rate = canary.errors / canary.requests
    stable_rate = _ratio(stable.errors, stable.requests)
    if spec.max_error_rate is not None and error_rate > spec.max_error_rate:
        failures.append(f"error rate {error_rate:.4g} > maxErrorRate {spec.max_error_rate:g} "
                        f"({int(canary.errors)} of {int(canary.requests)} requests failed)")
    if spec.max_error_rate_increase is not None and stable_rate is not None \
            and error_rate - stable_rate > spec.max_error_rate_increase:
        failures.append(f"error rate {error_rate:.4g} exceeds the stable revision's "
                        f"{stable_rate:.4g} by more than {spec.max_error_rate_increase:g}")
    p99 = quantile(canary.buckets, 0.99)
    if spec.max_p99_latency is not None and p99 is not None:
        limit = parse_duration(spec.max_p99_latency).total_seconds()
        if p99 > limit:
            failures.append(f"p99 latency {p99:.3g}s > maxP99Latency {spec.max_p99_latency}")
    tool_rate = _ratio(canary.tool_errors, canary.tool_calls)
    if spec.max_tool_failure_rate is not None and tool_rate is not None \
            and tool_rate > spec.max_tool_failure_rate:
        failures.append(f"tool failure rate {tool_rate:.4g} > maxToolFailureRate "
                        f"{spec.max_tool_failure_rate:g}")
    failures += _usage_failures(spec, canary, stable)
    if failures:
        return Judgement("Failed", "; ".join(failures))
    stable_text = f"{stable_rate:.4g}" if stable_rate is not None else "n/a"
    usage = ", " + usage_summary(canary, stable) if spec.max_tokens_per_request is not None \
        or spec.max_tokens_per_request_increase is not None or spec.declares_cost_threshold() \
        else ""
    return Judgement("Passed", f"{int(canary.requests)} requests, error rate {error_rate:.4g} "
                     f"(stable {stable_text}), p99 {'n/a' if p99 is None else f'{p99:.3g}s'}"
                     + usage)


def _usage_failures(spec: AnalysisSpec, canary: Counts, stable: Counts) -> list[str]:
    """Tokens and cost per request against their limits and against the stable revision's
    (an increase is judged only when the stable revision answered and spent something)."""
    failures: list[str] = []
    checks = (("tokens", "Tokens", canary.tokens, stable.tokens, spec.max_tokens_per_request,
               spec.max_tokens_per_request_increase, "{:.4g}"),
              ("cost", "Cost", canary.cost, stable.cost, spec.max_cost_per_request,
               spec.max_cost_per_request_increase, "${:.4g}"))
    for word, title, spent, stable_spent, limit, increase, shown in checks:
        per_request = spent / canary.requests
        if limit is not None and per_request > limit:
            failures.append(f"{word} per request {shown.format(per_request)} > "
                            f"max{title}PerRequest {limit:g}")
        stable_per_request = _ratio(stable_spent, stable.requests)
        if increase is not None and stable_per_request:
            grown = per_request / stable_per_request - 1
            if grown > increase:
                failures.append(f"{word} per request {shown.format(per_request)} is "
                                f"{grown:.0%} above the stable revision's "
                                f"{shown.format(stable_per_request)} (max{title}PerRequestIncrease "
                                f"{increase:g})")
    return failures


def usage_summary(canary: Counts, stable: Counts) -> str:
    """Tokens and cost per request of both revisions, for a passing verdict's message."""
    def per(value: float, requests: float, shown: str) -> str:
        ratio = _ratio(value, requests)
        return "n/a" if ratio is None else shown.format(ratio)

    return (f"tokens/request {per(canary.tokens, canary.requests, '{:.4g}')} "
            f"(stable {per(stable.tokens, stable.requests, '{:.4g}')}), cost/request "
            f"{per(canary.cost, canary.requests, '${:.4g}')} "
            f"(stable {per(stable.cost, stable.requests, '${:.4g}')})")
