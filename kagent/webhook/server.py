"""The admission webhook: kopf serves it over TLS from every controller replica.

Handlers are thin: :mod:`kagent.webhook.validate` decides, this module turns its findings into
admission responses, looks up references for warnings, and counts requests.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kopf
from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Secret

from kagent.api import KINDS
from kagent.api.base import GROUP, VERSION
from kagent.api.manifests import ManifestError, parse_resource
from kagent.kube.certs import load_ca, make_ca, make_serving_cert
from kagent.kube import KAGENT_RESOURCES, is_not_found
from kagent.kube.incluster import owner_references
from kagent.webhook.metrics import WEBHOOK_LATENCY, WEBHOOK_REFUSALS, WEBHOOK_REQUESTS
from kagent.webhook.validate import advice, defaults, references, validate

log = logging.getLogger("kagent.webhook")

CONFIGURATION_NAME = "kagent.dev"
CA_SECRET = "kagent-webhook-ca"


def handler_id(action: str, plural: str) -> str:
    """The handler id is also the URL path the apiserver calls: /validate-agents, …"""
    return f"{action}-{plural}"


@dataclass(frozen=True)
class WebhookTLS:
    ca_file: Path
    cert_file: Path
    key_file: Path


class ServiceWebhookServer(kopf.WebhookServer):
    """A webhook server reached through a Service (in a cluster) instead of a URL."""

    def __init__(self, *, service_namespace: str, service_name: str, service_port: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.service = {"namespace": service_namespace, "name": service_name, "port": service_port}

    async def __call__(self, fn: Any) -> AsyncIterator[Any]:
        async for config in super().__call__(fn):
            service_config: dict[str, Any] = {"service": dict(self.service)}
            if "caBundle" in config:
                service_config["caBundle"] = config["caBundle"]
            yield service_config


async def ensure_ca(client: AsyncClient, namespace: str, directory: Path, hosts: list[str]) -> WebhookTLS:
    """Load the shared webhook CA from its Secret (creating it once), and issue this replica a
    serving certificate signed by it. Every replica trusts the same CA, so the caBundle in the
    webhook configurations is the same whoever writes it."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = directory / "ca.crt", directory / "ca.key"
    try:
        secret = await client.get(Secret, CA_SECRET, namespace=namespace)
    except ApiError as error:
        if not is_not_found(error):
            raise
        ca = make_ca(directory, name="ca", common_name="kagent-webhook-ca")
        data = {"tls.crt": ca.cert_file.read_bytes(), "tls.key": ca.key_file.read_bytes()}
        try:
            await client.create(Secret(
                metadata=ObjectMeta(name=CA_SECRET, namespace=namespace,
                                    labels={"app.kubernetes.io/part-of": "kagent"},
                                    ownerReferences=owner_references(namespace)),
                type="kubernetes.io/tls",
                data={k: base64.b64encode(v).decode() for k, v in data.items()},
            ))
        except ApiError as create_error:
            if create_error.status.code != 409:
                raise
            secret = await client.get(Secret, CA_SECRET, namespace=namespace)  # another replica won
        else:
            secret = None
    if secret is not None:
        ca_cert.write_bytes(base64.b64decode((secret.data or {})["tls.crt"]))
        ca_key.write_bytes(base64.b64decode((secret.data or {})["tls.key"]))
        ca_key.chmod(0o600)
    ca = load_ca(ca_cert, ca_key)
    serving = make_serving_cert(ca, directory, hosts=hosts, name="serving")
    return WebhookTLS(ca_file=ca_cert, cert_file=serving.cert_file, key_file=serving.key_file)


CA_INJECTOR = "kagent-ca-injector"
_INJECT_ATTEMPTS = 60
_INJECT_PAUSE = 5.0


