"""Small Kubernetes helpers every layer may use: the client, apply, conditions, Events, CRDs,
certificates and the names Kagent puts on objects."""

from kagent.kube.client import (
    FIELD_MANAGER,
    KAGENT_RESOURCES,
    ScaledObject,
    apply,
    apply_raw,
    async_client,
    is_not_found,
    kube_config,
    raw_resource,
    resource_type,
    sync_client,
    watch_http_client,
)

__all__ = [
    "FIELD_MANAGER",
    "KAGENT_RESOURCES",
    "ScaledObject",
    "apply",
    "apply_raw",
    "async_client",
    "is_not_found",
    "kube_config",
    "raw_resource",
    "resource_type",
    "sync_client",
    "watch_http_client",
]
