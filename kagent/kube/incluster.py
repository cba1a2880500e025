"""What a process running in a pod knows about itself without asking the API server."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

TOKEN_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


def service_account_claims(token: str) -> tuple[str, str, str] | None:
    """(namespace, name, uid) of the ServiceAccount a token was issued to, from its (unverified)
    claims: the API server verifies the token; we only read who we are from it."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return None
    scope = claims.get("kubernetes.io") or {}
    bound = scope.get("serviceaccount") or {}
    namespace = scope.get("namespace") or claims.get("kubernetes.io/serviceaccount/namespace")
    name = bound.get("name") or claims.get("kubernetes.io/serviceaccount/service-account.name")
    uid = bound.get("uid") or claims.get("kubernetes.io/serviceaccount/service-account.uid")
    return (str(namespace), str(name), str(uid)) if namespace and name and uid else None


def service_account_owner(namespace: str, token_file: Path = TOKEN_FILE) -> list[dict[str, Any]]:
    """An ownerReference to this pod's ServiceAccount for an object in ``namespace``, for what
    the controller creates at run time (its Lease, its webhook CA): deleting the installation's
    ServiceAccount — `helm uninstall` — then garbage-collects them too. Empty outside a pod or
    for another namespace (an owner must live in its dependent's namespace)."""
    try:
        found = service_account_claims(token_file.read_text().strip())
    except OSError:
        return []
    if found is None or found[0] != namespace:
        return []
    _, name, uid = found
    return [{"apiVersion": "v1", "kind": "ServiceAccount", "name": name, "uid": uid}]


def owner_references(namespace: str) -> list[Any] | None:
    """:func:`service_account_owner` as lightkube models (None: no owner, the field stays out)."""
    from lightkube.models.meta_v1 import OwnerReference

    owners = service_account_owner(namespace)
    return [OwnerReference(**owner) for owner in owners] or None
