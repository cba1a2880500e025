"""Read Kagent resources from YAML manifests, with errors that name the field at fault."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from kagent.api import KIND_BY_NAME, Resource
from kagent.api.base import API_VERSION


class ManifestError(ValueError):
    """A manifest that is not a valid Kagent resource; the message names the field."""


def field_path(loc: Iterable[int | str]) -> str:
    """``('spec', 'steps', 1, 'name')`` -> ``spec.steps[1].name``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _describe(error: ValidationError, where: str) -> str:
    lines = []
    for item in error.errors():
        loc = [p for p in item["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
        message = item["msg"].removeprefix("Value error, ")  # our validators' words, as written
        lines.append(f"  {field_path(loc) or '(object)'}: {message}")
    return f"{where} is invalid:\n" + "\n".join(lines)


def parse_resource(document: dict[str, Any], source: str = "manifest") -> Resource:
    """Parse one Kagent object (a dict as Kubernetes stores it) into its typed model."""
    kind = document.get("kind")
    model = KIND_BY_NAME.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise ManifestError(
            f"{source}: kind {kind!r} is not a Kagent kind (expected one of "
            f"{', '.join(KIND_BY_NAME)})"
        )
    if document.get("apiVersion") != API_VERSION:
        raise ManifestError(
            f"{source}: apiVersion of {kind} must be {API_VERSION}, got {document.get('apiVersion')!r}"
        )
    name = (document.get("metadata") or {}).get("name", "?")
    try:
        return model.model_validate(document)
    except ValidationError as error:
        raise ManifestError(_describe(error, f"{source}: {kind} {name!r}")) from None


def load_documents(text: str, source: str = "manifest") -> list[dict[str, Any]]:
    """All non-empty YAML documents of a multi-document stream (List kinds are flattened)."""
    try:
        documents = [d for d in yaml.safe_load_all(text) if d]
    except yaml.YAMLError as error:
        raise ManifestError(f"{source}: not valid YAML: {error}") from None
    flat: list[dict[str, Any]] = []
    for document in documents:
        if not isinstance(document, dict):
            raise ManifestError(f"{source}: every YAML document must be a mapping")
        if document.get("kind", "").endswith("List") and "items" in document:
            flat.extend(document["items"])
        else:
            flat.append(document)
    return flat


def load_files(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """Documents from files and folders (a folder contributes its *.yaml and *.yml files)."""
    documents: list[dict[str, Any]] = []
    for path in paths:
        files = sorted([*path.glob("*.yaml"), *path.glob("*.yml")]) if path.is_dir() else [path]
        for file in files:
            if not file.is_file():
                raise ManifestError(f"{file}: no such file")
            documents.extend(load_documents(file.read_text(), source=str(file)))
    return documents
