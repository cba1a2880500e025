"""Kubernetes-style conditions: set one, keeping lastTransitionTime unless the status changed."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_condition(
    conditions: list[dict[str, Any]] | None,
    type_: str,
    status: bool | str,
    reason: str,
    message: str,
    generation: int | None,
    now: str,
) -> list[dict[str, Any]]:
    """A new condition list with ``type_`` set; the others are kept as they were."""
    status_text = status if isinstance(status, str) else ("True" if status else "False")
    existing = next((c for c in conditions or [] if c.get("type") == type_), None)
    transition = (
        existing["lastTransitionTime"]
        if existing and existing.get("status") == status_text and existing.get("lastTransitionTime")
        else now
    )
    updated = {
        "type": type_,
        "status": status_text,
        "reason": reason,
        "message": message,
        "lastTransitionTime": transition,
        "observedGeneration": generation,
    }
    others = [c for c in conditions or [] if c.get("type") != type_]
    return [*others, updated] if existing is None else [
        updated if c.get("type") == type_ else c for c in conditions or []
    ]


def condition(conditions: list[dict[str, Any]] | None, type_: str) -> dict[str, Any] | None:
    return next((c for c in conditions or [] if c.get("type") == type_), None)


def is_true(conditions: list[dict[str, Any]] | None, type_: str) -> bool:
    found = condition(conditions, type_)
    return bool(found and found.get("status") == "True")
