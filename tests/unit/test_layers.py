"""The package's layers (api → kube → runtime/workflow/local → … → cli → testing) are enforced by
import-linter, run here so that `make test` fails on a wrong-way import."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(tree / "pyproject.toml"), "--no-cache"],
        cwd=tree, env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=120, check=False,
    )


def test_the_package_keeps_its_layers() -> None:
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


def test_a_wrong_way_import_breaks_the_contract(tmp_path: Path) -> None:
    """The contract itself: the API types importing the CLI must be caught, naming the import."""
    shutil.copytree(ROOT / "kagent", tmp_path / "kagent",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "kagent" / "api" / "wrong_way.py").write_text("import kagent.cli.main\n")
    result = _lint(tmp_path)
    assert result.returncode != 0
    assert "kagent.api is not allowed to import kagent.cli" in result.stdout
    assert "kagent.api.wrong_way -> kagent.cli.main" in result.stdout


def test_only_the_test_kit_imports_the_test_kit(tmp_path: Path) -> None:
    """Nothing a user runs (the CLI, the controller, the local environment) may import
    kagent.testing: it is what a user's test suite imports, and ships no product code."""
    shutil.copytree(ROOT / "kagent", tmp_path / "kagent",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "kagent" / "local" / "wrong_way.py").write_text(
        "def later():\n    from kagent.testing import pytest_plugin\n")
    result = _lint(tmp_path)
    assert result.returncode != 0
    assert "kagent.local is not allowed to import kagent.testing" in result.stdout
