"""Render the API reference (Markdown) from the same structural schema the CRDs carry.

The reference is generated, never written by hand, for the same reason the CRDs are: the
Pydantic types in ``kagent/api`` are the only place the API is defined, so a description,
default or validation added there shows up in ``kubectl explain``, in admission and here at once.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from kagent.api import KINDS
from kagent.api.base import API_VERSION, Resource
from kagent.api.crd import openapi_schema

GENERATED_NOTE = "<!-- Generated from kagent/api by `kagent docs`. Do not edit. -->"
REFERENCE_FILE = Path("reference") / "api.md"


def render_api_reference(kinds: tuple[type[Resource], ...] = KINDS) -> str:
    """The whole API reference as one Markdown document (deterministic: same types, same text)."""
    out: list[str] = [
        GENERATED_NOTE,
        "",
        "# API reference",
        "",
        f"All kinds are namespaced and belong to `{API_VERSION}`. This page is generated from the",
        "Python types in `kagent/api` (the same schema the CRDs carry, so `kubectl explain` agrees",
        "with it). Regenerate it with `make docs`.",
        "",
        "| Kind | Short names | Description |",
        "|---|---|---|",
    ]
    for kind in kinds:
        short = ", ".join(f"`{s}`" for s in kind.short_names) or "—"
        out.append(f"| [{kind.kind_name}](#{_anchor(kind.kind_name)}) | {short} | "
                   f"{_cell(_first_sentence(_kind_description(kind)))} |")
    out.append("")
    for kind in kinds:
        out.extend(_render_kind(kind))
    return "\n".join(out).rstrip() + "\n"


def write_api_reference(directory: Path) -> Path:
    """Write the reference to ``directory/reference/api.md``; returns the path."""
    path = directory / REFERENCE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_api_reference())
    return path


def default_docs_dir() -> Path:
    """The repository's docs/ folder in a source checkout."""
    return Path(__file__).resolve().parents[2] / "docs"


def _kind_description(kind: type[Resource]) -> str:
    return " ".join((kind.__doc__ or kind.kind_name).split())


def _render_kind(kind: type[Resource]) -> list[str]:
    schema = openapi_schema(kind)
    name = kind.kind_name
    out = [
        f'<a id="{_anchor(name)}"></a>',
        "",
        f"## {name}",
        "",
        _kind_description(kind),
        "",
        f"- `apiVersion: {API_VERSION}`, `kind: {name}`",
        f"- Plural: `{kind.plural}`"
        + (f"; short names: {', '.join(f'`{s}`' for s in kind.short_names)}"
           if kind.short_names else ""),
        "",
    ]
    out.extend(_validation_notes(schema))
    top = {k: v for k, v in schema["properties"].items() if k in ("spec", "status")}
    out.extend(_table(name, "", {"properties": top, "required": schema.get("required", [])}))
    sections: list[tuple[str, dict[str, Any]]] = []
    for field, node in top.items():
        _collect(field, node, sections)
    for path, node in sections:
        out.extend([f'<a id="{_anchor(name, path)}"></a>', "", f"### {name}.{path}", ""])
        if node.get("description"):
            out.extend([node["description"], ""])
        out.extend(_validation_notes(node))
        out.extend(_table(name, path, node))
    return out


def _collect(path: str, node: dict[str, Any], sections: list[tuple[str, dict[str, Any]]]) -> None:
    """Depth first: every object with named fields gets its own anchored section."""
    if node.get("properties"):
        sections.append((path, node))
        for field, child in node["properties"].items():
            _collect(f"{path}.{field}", child, sections)
    elif node.get("type") == "array" and isinstance(node.get("items"), dict):
        _collect(f"{path}[]", node["items"], sections)
    elif isinstance(node.get("additionalProperties"), dict):
        _collect(f"{path}{{}}", node["additionalProperties"], sections)


def _section_target(path: str, node: dict[str, Any]) -> str | None:
    """The section a field's type links to, if its type has one."""
    if node.get("properties"):
        return path
    if node.get("type") == "array" and isinstance(node.get("items"), dict):
        return _section_target(f"{path}[]", node["items"])
    if isinstance(node.get("additionalProperties"), dict):
        return _section_target(f"{path}{{}}", node["additionalProperties"])
    return None


