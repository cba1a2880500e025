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
    if isinstance(model, SecretKeySelector):
        yield model
        return
    for name in type(model).model_fields:
        yield from _iter_value(getattr(model, name))


def _iter_value(value: object) -> Iterator[SecretKeySelector]:
    if isinstance(value, BaseModel):
        yield from iter_secret_refs(value)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _iter_value(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _iter_value(item)


def unique_refs(refs: list[SecretKeySelector]) -> list[SecretKeySelector]:
    """Refs without repeats, in first-seen order."""
    seen: set[tuple[str, str]] = set()
    out = []
    for ref in refs:
        if (ref.name, ref.key) not in seen:
            seen.add((ref.name, ref.key))
            out.append(ref)
    return out
