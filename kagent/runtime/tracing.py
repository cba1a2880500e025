"""OpenTelemetry traces of an agent: where they go, and how a request joins its caller's trace.

Every provider is OTLP over HTTP: Langfuse and LangSmith ingest OTLP directly (with their keys
as headers, from the Secret named by ``tracing.secretRef``), CloudWatch through an OTLP
collector, ``otlp`` anywhere. Model and tool spans come from pydantic-ai's instrumentation
(OTel GenAI ``gen_ai.*`` attributes and token usage); the request span around them is ours and
continues the W3C trace context of the incoming request. Secret values only ever sit in the
exporter's headers — never in an attribute.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping

from opentelemetry import propagate
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from kagent.api.agent import TracingSpec
from kagent.api.base import SecretKeySelector
from kagent.runtime.secrets import SecretResolver

DEFAULT_ENDPOINTS = {
    "langfuse": "https://cloud.langfuse.com/api/public/otel",
    "langsmith": "https://api.smith.langchain.com/otel",
}


class TracingConfigError(ValueError):
    """The tracing block cannot work as written; the message names the field."""


def traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL for an endpoint given with or without ``/v1/traces``."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith("/v1/traces") else f"{endpoint}/v1/traces"


def exporter_settings(
    spec: TracingSpec, secrets: SecretResolver
) -> tuple[str, dict[str, str]]:
    """URL and headers of the OTLP exporter for ``spec``."""
    endpoint = spec.endpoint or DEFAULT_ENDPOINTS.get(spec.provider)
    if not endpoint:
        raise TracingConfigError(
            f"observability.tracing.endpoint is required for provider {spec.provider} "
            "(the OTLP/HTTP endpoint of the collector)"
        )
    headers: dict[str, str] = {}

    def secret(key: str) -> str:
        if spec.secret_ref is None:
            raise TracingConfigError(
                f"observability.tracing.secretRef is required for provider {spec.provider} "
                f"(a Secret with the key {key})"
            )
        return secrets.get(SecretKeySelector(name=spec.secret_ref.name, key=key))

    if spec.provider == "langfuse":
        pair = f"{secret('public-key')}:{secret('secret-key')}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
    elif spec.provider == "langsmith":
        headers["x-api-key"] = secret("api-key")
    return traces_url(endpoint), headers


def build_tracer_provider(
    spec: TracingSpec | None,
    secrets: SecretResolver,
    *,
    service_name: str,
    namespace: str,
    pod_name: str | None = None,
    exporter: SpanExporter | None = None,
) -> TracerProvider | None:
    """A tracer provider for this agent, or None when tracing is off.

    ``exporter`` replaces the OTLP exporter (tests, or a custom pipeline).
    """
    if exporter is None:
        if spec is None or not spec.enabled:
            return None
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        url, headers = exporter_settings(spec, secrets)
        exporter = OTLPSpanExporter(endpoint=url, headers=headers)
    attributes = {"service.name": service_name, "service.namespace": namespace}
    if pod_name:
        attributes["k8s.pod.name"] = pod_name
    ratio = spec.sample_ratio if spec is not None else 1.0
    provider = TracerProvider(
        resource=Resource.create(attributes), sampler=ParentBased(TraceIdRatioBased(ratio))
    )
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=500))
    return provider


def incoming_context(headers: Mapping[str, str]) -> Context:
    """The caller's trace context from W3C ``traceparent``/``tracestate`` headers."""
    return propagate.extract({k.lower(): v for k, v in headers.items()})
