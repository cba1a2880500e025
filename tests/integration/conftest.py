"""Fixtures several integration modules share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kagent.local.controlplane import ControlPlane, install_crds


@pytest.fixture(scope="module")
def plane() -> Iterator[ControlPlane]:
    """A control plane of the module's own (its controllers are killed and replaced), with
    Kagent's CRDs installed."""
    with ControlPlane() as cp:
        install_crds(cp)
        yield cp
