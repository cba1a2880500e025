"""The dashboard lists and watches runs as the API server's tables: each run comes back as its
printer columns and metadata, not its steps' outputs, and the rows the browser gets are the same
as from whole objects (less the exact start and end times, which a table gives as ages)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from lightkube import AsyncClient, KubeConfig
from lightkube.types import PatchType

from kagent.dashboard import views
from kagent.dashboard.access import kubeconfig_viewer, new_http
from kagent.dashboard.app import RUN_COLUMNS
from kagent.dashboard.live import Informer, Source
from kagent.kube import KAGENT_RESOURCES
from kagent.local.controlplane import ControlPlane

pytestmark = pytest.mark.integration

RUN = KAGENT_RESOURCES["WorkflowRun"]
SHOWN = ("name", "created", "workflow", "phase", "reason", "duration", "tokens", "cancelling")


def run(name: str, cancel: bool = False) -> dict[str, Any]:
    return {"apiVersion": "kagent.dev/v1alpha1", "kind": "WorkflowRun",
            "metadata": {"name": name},
            "spec": {"workflowRef": {"name": "research-report"}, "input": {"topic": name},
                     "cancel": cancel}}


def status(phase: str, reason: str | None = None) -> dict[str, Any]:
    return {"phase": phase, "reason": reason, "startedAt": "2026-01-01T00:00:00Z",
            "duration": "12s",
            "steps": [{"name": f"step-{i}", "phase": phase, "output": "words " * 600}
                      for i in range(4)],
            "usage": {"inputTokens": 480, "outputTokens": 320, "cost": 0.25, "requests": 4}}


async def put(client: AsyncClient, namespace: str, name: str, body: dict[str, Any]) -> None:
    await client.patch(RUN.Status, name, {"status": body}, namespace=namespace,
                       patch_type=PatchType.MERGE)


async def test_runs_listed_and_watched_as_tables_give_the_rows_whole_objects_give(
        plane: ControlPlane) -> None:
    # A control plane of its own: no controller there takes the hand-made runs up.
    namespace = plane.create_namespace("tables")
    kube_client = AsyncClient(config=KubeConfig.from_file(plane.kubeconfig), trust_env=False,
                              field_manager="kagent-tests")
    await kube_client.create(RUN(run("failed")), namespace=namespace)
    await put(kube_client, namespace, "failed", status("Failed", "StepFailed"))
    await kube_client.create(RUN(run("stopping", cancel=True)), namespace=namespace)
    await put(kube_client, namespace, "stopping", status("Running"))

    seen: list[tuple[str, Any]] = []
    http = new_http(kubeconfig_viewer(plane.kubeconfig))
    informer = Informer(http, namespace, Source("runs", RUN, "WorkflowRun", views.run_row,
                                                table=RUN_COLUMNS))
    informer.subscribers.append(lambda change, payload: seen.append((change, payload)))
    task = asyncio.create_task(informer.follow())
    try:
        async def whole(name: str) -> dict[str, Any]:
            return (await kube_client.get(RUN, name, namespace=namespace)).to_dict()

        async def until(check: Any) -> Any:
            for _ in range(200):
                for change, payload in seen:
                    found = check(change, payload)
                    if found is not None:
                        return found
                await asyncio.sleep(0.05)
            raise AssertionError(f"not seen; seen: {[c for c, _ in seen]}")

        listed = await until(lambda change, payload: payload if change == "reset" else None)
        assert set(listed) == {"failed", "stopping"}
        for name in listed:
            from_table, from_object = views.run_row(listed[name]), views.run_row(await whole(name))
            assert {k: from_table[k] for k in SHOWN} == {k: from_object[k] for k in SHOWN}
            assert "steps" not in listed[name].get("status", {})  # the outputs never came
        assert views.run_row(listed["failed"])["tokens"] == 800
        assert views.run_row(listed["failed"])["reason"] == "StepFailed"
        assert views.run_row(listed["stopping"])["cancelling"] is True

        # Changes come through the table watch.
        await put(kube_client, namespace, "stopping", {"phase": "Failed", "reason": "Cancelled"})
        changed = await until(lambda change, payload: payload if change == "upsert"
                              and payload["metadata"]["name"] == "stopping"
                              and payload["status"].get("phase") == "Failed" else None)
        assert views.run_row(changed)["reason"] == "Cancelled"
        assert not views.run_row(changed)["cancelling"]
        await kube_client.delete(RUN, "failed", namespace=namespace)
        await until(lambda change, payload: True if change == "delete"
                    and payload["metadata"]["name"] == "failed" else None)
        assert set(informer.docs) == {"stopping"}
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await http.aclose()
        await kube_client.close()
