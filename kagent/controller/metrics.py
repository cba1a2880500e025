"""Prometheus metrics of the controller."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECONCILES = Counter(
    "kagent_controller_reconcile_total", "Reconciles by kind and result.", ["kind", "result"]
)
RECONCILE_ERRORS = Counter(
    "kagent_controller_reconcile_errors_total", "Reconciles that raised, by kind.", ["kind"]
)
RECONCILE_DURATION = Histogram(
    "kagent_controller_reconcile_duration_seconds", "Time one reconcile took, by kind.", ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
QUEUE_DEPTH = Gauge("kagent_controller_queue_depth", "Keys waiting in the work queue.")
IS_LEADER = Gauge("kagent_controller_leader", "1 if this replica holds the leader lease.")
APPLIES = Counter(
    "kagent_controller_applies_total",
    "Children server-side applied (result=applied) or found as wanted and left alone "
    "(result=unchanged), by kind.",
    ["kind", "result"],
)
CACHED_OBJECTS = Gauge("kagent_controller_cached_objects", "Objects in the watch-fed cache, by kind.", ["kind"])
