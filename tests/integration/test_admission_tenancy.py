"""Admission guards on behalf of the requester: a user who may create Agents, Tools and Memories
but not read a Secret cannot reference it (each kind of reference, refused naming the field and
the Secret); a user who may read them can. Pod overrides only tighten the restricted defaults."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from kagent.local.controlplane import ControlPlane

pytestmark = pytest.mark.integration

SECRETS = ("model-key", "ticket-auth", "mcp-token", "redis-pass", "db-pass", "extra-env")


def _ref(name: str) -> dict[str, str]:
    return {"name": name, "key": "value"}


def objects(namespace: str) -> list[tuple[str, dict[str, Any], str]]:
    """(field, object, Secret) for each kind of Secret reference."""
    meta = lambda name: {"name": name, "namespace": namespace}  # noqa: E731
    model = {"provider": "openai", "name": "gpt-4o-mini"}
    return [
        ("spec.model.apiKeySecretRef", {
            "apiVersion": "kagent.dev/v1alpha1", "kind": "Agent", "metadata": meta("keyed"),
            "spec": {"model": {**model, "apiKeySecretRef": _ref("model-key")}, "systemPrompt": "Hi."},
        }, "model-key"),
        ("spec.pod.env[0].valueFrom.secretKeyRef", {
            "apiVersion": "kagent.dev/v1alpha1", "kind": "Agent", "metadata": meta("with-env"),
            "spec": {"model": model, "systemPrompt": "Hi.", "pod": {"env": [
                {"name": "EXTRA", "valueFrom": {"secretKeyRef": _ref("extra-env")}}]}},
        }, "extra-env"),
        ("spec.api.auth.secretRef", {
            "apiVersion": "kagent.dev/v1alpha1", "kind": "Tool", "metadata": meta("tickets"),
            "spec": {"type": "api", "description": "Create a ticket.",
                     "api": {"endpoint": "https://tickets.example/api", "method": "POST",
                             "auth": {"type": "bearer", "secretRef": _ref("ticket-auth")}}},
        }, "ticket-auth"),
        ("spec.mcp.headersFrom[0].secretKeyRef", {
            "apiVersion": "kagent.dev/v1alpha1", "kind": "Tool", "metadata": meta("remote"),
            "spec": {"type": "mcp", "description": "Remote tools.",
                     "mcp": {"url": "https://mcp.example/mcp", "headersFrom": [
                         {"name": "Authorization", "secretKeyRef": _ref("mcp-token")}]}},
        }, "mcp-token"),
        ("spec.retrieval.vectorStore.connection.secretRef", {
            "apiVersion": "kagent.dev/v1alpha1", "kind": "Tool", "metadata": meta("search"),
            "spec": {"type": "retrieval", "description": "Search the docs.",
                     "retrieval": {"vectorStore": {
                         "type": "pgvector", "collection": "docs",
                         "connection": {"url": "postgresql://pg:5432/v", "secretRef": _ref("db-pass")}}}},
        }, "db-pass"),
        ("spec.config.secretRef", {
            "apiVersion": "kagent.dev/v1alpha1", "kind": "Memory", "metadata": meta("sessions"),
            "spec": {"type": "redis", "config": {"host": "redis", "secretRef": _ref("redis-pass")}},
        }, "redis-pass"),
    ]


def _apply_as(plane: ControlPlane, user: str, doc: dict[str, Any]) -> Any:
    return plane.kubectl("apply", "--as", user, "-f", "-", input=yaml.safe_dump(doc), check=False)


def _grant(plane: ControlPlane, namespace: str, user: str, read_secrets: bool) -> None:
    rules = [{"apiGroups": ["kagent.dev"], "resources": ["agents", "tools", "memories"],
              "verbs": ["get", "list", "create", "update", "patch"]}]
    if read_secrets:
        rules.append({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"],
                      "resourceNames": list(SECRETS)})
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": f"{user}-kagent", "namespace": namespace}, "rules": rules}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": f"{user}-kagent", "namespace": namespace},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": f"{user}-kagent"},
               "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]}
    plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([role, binding]))


def test_only_users_who_may_read_a_secret_may_reference_it(
        control_plane: ControlPlane, kagent_controller: Any, namespace: str) -> None:
    for name in SECRETS:
        control_plane.kubectl("create", "secret", "generic", name, "-n", namespace,
                              "--from-literal=value=s3cret")
    _grant(control_plane, namespace, "alice", read_secrets=False)
    _grant(control_plane, namespace, "bob", read_secrets=True)
    for field, doc, secret in objects(namespace):
        refused = _apply_as(control_plane, "alice", doc)
        assert refused.returncode != 0, f"{field}: alice's object was admitted"
        assert field in refused.stderr and f'Secret "{secret}"' in refused.stderr, refused.stderr
        assert "alice may not read" in refused.stderr
        assert "s3cret" not in refused.stderr
        gone = control_plane.kubectl("get", doc["kind"].lower(), doc["metadata"]["name"], "-n",
                                     namespace, check=False)
        assert gone.returncode != 0, f"{field}: a refused object was stored"
        admitted = _apply_as(control_plane, "bob", doc)
        assert admitted.returncode == 0, f"{field}: {admitted.stderr}"
    # An edit that keeps a reference someone else was allowed to make needs no new right...
    keyed = copy.deepcopy(objects(namespace)[0][1])
    keyed["spec"]["systemPrompt"] = "Hello."
    assert _apply_as(control_plane, "alice", keyed).returncode == 0
    # ...but pointing it at a Secret alice may not read does.
    keyed["spec"]["model"]["apiKeySecretRef"] = _ref("db-pass")
    refused = _apply_as(control_plane, "alice", keyed)
    assert refused.returncode != 0 and 'Secret "db-pass"' in refused.stderr


LOOSENING = [
    ("privileged", {"securityContext": {"privileged": True}}, "privileged: must be false"),
    ("root", {"securityContext": {"runAsUser": 0}}, "runAsUser: must not be 0"),
    ("root allowed", {"securityContext": {"runAsNonRoot": False}}, "runAsNonRoot: must be true"),
    ("escalation", {"securityContext": {"allowPrivilegeEscalation": True}},
     "allowPrivilegeEscalation: must be false"),
    ("added capability", {"securityContext": {"capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]}}},
     "capabilities.add"),
    ("capabilities kept", {"securityContext": {"capabilities": {"drop": ["NET_RAW"]}}},
     "capabilities.drop: must include ALL"),
    ("unconfined seccomp", {"securityContext": {"seccompProfile": {"type": "Unconfined"}}},
     "seccompProfile.type"),
    ("selector label", {"labels": {"kagent.dev/agent": "payments"}}, "spec.pod.labels"),
    ("managed-by label", {"labels": {"app.kubernetes.io/managed-by": "me"}}, "spec.pod.labels"),
]


@pytest.mark.parametrize(("case", "pod", "says"), LOOSENING, ids=[c[0] for c in LOOSENING])
def test_pod_overrides_may_only_tighten(control_plane: ControlPlane, kagent_controller: Any,
                                        namespace: str, case: str, pod: dict[str, Any], says: str) -> None:
    doc = {"apiVersion": "kagent.dev/v1alpha1", "kind": "Agent",
           "metadata": {"name": "loose", "namespace": namespace},
           "spec": {"model": {"provider": "openai", "name": "gpt-4o-mini"}, "systemPrompt": "Hi.",
                    "pod": pod}}
    result = control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc), check=False)
    assert result.returncode != 0, f"{case}: admitted"
    assert "spec.pod" in result.stderr and says in result.stderr, result.stderr


def test_tightening_is_admitted(control_plane: ControlPlane, kagent_controller: Any, namespace: str) -> None:
    doc = {"apiVersion": "kagent.dev/v1alpha1", "kind": "Agent",
           "metadata": {"name": "tight", "namespace": namespace},
           "spec": {"model": {"provider": "openai", "name": "gpt-4o-mini"}, "systemPrompt": "Hi.",
                    "pod": {"labels": {"team": "payments"},
                            "securityContext": {"runAsUser": 1000, "capabilities": {"drop": ["ALL"]},
                                                "seccompProfile": {"type": "RuntimeDefault"}}}}}
    result = control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc), check=False)
    assert result.returncode == 0, result.stderr
