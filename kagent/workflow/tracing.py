"""Traces of workflow runs: one trace per run, a span per step, and the W3C ``traceparent`` of
the step's span sent along with the A2A request so the agent's own spans join the trace.

The controller always records spans (so the context it propagates is valid); they are exported
over OTLP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set, as the OpenTelemetry SDK conventions say.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor


def controller_tracer_provider(environ: Mapping[str, str] | None = None) -> TracerProvider:
    env = os.environ if environ is None else environ
    provider = TracerProvider(resource=Resource.create(
        {"service.name": env.get("OTEL_SERVICE_NAME") or "kagent-controller"}))
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider
