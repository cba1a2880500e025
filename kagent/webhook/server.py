"""The admission webhook: kopf serves it over TLS from every controller replica.

Handlers are thin: :mod:`kagent.webhook.validate` decides, this module turns its findings into
admission responses, looks up references for warnings, and counts requests.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kopf
from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError

from kagent.api import KINDS
from kagent.api.base import GROUP, VERSION
from kagent.api.labels import CA_INJECTOR_FIELD_MANAGER, WEBHOOK_CONFIGURATION_NAME, WEBHOOK_SERVICE
from kagent.api.manifests import ManifestError, parse_resource
from kagent.kube import KAGENT_RESOURCES, is_not_found
from kagent.webhook.certificates import CertificateSource, FileCertificates, ManagedCertificates
from kagent.webhook.metrics import WEBHOOK_LATENCY, WEBHOOK_REFUSALS, WEBHOOK_REQUESTS
from kagent.webhook.validate import (
    advice,
    defaults,
    new_secret_references,
    references,
    retry_step_errors,
    run_input_errors,
    validate,
)

log = logging.getLogger("kagent.webhook")

MAX_REVIEW_BYTES = 3 * 1024 * 1024
"""An AdmissionReview carries the object (etcd caps objects at 1.5 MiB) and its old version."""


def handler_id(action: str, plural: str) -> str:
    """The handler id is also the URL path the apiserver calls: /validate-agents, …"""
    return f"{action}-{plural}"


class KagentWebhookServer(kopf.WebhookServer):
    """kopf's webhook server with certificates that renew while it serves.

    kopf's own server restarts its listener when its certificate files change, and in that gap
    the API server's calls are refused. This one starts its listener once, with a TLS context
    whose certificate is swapped in place (see :mod:`kagent.webhook.certificates`), and hands
    kopf a new client configuration whenever the CA bundle changes, so kopf patches the webhook
    configurations' ``caBundle``. Reached through a Service in a cluster, or at a URL (dev).
    When the configurations are someone else's (the chart's), ``inject`` writes only the bundle
    into them instead, whenever it changes.
    """

    def __init__(self, *, certificates: CertificateSource, service: dict[str, Any] | None = None,
                 inject: Callable[[bytes], Awaitable[None]] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.certificates = certificates
        self.service = service
        self.inject = inject

    async def _published(self, port: int) -> Any:
        if self.inject is not None:
            await self.inject(self.certificates.bundle())
        return self._client_config(port)

    def _client_config(self, port: int) -> Any:
        bundle = base64.b64encode(self.certificates.bundle()).decode("ascii")
        if self.service is not None:
            return {"service": dict(self.service), "caBundle": bundle}
        host = self.host or self._get_accessible_addr(self.addr)
        return {"url": self._build_url("https", host, port, self.path or ""), "caBundle": bundle}

    async def __call__(self, fn: Any) -> AsyncIterator[Any]:
        import aiohttp.web

        async def serve(request: aiohttp.web.Request) -> aiohttp.web.Response:
            return await self._serve(fn, request)

        path = self.path.rstrip("/") if self.path else ""
        app = aiohttp.web.Application(client_max_size=MAX_REVIEW_BYTES)
        app.add_routes([aiohttp.web.post(f"{path}/{{id:.*}}", serve)])
        runner = aiohttp.web.AppRunner(app, handle_signals=False)
        await runner.setup()
        renewal = asyncio.create_task(self.certificates.run(), name="webhook-certificates")
        try:
            port = self.port or self._allocate_free_port()
            site = aiohttp.web.TCPSite(runner, self.addr or None, port,
                                       ssl_context=self.certificates.ssl_context,
                                       reuse_port=True, reuse_address=True)
            await site.start()
            yield await self._published(port)
            async for _ in self.certificates.changes():
                yield await self._published(port)
        finally:
            renewal.cancel()
            await asyncio.gather(renewal, return_exceptions=True)
            await runner.cleanup()


@dataclass
class WebhookSettings:
    port: int = 9443
    listen: str = "0.0.0.0"
    host: str | None = None
    """URL host the apiserver uses (dev mode: 127.0.0.1). None: reach it through the Service."""
    service_name: str = WEBHOOK_SERVICE
    service_port: int = 443
    manage_configuration: bool = True
    """Create the webhook configurations and inject the caBundle. Off: they are the chart's, and
    only the caBundle is written into them (not even that with cert_dir: cert-manager does)."""
    cert_dir: Path | None = None
    """Serving certificate from here (tls.crt, tls.key, ca.crt) instead of the managed CA."""


async def webhook_server(client: AsyncClient, namespace: str, hook: WebhookSettings) -> KagentWebhookServer:
    """The webhook server with its certificates in place (Kagent's own CA, renewed in time, or
    cert-manager's files, reloaded when they change)."""
    certificates: CertificateSource
    if hook.cert_dir is not None:
        certificates = FileCertificates(hook.cert_dir)
    else:
        service_dns = f"{hook.service_name}.{namespace}.svc"
        hosts = [service_dns, f"{service_dns}.cluster.local", "127.0.0.1", "localhost"]
        if hook.host:
            hosts.append(hook.host)
        managed = ManagedCertificates(client, namespace, Path(tempfile.mkdtemp(prefix="kagent-webhook-")), hosts)
        await managed.start()
        certificates = managed
    service = None if hook.host is not None else {
        "namespace": namespace, "name": hook.service_name, "port": hook.service_port}
    inject = None
    if not hook.manage_configuration and hook.cert_dir is None:
        async def inject(bundle: bytes) -> None:
            await inject_ca_bundle(client, bundle)
    return KagentWebhookServer(certificates=certificates, service=service, inject=inject,
                               addr=hook.listen, port=hook.port, host=hook.host)


INJECT_ATTEMPTS = 60
INJECT_PAUSE_SECONDS = 5.0


async def inject_ca_bundle(client: AsyncClient, bundle: bytes, name: str = WEBHOOK_CONFIGURATION_NAME) -> None:
    """Write ``bundle`` into the ``caBundle`` of every webhook of the configurations ``name``, and
    nothing else: the chart owns the rest (its failurePolicy and timeout hold) and `helm upgrade`
    never conflicts with us, as with cert-manager's CA injector. Waits (bounded) for the
    configurations to exist."""
    from lightkube.resources.admissionregistration_v1 import (
        MutatingWebhookConfiguration,
        ValidatingWebhookConfiguration,
    )
    from lightkube.types import PatchType

    encoded = base64.b64encode(bundle).decode("ascii")
    for resource in (ValidatingWebhookConfiguration, MutatingWebhookConfiguration):
        for attempt in range(INJECT_ATTEMPTS):
            try:
                current = await client.get(resource, name)
            except ApiError as error:
                if not is_not_found(error) or attempt == INJECT_ATTEMPTS - 1:
                    raise
                log.info("waiting for %s %s to inject the CA", resource.__name__, name)
                await asyncio.sleep(INJECT_PAUSE_SECONDS)
                continue
            patch = {
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": resource.__name__,
                "metadata": {"name": name},
                "webhooks": [{"name": hook.name, "clientConfig": {"caBundle": encoded}}
                             for hook in current.webhooks or []],
            }
            await client.patch(resource, name, patch, patch_type=PatchType.APPLY,
                               field_manager=CA_INJECTOR_FIELD_MANAGER, force=True)
            break


def _kind_of(body: Any) -> str:
    return str((body or {}).get("kind", "?"))


def register_webhooks(registry: kopf.OperatorRegistry, client: AsyncClient) -> None:
    """Validating and mutating handlers for all five kinds."""
    for kind in KINDS:
        plural = kind.plural

        @kopf.on.validate(GROUP, VERSION, plural, id=handler_id("validate", plural), registry=registry,
                          operations=["CREATE", "UPDATE"])
        async def validate_handler(body: Any, old: Any, operation: str, warnings: list[str],
                                   userinfo: Any = None, **_: Any) -> None:
            started = time.perf_counter()
            kind_name = _kind_of(body)
            obj = _plain(body)
            previous = _plain(old) if old else None
            errors: list[Any] = validate(obj, previous)
            if not errors and previous is None and kind_name == "WorkflowRun":
                errors = await _new_run_errors(client, obj)
            elif not errors and kind_name == "WorkflowRun":
                errors = await _retry_errors(client, obj, previous)
            if not errors:
                errors = await secret_access_errors(client, obj, previous, _plain(userinfo))
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


async def secret_access_errors(client: AsyncClient, obj: dict[str, Any], old: dict[str, Any] | None,
                               user: dict[str, Any]) -> list[str]:
    """Refusals for Secrets the requester may not read (a SubjectAccessReview per Secret, asked
    on the requester's behalf): otherwise permission to create a Tool or an Agent would be
    permission to have the controller or an agent use any Secret in the namespace. Fails
    closed: a review that cannot be made refuses the object."""
    namespace = (obj.get("metadata") or {}).get("namespace")
    who = user.get("username") or "the requester"
    verdicts: dict[str, str | None] = {}  # Secret name -> why it is refused, or None
    refusals = []
    for ref in new_secret_references(obj, old):
        if ref.name not in verdicts:
            verdicts[ref.name] = await _secret_verdict(client, user, who, namespace, ref.name)
        if verdicts[ref.name]:
            refusals.append(f"{ref.field}: {verdicts[ref.name]}")
    return refusals


async def _secret_verdict(client: AsyncClient, user: dict[str, Any], who: str,
                          namespace: str | None, name: str) -> str | None:
    try:
        if await _may_read_secret(client, user, namespace, name):
            return None
    except Exception as error:  # noqa: BLE001 - any failure refuses (fail closed)
        log.warning("SubjectAccessReview for Secret %s/%s failed: %s", namespace, name, error)
        return f'could not check that {who} may read Secret "{name}" ({type(error).__name__}); try again'
    return (f'{who} may not read Secret "{name}" in namespace {namespace}, so may not reference '
            "it (get that permission, or reference a Secret you may read)")


async def _may_read_secret(client: AsyncClient, user: dict[str, Any], namespace: str | None,
                           name: str) -> bool:
    from lightkube.models.authorization_v1 import ResourceAttributes, SubjectAccessReviewSpec
    from lightkube.resources.authorization_v1 import SubjectAccessReview

    review = SubjectAccessReview(spec=SubjectAccessReviewSpec(
        user=user.get("username"), groups=user.get("groups"), uid=user.get("uid"),
        extra=user.get("extra"),
        resourceAttributes=ResourceAttributes(namespace=namespace, verb="get", resource="secrets",
                                              name=name),
    ))
    answer = await client.create(review)
    return bool(answer.status and answer.status.allowed)


async def _new_run_errors(client: AsyncClient, run: dict[str, Any]) -> list[Any]:
    """A new run checked against its Workflow (required inputs); a Workflow that does not exist
    yet is no refusal (GitOps order): the engine checks the run again when it is admitted."""
    namespace = (run.get("metadata") or {}).get("namespace")
    name = ((run.get("spec") or {}).get("workflowRef") or {}).get("name")
    if not name:
        return []
    try:
        workflow = (await client.get(KAGENT_RESOURCES["Workflow"], name, namespace=namespace)).to_dict()
    except ApiError as error:
        if not is_not_found(error):
            log.warning("looking up Workflow %s for a new run failed: %s", name, error)
        return []
    return run_input_errors(run, workflow)


async def _retry_errors(client: AsyncClient, run: dict[str, Any],
                        old: dict[str, Any] | None) -> list[Any]:
    """A retry (spec.retry changed) whose fromStep is not a step of the run's Workflow; a
    Workflow that cannot be read is no refusal here (the engine refuses the retry then)."""
    retry = (run.get("spec") or {}).get("retry") or {}
    if not retry.get("fromStep") or retry == ((old or {}).get("spec") or {}).get("retry"):
        return []
    namespace = (run.get("metadata") or {}).get("namespace")
    name = ((run.get("spec") or {}).get("workflowRef") or {}).get("name")
    try:
        workflow = (await client.get(KAGENT_RESOURCES["Workflow"], name, namespace=namespace)).to_dict()
    except ApiError as error:
        if not is_not_found(error):
            log.warning("looking up Workflow %s for a retry failed: %s", name, error)
        return []
    return retry_step_errors(run, old, workflow)


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