def _type_name(node: dict[str, Any]) -> str:
    if node.get("x-kubernetes-int-or-string"):
        return "integer or string"
    kind = node.get("type")
    if kind == "array":
        return "[]" + _type_name(node.get("items") or {})
    if kind == "object" or kind is None:
        if node.get("properties"):
            return "object"
        if isinstance(node.get("additionalProperties"), dict):
            return "map[string]" + _type_name(node["additionalProperties"])
        if node.get("x-kubernetes-preserve-unknown-fields") or kind is None:
            return "any"
        return "object"
    return str(kind)


def _table(kind: str, path: str, node: dict[str, Any]) -> list[str]:
    required = set(node.get("required", []))
    rows = ["| Field | Type | Required | Default | Description |", "|---|---|---|---|---|"]
    for field, child in node.get("properties", {}).items():
        full = f"{path}.{field}" if path else field
        type_text = f"`{_type_name(child)}`"
        target = _section_target(full, child)
        if target:
            type_text = f"[{type_text}](#{_anchor(kind, target)})"
        default = f"`{_literal(child['default'])}`" if "default" in child else ""
        rows.append(f"| `{field}` | {type_text} | {'yes' if field in required else ''} | "
                    f"{default} | {_cell(_field_text(child))} |")
    return [*rows, ""]


def _field_text(node: dict[str, Any]) -> str:
    """Description plus every constraint the API server enforces on this field."""
    parts = [node.get("description", "")]
    scalar = node.get("items") if node.get("type") == "array" else None
    for source, prefix in ((node, ""), (scalar or {}, "Each item: ")):
        notes = _constraints(source)
        if notes:
            parts.append(prefix + " ".join(notes))
    if not node.get("properties"):
        for rule in node.get("x-kubernetes-validations", []):
            parts.append(f"Validation: {rule.get('message') or rule['rule']}")
    return " ".join(p for p in parts if p)


def _constraints(node: dict[str, Any]) -> list[str]:
    notes = []
    if "enum" in node:
        notes.append("One of: " + ", ".join(f"`{_literal(v)}`" for v in node["enum"]) + ".")
    low, high = node.get("minimum"), node.get("maximum")
    if low is not None or high is not None:
        low_text = f"{'>' if node.get('exclusiveMinimum') else '≥'} {_literal(low)}" if low is not None else ""
        high_text = f"{'<' if node.get('exclusiveMaximum') else '≤'} {_literal(high)}" if high is not None else ""
        notes.append("Range: " + ", ".join(t for t in (low_text, high_text) if t) + ".")
    if "minLength" in node or "maxLength" in node:
        notes.append(_bounds("Length", node.get("minLength"), node.get("maxLength")))
    if "minItems" in node or "maxItems" in node:
        notes.append(_bounds("Items", node.get("minItems"), node.get("maxItems")))
    if "pattern" in node:
        notes.append(f"Pattern: `{node['pattern']}`.")
    if node.get("x-kubernetes-list-type") == "map":
        keys = ", ".join(f"`{k}`" for k in node.get("x-kubernetes-list-map-keys", []))
        notes.append(f"A list keyed by {keys} (each key at most once).")
    elif node.get("x-kubernetes-list-type") == "set":
        notes.append("Items are unique.")
    return notes


def _bounds(what: str, low: int | None, high: int | None) -> str:
    if low is not None and high is not None:
        return f"{what}: {low} to {high}."
    if low is not None:
        return f"{what}: at least {low}."
    return f"{what}: at most {high}."


def _validation_notes(node: dict[str, Any]) -> list[str]:
    rules = node.get("x-kubernetes-validations", [])
    if not rules:
        return []
    out = ["**Validation** (checked by the API server at admission):", ""]
    for rule in rules:
        where = f" (`{rule['fieldPath']}`)" if rule.get("fieldPath") else ""
        out.append(f"- {rule.get('message') or rule['rule']}{where}")
    return [*out, ""]


def _literal(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _first_sentence(text: str) -> str:
    match = re.match(r"(.+?\.)(\s|$)", text)
    return match.group(1) if match else text


def _anchor(kind: str, path: str = "") -> str:
    raw = f"{kind}-{path}" if path else kind
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9]+", "-", raw.lower())).strip("-")
