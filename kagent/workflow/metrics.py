"""Prometheus metrics of the workflow engine (served on the controller's /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)

RUNS_STARTED = Counter("kagent_workflow_runs_started_total", "Runs started, by workflow.",
                       ["workflow"])
RUNS = Counter("kagent_workflow_runs_total", "Finished runs by workflow, phase and reason.",
               ["workflow", "phase", "reason"])
RUN_DURATION = Histogram("kagent_workflow_run_duration_seconds",
                         "Time from a run's start to its end, by workflow and outcome.",
                         ["workflow", "outcome"], buckets=_BUCKETS)
STEP_DURATION = Histogram("kagent_workflow_step_duration_seconds",
                          "Time one step attempt took, by workflow and outcome.",
                          ["workflow", "outcome"], buckets=_BUCKETS)
QUEUE_DEPTH = Gauge("kagent_workflow_pending_runs",
                    "Runs waiting as Pending (queued or waiting for agents), by workflow.",
                    ["namespace", "workflow"])
RUNS_RETRIED = Counter("kagent_workflow_runs_retried_total",
                       "Retries of finished runs taken up (spec.retry), by workflow.", ["workflow"])
