"""The controller's cache: what it keeps of each object, how it knows a child is already as
wanted, when a Kagent object queues itself again, and that the chart lets it watch exactly what
it watches."""

from __future__ import annotations

import copy
import re
from typing import Any

import yaml

from kagent.api.manifests import parse_resource
from kagent.controller.cache import (
    ALL_WATCHES,
    FINGERPRINT,
    AppliedChildren,
    fingerprint,
    is_status_only,
    manifest_digest,
    owner_key,
    trim_child,
    trim_deployment,
    trim_kagent,
    trim_secret,
)
from kagent.controller.render import CONFIG_HASH_ANNOTATION, AgentInputs, render_agent
from kagent.kube.informer import Store
from tests.helpers import REPO, seed_documents


def deployment(**changes: Any) -> dict[str, Any]:
    agent = parse_resource({**seed_documents()[0], "metadata": {"name": "a", "namespace": "ns", "uid": "u1"}})
    rendered = render_agent(AgentInputs(agent=agent))  # type: ignore[arg-type]
    obj = copy.deepcopy(next(o for o in rendered.objects if o["kind"] == "Deployment"))
    obj["metadata"].update({"uid": "d1", "resourceVersion": "10", "generation": 3,
                            "managedFields": [{"manager": "kagent", "fieldsV1": {"f:spec": {}}}]})
    obj["status"] = {"observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2,
                     "availableReplicas": 2, "conditions": [{"type": "Available", "status": "True"}]}
    obj.update(changes)
    return obj


def test_a_secret_view_has_key_names_and_version_but_no_value() -> None:
    secret = {"metadata": {"name": "s", "namespace": "ns", "uid": "x", "resourceVersion": "7",
                           "managedFields": [{}], "annotations": {"a": "b"}},
              "data": {"api-key": "czNjcjN0"}, "stringData": {"token": "plain"}, "type": "Opaque"}
    view = trim_secret(secret)
    assert view == {"metadata": {"name": "s", "namespace": "ns", "uid": "x", "resourceVersion": "7"},
                    "keys": ["api-key", "token"]}
    assert "czNjcjN0" not in repr(view) and "plain" not in repr(view)


def test_a_deployment_view_keeps_only_what_rollout_status_reads() -> None:
    view = trim_deployment(deployment())
    assert set(view) == {"metadata", "spec", "status", FINGERPRINT}
    assert view["spec"] == {"replicas": 2, "template": {"metadata": {"annotations": {
        CONFIG_HASH_ANNOTATION: deployment()["spec"]["template"]["metadata"]["annotations"][CONFIG_HASH_ANNOTATION]}}}}
    assert view["status"] == {"observedGeneration": 3, "replicas": 2, "updatedReplicas": 2,
                              "readyReplicas": 2, "availableReplicas": 2}
    assert view["metadata"]["ownerReferences"] == [
        {"apiVersion": "kagent.dev/v1alpha1", "kind": "Agent", "name": "a", "uid": "u1", "controller": True}]
    assert "managedFields" not in view["metadata"] and "labels" not in view["metadata"]
    assert owner_key(view) == ("Agent", "ns", "a")


def test_owner_key_needs_a_controlling_agent() -> None:
    child = trim_child({"metadata": {"name": "x", "namespace": "ns", "ownerReferences": [
        {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "x", "uid": "r", "controller": True}]}})
    assert owner_key(child) is None
    assert owner_key(trim_child({"metadata": {"name": "x", "namespace": "ns"}})) is None


def test_the_fingerprint_follows_content_not_status_or_bookkeeping() -> None:
    base = fingerprint(deployment())
    bookkeeping = deployment(status={"replicas": 7})
    bookkeeping["metadata"]["resourceVersion"] = "99"
    bookkeeping["metadata"]["annotations"] = {"deployment.kubernetes.io/revision": "4"}
    assert fingerprint(bookkeeping) == base
    edited = deployment()
    edited["spec"]["template"]["spec"]["containers"][0]["image"] = "evil:latest"
    assert fingerprint(edited) != base
    relabelled = deployment()
    relabelled["metadata"]["labels"]["kagent.dev/agent"] = "other"
    assert fingerprint(relabelled) != base


def test_rendered_children_carry_no_metadata_annotations() -> None:
    """The fingerprint leaves metadata.annotations out because Kagent sets none on its children."""
    for doc in (seed_documents()[0],):
        agent = parse_resource({**doc, "metadata": {"name": "a", "namespace": "ns", "uid": "u"}})
        for obj in render_agent(AgentInputs(agent=agent, keda_available=True)).objects:  # type: ignore[arg-type]
            assert "annotations" not in obj["metadata"], obj["kind"]


