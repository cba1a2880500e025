"""Small Kubernetes helpers every layer may use: the client, apply, conditions, Events, CRDs,
certificates and the names Kagent puts on objects."""

from kagent.kube.client import (
    FIELD_MANAGER,
    KAGENT_RESOURCES,
    ScaledObject,
    apply,
    async_client,
    is_not_found,
    resource_type,
    sync_client,
)

__all__ = [
    "FIELD_MANAGER",
    "KAGENT_RESOURCES",
    "ScaledObject",
    "apply",
    "async_client",
    "is_not_found",
    "resource_type",
    "sync_client",
]
