"""Golden files: compare rendered output with a committed file; KAGENT_UPDATE_GOLDEN=1 rewrites."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml


def assert_golden(path: Path, actual: str) -> None:
    if os.environ.get("KAGENT_UPDATE_GOLDEN") == "1" or not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual)
        if os.environ.get("KAGENT_UPDATE_GOLDEN") != "1":
            raise AssertionError(f"golden file {path.name} was missing and has been written; rerun")
    expected = path.read_text()
    assert actual == expected, f"{path.name} differs; rerun with KAGENT_UPDATE_GOLDEN=1 if intended"


class _LiteralDumper(yaml.SafeDumper):
    """Writes multi-line strings as literal blocks so golden files stay readable."""


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_LiteralDumper.add_representer(str, _str_representer)


def dump_yaml_documents(documents: list[dict[str, Any]]) -> str:
    return yaml.dump_all(documents, Dumper=_LiteralDumper, sort_keys=False, width=100)
