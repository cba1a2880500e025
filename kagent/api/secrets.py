"""Secret references: where a resource points at Secrets, and how a value reaches the runtime.

The controller never copies a secret value anywhere. The agent's Deployment maps every
referenced Secret key to an environment variable with ``secretKeyRef``; the runtime reads the
variable named by :func:`secret_env_name`. Outside a cluster (``kagent runtime -f``) the same
name can be set by hand, or a Secret manifest can be passed as one of the files.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator

from pydantic import BaseModel

from kagent.api.base import SecretKeySelector

TRACING_SECRET_KEYS = {
    "langfuse": ("public-key", "secret-key"),
    "langsmith": ("api-key",),
    "cloudwatch": (),
    "otlp": (),
}


def secret_env_name(ref: SecretKeySelector) -> str:
    """A stable environment variable name for one Secret key.

    Names are upper-cased with every other character replaced by ``_``; a short hash of the
    exact name and key keeps two refs that would collide after that apart.
    """
    readable = re.sub(r"[^A-Z0-9]", "_", f"{ref.name}_{ref.key}".upper())
    digest = hashlib.sha256(f"{ref.name}\0{ref.key}".encode()).hexdigest()[:6].upper()
    return f"KAGENT_SECRET_{readable}_{digest}"


def iter_secret_refs(model: BaseModel) -> Iterator[SecretKeySelector]:
    """Every SecretKeySelector anywhere inside a model, depth first, in field order."""
    for _, ref in secret_refs_with_fields(model):
        yield ref


def secret_refs_with_fields(model: BaseModel, path: str = "") -> Iterator[tuple[str, SecretKeySelector]]:
    """Every SecretKeySelector inside a model with the field it sits in, as users write it
    (``spec.model.apiKeySecretRef``, ``spec.pod.env[2].valueFrom.secretKeyRef``)."""
    if isinstance(model, SecretKeySelector):
        yield path, model
        return
    for name, info in type(model).model_fields.items():
        field = f"{path}.{info.alias or name}" if path else (info.alias or name)
        yield from _with_fields(getattr(model, name), field)


def _with_fields(value: object, path: str) -> Iterator[tuple[str, SecretKeySelector]]:
    if isinstance(value, BaseModel):
        yield from secret_refs_with_fields(value, path)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _with_fields(item, f"{path}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _with_fields(item, f"{path}.{key}")


def unique_refs(refs: list[SecretKeySelector]) -> list[SecretKeySelector]:
    """Refs without repeats, in first-seen order."""
    seen: set[tuple[str, str]] = set()
    out = []
    for ref in refs:
        if (ref.name, ref.key) not in seen:
            seen.add((ref.name, ref.key))
            out.append(ref)
    return out
