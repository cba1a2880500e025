"""Generate CustomResourceDefinitions from the API types.

Pydantic describes each kind as JSON Schema (2020-12); Kubernetes wants a *structural*
OpenAPI v3 schema: no ``$ref``, no ``anyOf`` for optional fields, ``minimum`` with a boolean
``exclusiveMinimum``, no ``additionalProperties`` beside ``properties``. This module turns one
into the other, so the types stay the only place the API is written down.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from kagent.api import KINDS
from kagent.api.base import GROUP, VERSION, Resource
from kagent.api.labels import MANAGER, NAME_LABEL, PART_OF_LABEL

CATEGORY = "kagent"
GENERATED_HEADER = "# Generated from kagent/api by `kagent crds`. Do not edit.\n"

# Keys that describe a field rather than its type: on a $ref or an optional's anyOf they sit
# beside the type and must be merged into it.
_FIELD_KEYS = ("description", "default", "x-kubernetes-validations", "x-kubernetes-list-type",
               "x-kubernetes-list-map-keys", "maxItems", "minItems")
_DROPPED_KEYS = {"title", "$defs", "discriminator"}


def _is_null(schema: dict[str, Any]) -> bool:
    return schema.get("type") == "null"


def _structural(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Rewrite one JSON Schema node (and its children) into a structural schema node."""
    node = dict(schema)
    if "$ref" in node:
        target = defs[node.pop("$ref").rsplit("/", 1)[-1]]
        merged = copy.deepcopy(target)
        merged.update({k: v for k, v in node.items() if k in _FIELD_KEYS or k.startswith("x-")})
        return _structural(merged, defs)
    if "anyOf" in node:
        branches = [b for b in node["anyOf"] if not _is_null(b)]
        if len(branches) != 1:
            raise ValueError(f"cannot express a union of {len(branches)} types in a CRD: {node}")
        outer = {k: v for k, v in node.items() if k != "anyOf"}
        inner = dict(branches[0])
        inner.update({k: v for k, v in outer.items() if k not in inner or k == "description"})
        return _structural(inner, defs)

    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED_KEYS:
            continue
        if key == "const":
            out["enum"] = [value]
        elif key == "default":
            if value is not None and not isinstance(value, (dict, list)):
                out["default"] = value
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            bound = "minimum" if key == "exclusiveMinimum" else "maximum"
            out[bound] = value
            out[key] = True
        elif key == "properties":
            out["properties"] = {name: _structural(sub, defs) for name, sub in value.items()}
        elif key == "items":
            out["items"] = _structural(value, defs)
        elif key == "additionalProperties":
            if isinstance(value, dict):
                out["additionalProperties"] = _structural(value, defs)
        else:
            out[key] = value
    if "properties" in out:
        out["type"] = "object"
        out.pop("additionalProperties", None)
    if "const" in node and "type" not in out:
        out["type"] = "string"
    if "description" in out:
        out["description"] = " ".join(out["description"].split())
    return _ordered(out)


def _ordered(node: dict[str, Any]) -> dict[str, Any]:
    """Put description and type first so the generated files read well."""
    head = {k: node[k] for k in ("description", "type") if k in node}
    return {**head, **{k: v for k, v in node.items() if k not in head}}


def openapi_schema(kind: type[Resource]) -> dict[str, Any]:
    """The structural openAPIV3Schema of one kind."""
    source = kind.model_json_schema(by_alias=True, mode="validation")
    defs = source.get("$defs", {})
    properties = source["properties"]
    schema: dict[str, Any] = {
        "type": "object",
        "description": kind.__doc__.strip() if kind.__doc__ else kind.kind_name,
        "required": ["spec"],
        "properties": {
            "apiVersion": {
                "type": "string",
                "description": "APIVersion defines the versioned schema of this representation "
                "of an object.",
            },
            "kind": {
                "type": "string",
                "description": "Kind is a string value representing the REST resource this "
                "object represents.",
            },
            "metadata": {"type": "object"},
            "spec": _structural(properties["spec"], defs),
            "status": _structural(properties["status"], defs),
        },
    }
    if kind.root_validations:
        schema["x-kubernetes-validations"] = list(kind.root_validations)
    return schema


def crd_for(kind: type[Resource]) -> dict[str, Any]:
    """The CustomResourceDefinition manifest of one kind."""
    columns = [
        {
            "name": c.name,
            "type": c.type,
            "jsonPath": c.json_path,
            **({"description": c.description} if c.description else {}),
            **({"priority": c.priority} if c.priority else {}),
        }
        for c in kind.printer_columns
    ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{kind.plural}.{GROUP}",
            "labels": {NAME_LABEL: MANAGER, PART_OF_LABEL: MANAGER},
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind.kind_name,
                "listKind": f"{kind.kind_name}List",
                "plural": kind.plural,
                "singular": kind.singular(),
                "shortNames": list(kind.short_names),
                "categories": [CATEGORY],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": openapi_schema(kind)},
                }
            ],
        },
    }


def all_crds() -> dict[str, dict[str, Any]]:
    """Every CRD, keyed by the file name it is written to."""
    return {f"{GROUP}_{kind.plural}.yaml": crd_for(kind) for kind in KINDS}


def render_yaml(manifest: dict[str, Any]) -> str:
    return GENERATED_HEADER + yaml.safe_dump(manifest, sort_keys=False, width=100)


def write_crds(directory: Path) -> list[Path]:
    """Write one file per CRD into ``directory``; returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for filename, manifest in all_crds().items():
        path = directory / filename
        path.write_text(render_yaml(manifest))
        written.append(path)
    return written


def default_crd_dir() -> Path:
    """The chart's CRD folder in a source checkout."""
    return Path(__file__).resolve().parents[2] / "charts" / "kagent" / "crds"
