"""The dashboard's front-end as shipped (kagent/dashboard/static) is exactly what its sources
build to, from the registry with the versions package-lock.json pins — so the checked-in build
is never stale, and it type-checks."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import REPO

pytestmark = pytest.mark.integration

SOURCES = REPO / "web" / "dashboard"
SHIPPED = REPO / "kagent" / "dashboard" / "static"


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_the_checked_in_build_is_what_the_sources_build_to(tmp_path: Path) -> None:
    npm = shutil.which("npm")
    assert npm, "npm is needed to build the dashboard (see README: Python, Go, npm)"
    work = tmp_path / "dashboard"
    shutil.copytree(SOURCES, work, ignore=shutil.ignore_patterns("node_modules"))

    def run(*args: str) -> None:
        result = subprocess.run([npm, *args], cwd=work, capture_output=True, text=True,
                                timeout=600, check=False)
        assert result.returncode == 0, result.stdout + result.stderr

    run("ci", "--no-audit", "--no-fund")
    run("run", "check")
    run("exec", "--", "vite", "build", "--outDir", str(tmp_path / "out"), "--emptyOutDir")
    built, shipped = files(tmp_path / "out"), files(SHIPPED)
    assert sorted(built) == sorted(shipped), "kagent/dashboard/static is stale: run make dashboard"
    for name, content in built.items():
        assert content == shipped[name], f"{name} differs: run make dashboard"
    # Offline: the page and its styles load nothing from anywhere but the dashboard itself.
    for name, content in shipped.items():
        if name.endswith((".html", ".css")):
            assert b"http" not in content, f"{name} refers to another site"
