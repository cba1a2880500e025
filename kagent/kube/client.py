"""Thin Kubernetes access shared by the controller, the webhook and the CLI (lightkube)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightkube import AsyncClient, Client, KubeConfig
from lightkube.core.exceptions import ApiError
from lightkube.core.resource_registry import resource_registry
from lightkube.generic_resource import create_namespaced_resource
from lightkube.types import PatchType

from kagent.api import KINDS
from kagent.api.base import GROUP, VERSION
from kagent.api.labels import FIELD_MANAGER

KAGENT_RESOURCES = {
    kind.kind_name: create_namespaced_resource(GROUP, VERSION, kind.kind_name, kind.plural)
    for kind in KINDS
}
ScaledObject = create_namespaced_resource("keda.sh", "v1alpha1", "ScaledObject", "scaledobjects")


def resource_type(api_version: str, kind: str) -> Any:
    """The lightkube class for an apiVersion and kind (standard kinds, ours, KEDA's)."""
    return resource_registry.load(api_version, kind)


def async_client(kubeconfig: Path | None = None) -> AsyncClient:
    config = KubeConfig.from_file(kubeconfig) if kubeconfig else KubeConfig.from_env()
    return AsyncClient(config=config, field_manager=FIELD_MANAGER)


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
