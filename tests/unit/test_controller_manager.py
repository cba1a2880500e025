"""The runner every reconciler shares: which cache events queue which keys, and how a Result or
an error turns into requeues, the dependency index and Events."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kagent.controller.manager import Controller
from kagent.controller.settings import ControllerSettings
from kagent.kube.events import EventRecorder
from kagent.kube.reconcile import ObjectKey, Result, Transition


def controller() -> Controller:
    return Controller(None, ControllerSettings(webhook=None, metrics_port=None), None)  # type: ignore[arg-type]


def obj(name: str, namespace: str = "ns", **meta: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}", **meta}}


def queued(c: Controller) -> set[ObjectKey]:
    return set(c.queue._queued)


def test_a_child_queues_the_agent_that_controls_it() -> None:
    c = controller()
    owned = obj("a", ownerReferences=[{"apiVersion": "kagent.dev/v1alpha1", "kind": "Agent", "name": "a",
                                       "uid": "uid-a", "controller": True}])
    c.on_event("Service", "DELETED", owned, None)
    assert queued(c) == {("Agent", "ns", "a")}
    c2 = controller()
    c2.on_event("Service", "ADDED", None, obj("stray"))
    assert queued(c2) == set()


def test_status_only_changes_do_not_requeue_but_reach_dependents() -> None:
    c = controller()
    c.index.record(("Tool", "ns", "ask-a"), {("Agent", "ns", "a")})
    old = obj("a", generation=1, resourceVersion="1")
    c.on_event("Agent", "MODIFIED", old, {**obj("a", generation=1, resourceVersion="2"), "status": {}})
    assert queued(c) == {("Tool", "ns", "ask-a")}, "the agent-tool follows the Agent's status"
    c.on_event("Agent", "MODIFIED", old, obj("a", generation=2, resourceVersion="3"))
    assert ("Agent", "ns", "a") in queued(c)


def test_a_secret_queues_only_what_uses_it_and_only_when_it_changed() -> None:
    c = controller()
    c.index.record(("Agent", "ns", "a"), {("Secret", "ns", "key")})
    c.on_event("Secret", "MODIFIED", obj("key", resourceVersion="1"), obj("key", resourceVersion="1"))
    c.on_event("Secret", "MODIFIED", obj("other", resourceVersion="1"), obj("other", resourceVersion="2"))
    assert queued(c) == set()
    c.on_event("Secret", "MODIFIED", obj("key", resourceVersion="1"), obj("key", resourceVersion="2"))
    assert queued(c) == {("Agent", "ns", "a")}


class Scripted:
    def __init__(self, outcome: Result | Exception) -> None:
        self.outcome = outcome

    async def reconcile(self, key: ObjectKey) -> Result:
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


def sent_events(c: Controller) -> list[tuple[str, str, str]]:
    return [(type_, reason, message) for _, type_, reason, message in c.events._queue._queue]  # type: ignore[attr-defined]


async def test_a_result_becomes_requeue_dependencies_and_events() -> None:
    c = controller()
    c.cache.informers["Agent"].store._set(("ns", "a"), obj("a"))
    key = ("Agent", "ns", "a")
    c.reconcilers["Agent"] = Scripted(Result(
        requeue_after=5.0, dependencies=frozenset({("Tool", "ns", "t")}),
        transitions=(Transition("Accepted", "False", "ToolNotFound", 'Tool "t"'),)))
    assert await c.handle(key) == 5.0
    assert c.index.dependents(("Tool", "ns", "t")) == {key}
    assert sent_events(c) == [("Warning", "ToolNotFound", 'Accepted=False: Tool "t"')]
    c.reconcilers["Agent"] = Scripted(Result())
    assert await c.handle(key) == c.settings.resync_seconds, "no requeue asked: the resync"
    c.reconcilers["Agent"] = Scripted(Result.forget())
    assert await c.handle(key) is None
    assert c.index.dependents(("Tool", "ns", "t")) == set()


async def test_an_error_is_raised_for_backoff_and_told_once() -> None:
    c = controller()
    c.cache.informers["Agent"].store._set(("ns", "a"), obj("a"))
    c.reconcilers["Agent"] = Scripted(RuntimeError("the API server said no"))
    for _ in range(3):
        with pytest.raises(RuntimeError):
            await c.handle(("Agent", "ns", "a"))
    assert sent_events(c) == [("Warning", "ReconcileFailed", "RuntimeError: the API server said no")]


async def test_the_event_recorder_is_bounded_and_drops_repeats() -> None:
    recorder = EventRecorder(None, capacity=2)  # type: ignore[arg-type]
    involved = {"kind": "Agent", "metadata": {"name": "a", "uid": "1"}}
    for _ in range(5):
        recorder.record(involved, "Warning", "R", "same")
    assert recorder._queue.qsize() == 1
    recorder.record(involved, "Warning", "R", "second")
    recorder.record(involved, "Warning", "R", "third")
    assert recorder._queue.qsize() == 2 and recorder.dropped == 1
    await asyncio.sleep(0)


def test_a_child_change_the_controller_does_not_read_queues_nothing() -> None:
    from kagent.controller.cache import trim_child

    c = controller()
    base = {"metadata": {"name": "a", "namespace": "ns", "resourceVersion": "1", "ownerReferences": [
        {"apiVersion": "kagent.dev/v1alpha1", "kind": "Agent", "name": "a", "uid": "u", "controller": True}]},
        "spec": {"minReplicas": 1}, "status": {"currentReplicas": 1}}
    status_only = {**base, "metadata": {**base["metadata"], "resourceVersion": "2"}, "status": {"currentReplicas": 3}}
    c.on_event("HorizontalPodAutoscaler", "MODIFIED", trim_child(base), trim_child(status_only))
    assert queued(c) == set()
    edited = {**status_only, "spec": {"minReplicas": 5}}
    c.on_event("HorizontalPodAutoscaler", "MODIFIED", trim_child(status_only), trim_child(edited))
    assert queued(c) == {("Agent", "ns", "a")}
