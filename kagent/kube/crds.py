"""Install Kagent's CRDs into a cluster: one home for the dev environment, `kagent install`,
the test fixtures and the benchmarks.

Server-side apply with force, so an upgrade brings the new schema (Helm never upgrades its
``crds/``) while fields other managers own are left alone; then wait until every CRD is
Established, so objects of the new kinds can be created at once.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from lightkube import Client
from lightkube.resources.apiextensions_v1 import CustomResourceDefinition

from kagent.api.crd import all_crds
from kagent.api.labels import CRD_FIELD_MANAGER


class CrdError(RuntimeError):
    """A CRD could not be applied or did not become Established in time."""


def _established(crd: Any) -> bool:
    conditions = (crd.status.conditions if crd.status else None) or []
    return any(c.type == "Established" and c.status == "True" for c in conditions)


def apply_crds(client: Client, manifests: Iterable[dict[str, Any]] | None = None, *,
               timeout: float = 60.0) -> list[str]:
    """Apply the CRDs (default: the ones generated from the API types) and wait until each is
    Established. Returns their names; raises :class:`CrdError` naming the CRD at fault."""
    wanted = list(manifests) if manifests is not None else list(all_crds().values())
    names: list[str] = []
    for manifest in wanted:
        name = manifest["metadata"]["name"]
        try:
            client.apply(CustomResourceDefinition.from_dict(manifest),
                         field_manager=CRD_FIELD_MANAGER, force=True)
        except Exception as error:  # noqa: BLE001 - re-raised with the CRD named
            raise CrdError(f"applying CRD {name} failed: {error}") from error
        names.append(name)
    deadline = time.monotonic() + timeout
    pending = list(names)
    while pending:
        pending = [n for n in pending if not _established(client.get(CustomResourceDefinition, n))]
        if not pending:
            break
        if time.monotonic() > deadline:
            raise CrdError(f"CRDs not Established after {timeout:.0f}s: {', '.join(pending)}")
        time.sleep(0.1)
    return names
