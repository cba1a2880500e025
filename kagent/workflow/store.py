"""The cluster as the workflow engine sees it: WorkflowRuns and Workflows, their status, the
Events on runs and the ConfigMap that keeps outputs too large for a status.

A thin I/O shell: it reads and writes, and decides nothing. Status writes take the typed status
models of :mod:`kagent.api.workflow` only, so a misspelt field fails where it is built, never
silently on the API server (which prunes fields its schema does not know). The unit tests put an
in-memory store with the same methods in its place.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Protocol

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.types import PatchType

from kagent.api.base import KagentModel
from kagent.api.workflow import WorkflowRun, WorkflowRunStatus, WorkflowStatus
from kagent.kube import KAGENT_RESOURCES, apply, is_not_found
from kagent.kube.events import post_event

log = logging.getLogger("kagent.workflow")

STATUS_WRITE_ATTEMPTS = 6


class RunGone(Exception):
    """The run was deleted while the engine worked on it."""


@dataclass(frozen=True)
class RunSummary:
    """What admission and the Workflow's status need to know of each run of a Workflow."""

    name: str
    created: str
    phase: str | None
    cancel: bool


def merge_patch(status: KagentModel) -> dict[str, Any]:
    """A status model as a JSON merge patch: every field with a value as it is on the wire; a
    field explicitly set to None is removed (null); a field never set is left as it is."""
    body = status.to_wire()
    fields = type(status).model_fields
    for name in status.model_fields_set:
        if getattr(status, name) is None:
            body[fields[name].alias or name] = None
    return body


def involved(run: WorkflowRun) -> dict[str, Any]:
    """The run as an Event's involved object."""
    meta = run.metadata
    return {"apiVersion": run.api_version, "kind": run.kind,
            "metadata": {"name": meta.name, "namespace": meta.namespace, "uid": meta.uid,
                         "resourceVersion": meta.resource_version}}


def outputs_configmap(run_name: str) -> str:
    """Name of the ConfigMap holding a run's outputs too large for its status."""
    return f"{run_name}-outputs"[:253]


class RunStore(Protocol):
    async def get_run(self, namespace: str, name: str) -> WorkflowRun | None: ...

    async def get_workflow(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def runs_of(self, namespace: str, workflow: str) -> list[RunSummary]: ...

    async def write_run_status(self, namespace: str, name: str, status: WorkflowRunStatus) -> bool:
        """Merge the status into the run's; whether the run (as written) asks to be
        cancelled. Raises RunGone when the run no longer exists."""
        ...

    async def write_workflow_status(self, namespace: str, name: str, status: WorkflowStatus) -> str | None:
        """Merge the status into the Workflow's; the Workflow's new resourceVersion."""
        ...

    async def post_event(self, run: WorkflowRun, type_: str, reason: str, message: str) -> None: ...

    async def save_outputs(self, run: WorkflowRun, outputs: dict[str, str]) -> None: ...

    async def load_outputs(self, run: WorkflowRun) -> dict[str, str]: ...

    async def delete_run(self, namespace: str, name: str) -> None: ...


class KubeRunStore:
    """The store on the Kubernetes API (lightkube). Every read is a request today; the reads
    (``get_run``, ``get_workflow``, ``runs_of``) are the place to serve from a watch-fed cache
    of runs and Workflows instead."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client
        self.run_type = KAGENT_RESOURCES["WorkflowRun"]
        self.workflow_type = KAGENT_RESOURCES["Workflow"]

    async def _get(self, kind: Any, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return (await self.client.get(kind, name, namespace=namespace)).to_dict()
        except ApiError as error:
            if is_not_found(error):
                return None
            raise

    async def get_run(self, namespace: str, name: str) -> WorkflowRun | None:
        raw = await self._get(self.run_type, namespace, name)
        return None if raw is None else WorkflowRun.model_validate(raw)

    async def get_workflow(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Workflow as stored; its spec is validated by the plan cache, so an invalid one
        is reported on its runs rather than failing here."""
        return await self._get(self.workflow_type, namespace, name)

    async def runs_of(self, namespace: str, workflow: str) -> list[RunSummary]:
        runs = []
        async for obj in self.client.list(self.run_type, namespace=namespace):
            raw = obj.to_dict()
            if raw["spec"]["workflowRef"]["name"] == workflow:
                meta = raw["metadata"]
                runs.append(RunSummary(meta["name"], meta.get("creationTimestamp") or "",
                                       (raw.get("status") or {}).get("phase"),
                                       bool(raw["spec"].get("cancel"))))
        return runs

    async def write_run_status(self, namespace: str, name: str, status: WorkflowRunStatus) -> bool:
        """Merge-patch the status subresource (one writer per run, so no resourceVersion is
        needed); a dropped connection is retried, as the write is idempotent. The answer holds
        the whole run: whether its spec asks for a cancel is returned."""
        if not isinstance(status, WorkflowRunStatus):
            raise TypeError(f"a WorkflowRun status must be a WorkflowRunStatus, not {type(status).__name__}")
        body = {"status": merge_patch(status)}
        attempt = 0
        while True:
            attempt += 1
            try:
                written = await self.client.patch(self.run_type.Status, name, body,
                                                  namespace=namespace, patch_type=PatchType.MERGE)
                return bool((written.get("spec") or {}).get("cancel"))
            except ApiError as error:
                if is_not_found(error):
                    raise RunGone(f"WorkflowRun {namespace}/{name} no longer exists") from None
                if attempt == STATUS_WRITE_ATTEMPTS:
                    raise
            except Exception:
                if attempt == STATUS_WRITE_ATTEMPTS:
                    raise
            await asyncio.sleep(0.2 * 2 ** (attempt - 1))

    async def write_workflow_status(self, namespace: str, name: str, status: WorkflowStatus) -> str | None:
        if not isinstance(status, WorkflowStatus):
            raise TypeError(f"a Workflow status must be a WorkflowStatus, not {type(status).__name__}")
        written = await self.client.patch(self.workflow_type.Status, name, {"status": merge_patch(status)},
                                          namespace=namespace, patch_type=PatchType.MERGE)
        return written.metadata.resourceVersion if written.metadata else None

    async def post_event(self, run: WorkflowRun, type_: str, reason: str, message: str) -> None:
        await post_event(self.client, involved(run), type_, reason, message)

    async def save_outputs(self, run: WorkflowRun, outputs: dict[str, str]) -> None:
        """Server-side apply the run's outputs ConfigMap, owned by the run (deleted with it)."""
        name = str(run.metadata.name)
        await apply(self.client, {
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {
                "name": outputs_configmap(name), "namespace": run.metadata.namespace,
                "labels": {"app.kubernetes.io/managed-by": "kagent", "kagent.dev/workflowrun": name[:63]},
                "ownerReferences": [{"apiVersion": run.api_version, "kind": run.kind,
                                     "name": name, "uid": run.metadata.uid, "controller": True}],
            },
            "data": dict(outputs),
        })

    async def load_outputs(self, run: WorkflowRun) -> dict[str, str]:
        from lightkube.resources.core_v1 import ConfigMap

        try:
            cm = await self.client.get(ConfigMap, outputs_configmap(str(run.metadata.name)),
                                       namespace=run.metadata.namespace)
        except ApiError as error:
            if not is_not_found(error):
                raise
            return {}
        return dict(cm.data or {})

    async def delete_run(self, namespace: str, name: str) -> None:
        try:
            await self.client.delete(self.run_type, name, namespace=namespace)
        except ApiError as error:
            if not is_not_found(error):
                raise