def test_kagent_objects_lose_managed_fields_and_last_applied() -> None:
    obj = {"apiVersion": "kagent.dev/v1alpha1", "kind": "Agent", "spec": {"x": 1}, "status": {"y": 2},
           "metadata": {"name": "a", "managedFields": [{}], "annotations": {
               "kubectl.kubernetes.io/last-applied-configuration": "{...}", "team": "x"}}}
    trimmed = trim_kagent(obj)
    assert trimmed == {"apiVersion": "kagent.dev/v1alpha1", "kind": "Agent", "spec": {"x": 1},
                       "status": {"y": 2}, "metadata": {"name": "a", "annotations": {"team": "x"}}}
    assert "managedFields" in obj["metadata"], "the input is not mutated"


def _store(*objects: dict[str, Any]) -> Store:
    store = Store()
    for obj in objects:
        store._set((obj["metadata"]["namespace"], obj["metadata"]["name"]), obj)
    return store


def test_a_child_applied_and_unchanged_is_up_to_date() -> None:
    key = ("Deployment", "ns", "a")
    answer = deployment()
    store = _store(trim_deployment(answer))
    applied = AppliedChildren()
    desired = manifest_digest({"spec": 1})
    assert not applied.up_to_date(key, desired, store), "never applied by this process"
    applied.applied(key, desired, answer, applied.before_apply(key, store))
    assert applied.up_to_date(key, desired, store)
    assert not applied.up_to_date(key, manifest_digest({"spec": 2}), store), "the wanted manifest changed"
    # Another writer changed it: the cached content no longer matches the answer.
    edited = deployment()
    edited["spec"]["template"]["spec"]["containers"][0]["image"] = "evil:latest"
    edited["metadata"]["resourceVersion"] = "11"
    store._set(("ns", "a"), trim_deployment(edited))
    assert not applied.up_to_date(key, desired, store)


def test_a_create_the_cache_has_not_seen_yet_is_up_to_date_unless_something_was_deleted() -> None:
    key = ("Service", "ns", "a")
    store = _store()
    applied = AppliedChildren()
    answer = {"metadata": {"name": "a", "namespace": "ns", "resourceVersion": "5"}, "spec": {"ports": []}}
    applied.applied(key, "d", answer, applied.before_apply(key, store))
    assert applied.up_to_date(key, "d", store), "the watch has not delivered our create yet"
    store._set(("ns", "a"), trim_child(answer))
    store._pop(("ns", "a"))  # deleted after our create
    assert not applied.up_to_date(key, "d", store)
    applied.forget(key)
    assert not applied.up_to_date(key, "d", _store())


def test_status_only_changes_do_not_queue_the_object_itself() -> None:
    old = {"metadata": {"name": "a", "uid": "1", "generation": 2, "resourceVersion": "5"}}
    status = {"metadata": {**old["metadata"], "resourceVersion": "6"}, "status": {"x": 1}}
    spec = {"metadata": {**old["metadata"], "generation": 3, "resourceVersion": "7"}}
    deleting = {"metadata": {**old["metadata"], "deletionTimestamp": "2026-01-01T00:00:00Z"}}
    assert is_status_only("MODIFIED", old, status)
    assert not is_status_only("MODIFIED", old, spec)
    assert not is_status_only("MODIFIED", old, deleting)
    assert not is_status_only("ADDED", None, old)


def _cluster_role() -> dict[str, Any]:
    text = (REPO / "charts" / "kagent" / "templates" / "rbac.yaml").read_text()
    docs = list(yaml.safe_load_all(re.sub(r"\{\{-?.*?-?\}\}", "x", text)))
    return next(d for d in docs if d["kind"] == "ClusterRole")


NOT_CACHED_WATCHES = {
    ("admissionregistration.k8s.io", "validatingwebhookconfigurations"),  # kopf manages them
    ("admissionregistration.k8s.io", "mutatingwebhookconfigurations"),
}


def test_the_charts_role_lets_the_controller_watch_exactly_what_it_watches() -> None:
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in _cluster_role()["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    watched = {(w.api_version.rpartition("/")[0], w.plural) for w in ALL_WATCHES}
    for resource in watched:
        assert {"list", "watch"} <= granted.get(resource, set()), f"{resource} is watched but not granted"
    watchable = {r for r, verbs in granted.items() if verbs & {"list", "watch"}}
    assert watchable - watched - NOT_CACHED_WATCHES == set(), "list/watch granted for what is not watched"
