"""Thin Kubernetes access shared by the controller, the webhook and the CLI (lightkube)."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import httpx2
from lightkube import AsyncClient, Client, KubeConfig
from lightkube.config import client_adapter
from lightkube.core import resource as lightkube_resource
from lightkube.core.exceptions import ApiError
from lightkube.core.resource_registry import resource_registry
from lightkube.generic_resource import Generic, create_namespaced_resource
from lightkube.types import PatchType

from kagent.api import KINDS
from kagent.api.base import GROUP, VERSION
from kagent.api.labels import FIELD_MANAGER

KAGENT_RESOURCES = {
    kind.kind_name: create_namespaced_resource(GROUP, VERSION, kind.kind_name, kind.plural)
    for kind in KINDS
}
ScaledObject = create_namespaced_resource("keda.sh", "v1alpha1", "ScaledObject", "scaledobjects")
HTTPRoute = create_namespaced_resource("gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes")
"""The Gateway API route a canary sets its traffic weights on (when its CRD is installed)."""


def resource_type(api_version: str, kind: str) -> Any:
    """The lightkube class for an apiVersion and kind (standard kinds, ours, KEDA's)."""
    return resource_registry.load(api_version, kind)


def kube_config(kubeconfig: Path | None = None) -> KubeConfig:
    """The kubeconfig file given, else $KUBECONFIG / ~/.kube/config / the in-cluster account."""
    return KubeConfig.from_file(kubeconfig) if kubeconfig else KubeConfig.from_env()


def async_client(kubeconfig: Path | None = None, timeout: float = 10.0) -> AsyncClient:
    return AsyncClient(config=kube_config(kubeconfig), field_manager=FIELD_MANAGER,
                       timeout=httpx2.Timeout(timeout, connect=10.0))


def watch_http_client(kubeconfig: Path | None = None) -> httpx2.AsyncClient:
    """A plain HTTP client logged in like :func:`async_client`, for list/watch streams whose
    bodies the caller decodes itself (see :mod:`kagent.kube.informer`)."""
    params = client_adapter.ConnectionParams(timeout=httpx2.Timeout(30.0))
    return client_adapter.AsyncClient(kube_config(kubeconfig).get(), params)


@cache
def raw_resource(api_version: str, kind: str) -> Any:
    """A lightkube resource class for ``kind`` whose answers are plain dicts, exactly as the API
    server sent them (the typed models drop and reshape fields). Not registered, so the typed
    class stays the one :func:`resource_type` returns."""
    typed = resource_type(api_version, kind)
    base = (lightkube_resource.NamespacedResourceG
            if issubclass(typed, lightkube_resource.NamespacedResource)
            else lightkube_resource.GlobalResource)
    return type(f"Raw{kind}", (base, Generic), {"_api_info": typed._api_info})


async def apply_raw(client: AsyncClient, manifest: dict[str, Any]) -> dict[str, Any]:
    """:func:`apply`, answering the stored object as a plain dict."""
    res = raw_resource(manifest["apiVersion"], manifest["kind"])
    applied = await client.patch(
        res,
        manifest["metadata"]["name"],
        manifest,
        namespace=manifest["metadata"].get("namespace"),
        patch_type=PatchType.APPLY,
        field_manager=FIELD_MANAGER,
        force=True,
    )
    return dict(applied)


def sync_client(kubeconfig: Path | None = None) -> Client:
    config = KubeConfig.from_file(kubeconfig) if kubeconfig else KubeConfig.from_env()
    return Client(config=config, field_manager=FIELD_MANAGER)


async def apply(client: AsyncClient, manifest: dict[str, Any]) -> Any:
    """Server-side apply one manifest as Kagent's field manager (forcing: we own these fields)."""
    res = resource_type(manifest["apiVersion"], manifest["kind"])
    return await client.patch(
        res,
        manifest["metadata"]["name"],
        manifest,
        namespace=manifest["metadata"].get("namespace"),
        patch_type=PatchType.APPLY,
        field_manager=FIELD_MANAGER,
        force=True,
    )


async def patch_if_unchanged(client: AsyncClient, res: Any, name: str, namespace: str | None,
                             patch: dict[str, Any], *, resource_version: str | None) -> Any:
    """A merge patch that applies only if the object is still at ``resource_version``: a writer
    that acted on what it read (a deposed leader, a stale cache) gets a 409 Conflict instead of
    overwriting what was written since. ``res`` may be a status subresource."""
    if resource_version is not None:
        patch = {**patch, "metadata": {**(patch.get("metadata") or {}), "resourceVersion": resource_version}}
    return await client.patch(res, name, patch, namespace=namespace, patch_type=PatchType.MERGE)


def is_not_found(error: Exception) -> bool:
    """A 404: an object that does not exist, or an API (e.g. KEDA's) that is not served —
    the latter answers without a Status body, so lightkube raises the HTTP error itself."""
    if isinstance(error, ApiError):
        return error.status.code == 404
    response = getattr(error, "response", None)
    return getattr(response, "status_code", None) == 404
