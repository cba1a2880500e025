"""Every ``from kagent.x import name`` in the package names something that exists — including
imports inside functions, which only fail when that code path runs (a merge or a move can
leave one behind, as `make demo`'s dashboard start once found out)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "kagent"


def _missing(module: str, name: str) -> bool:
    loaded = importlib.import_module(module)
    if hasattr(loaded, name):
        return False
    try:
        importlib.import_module(f"{module}.{name}")
    except ImportError:
        return True
    return False


def test_every_kagent_import_names_something_that_exists() -> None:
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                    and node.module.split(".")[0] == "kagent":
                missing += [f"{path.relative_to(PACKAGE.parent)}: {node.module}.{a.name}"
                            for a in node.names if a.name != "*" and _missing(node.module, a.name)]
    assert not missing, "\n".join(missing)