async def inject_ca_bundle(
    client: AsyncClient, ca_file: Path, name: str = CONFIGURATION_NAME
) -> None:
    """Write our CA into the ``caBundle`` of every webhook of the configurations ``name``, and
    nothing else: the chart owns the rest (its failurePolicy and timeout hold) and `helm upgrade`'s
    server-side apply never conflicts with us, as with cert-manager's CA injector. Waits (bounded)
    for the configurations to exist."""
    from lightkube.resources.admissionregistration_v1 import (
        MutatingWebhookConfiguration,
        ValidatingWebhookConfiguration,
    )
    from lightkube.types import PatchType

    bundle = base64.b64encode(ca_file.read_bytes()).decode()
    for resource in (ValidatingWebhookConfiguration, MutatingWebhookConfiguration):
        for attempt in range(_INJECT_ATTEMPTS):
            try:
                current = await client.get(resource, name)
            except ApiError as error:
                if not is_not_found(error) or attempt == _INJECT_ATTEMPTS - 1:
                    raise
                log.info("waiting for %s %s to inject the CA", resource.__name__, name)
                await asyncio.sleep(_INJECT_PAUSE)
                continue
            patch = {
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": resource.__name__,
                "metadata": {"name": name},
                "webhooks": [{"name": hook.name, "clientConfig": {"caBundle": bundle}}
                             for hook in current.webhooks or []],
            }
            await client.patch(resource, name, patch, patch_type=PatchType.APPLY,
                               field_manager=CA_INJECTOR, force=True)
            break


def _kind_of(body: Any) -> str:
    return str((body or {}).get("kind", "?"))


def register_webhooks(registry: kopf.OperatorRegistry, client: AsyncClient) -> None:
    """Validating and mutating handlers for all five kinds."""
    for kind in KINDS:
        plural = kind.plural

        @kopf.on.validate(GROUP, VERSION, plural, id=handler_id("validate", plural), registry=registry,
                          operations=["CREATE", "UPDATE"])
        async def validate_handler(body: Any, old: Any, operation: str, warnings: list[str], **_: Any) -> None:
            started = time.perf_counter()
            kind_name = _kind_of(body)
            obj = _plain(body)
            errors = validate(obj, _plain(old) if old else None)
            allowed = not errors
            WEBHOOK_REQUESTS.labels(kind_name, operation, str(allowed).lower()).inc()
            if errors:
                WEBHOOK_REFUSALS.labels(kind_name).inc()
                WEBHOOK_LATENCY.labels(kind_name).observe(time.perf_counter() - started)
                raise kopf.AdmissionError("; ".join(str(e) for e in errors), code=422)
            warnings.extend(advice(obj))
            warnings.extend(await _reference_warnings(client, obj))
            WEBHOOK_LATENCY.labels(kind_name).observe(time.perf_counter() - started)

        @kopf.on.mutate(GROUP, VERSION, plural, id=handler_id("mutate", plural), registry=registry,
                        operations=["CREATE", "UPDATE"])
        def mutate_handler(body: Any, patch: kopf.Patch, **_: Any) -> None:
            for op in defaults(_plain(body)):
                _apply_op(patch, op)

        del validate_handler, mutate_handler


def _plain(body: Any) -> dict[str, Any]:
    """kopf bodies are read-only views; the validators want plain dicts."""
    if body is None:
        return {}
    return {k: _to_plain(v) for k, v in dict(body).items()}


def _to_plain(value: Any) -> Any:
    if isinstance(value, dict) or hasattr(value, "keys"):
        return {k: _to_plain(value[k]) for k in value.keys()}
    if isinstance(value, list):
        return [_to_plain(v) for v in value]
    return value


def _apply_op(patch: kopf.Patch, op: dict[str, Any]) -> None:
    """Translate our JSON-patch style defaults into kopf's merge-patch object."""
    parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].strip("/").split("/")]
    target: Any = patch
    for part in parts[:-1]:
        target = target.setdefault(part, {})
    if isinstance(op["value"], dict) and not op["value"]:
        target.setdefault(parts[-1], {})
    else:
        target[parts[-1]] = op["value"]


async def _reference_warnings(client: AsyncClient, obj: dict[str, Any]) -> list[str]:
    """Referenced objects that do not exist yet: warnings, not refusals (GitOps order)."""
    try:
        resource = parse_resource(obj)
    except ManifestError:
        return []
    namespace = obj.get("metadata", {}).get("namespace")
    out = []
    for ref in references(resource):
        try:
            await client.get(KAGENT_RESOURCES[ref.kind], ref.name, namespace=namespace)
        except ApiError as error:
            if is_not_found(error):
                out.append(f'{ref.field}: {ref.kind} "{ref.name}" does not exist yet')
            else:
                log.warning("looking up %s %s failed: %s", ref.kind, ref.name, error)
    return out
