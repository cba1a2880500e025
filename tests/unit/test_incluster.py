"""Who a pod is, read from its ServiceAccount token: the owner of what the controller creates at
run time, so `helm uninstall` (which deletes the ServiceAccount) takes those objects too."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from kagent.kube.incluster import owner_references, service_account_claims, service_account_owner


def token(claims: dict) -> str:
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return f"eyJhbGciOiJSUzI1NiJ9.{payload}.signature"


BOUND = {"kubernetes.io": {"namespace": "kagent-system",
                           "serviceaccount": {"name": "kagent", "uid": "8d1c-uid"}}}
LEGACY = {"kubernetes.io/serviceaccount/namespace": "kagent-system",
          "kubernetes.io/serviceaccount/service-account.name": "kagent",
          "kubernetes.io/serviceaccount/service-account.uid": "8d1c-uid"}


def test_claims_of_bound_and_legacy_tokens() -> None:
    assert service_account_claims(token(BOUND)) == ("kagent-system", "kagent", "8d1c-uid")
    assert service_account_claims(token(LEGACY)) == ("kagent-system", "kagent", "8d1c-uid")
    assert service_account_claims("not-a-jwt") is None
    assert service_account_claims(token({"sub": "someone"})) is None


def test_owner_only_in_the_service_accounts_namespace(tmp_path: Path) -> None:
    file = tmp_path / "token"
    file.write_text(token(BOUND))
    assert service_account_owner("kagent-system", file) == [
        {"apiVersion": "v1", "kind": "ServiceAccount", "name": "kagent", "uid": "8d1c-uid"}]
    # an owner in another namespace would make the garbage collector delete the object at once
    assert service_account_owner("elsewhere", file) == []
    assert service_account_owner("kagent-system", tmp_path / "missing") == []


def test_outside_a_pod_there_is_no_owner() -> None:
    assert owner_references("kagent-system") is None or Path("/var/run/secrets/kubernetes.io").exists()
