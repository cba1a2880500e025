"""Kubernetes-style conditions: set one, keeping lastTransitionTime unless the status changed,
and tell which conditions changed between two statuses (each change becomes an Event)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from kagent.api.base import Condition
from kagent.kube.reconcile import Transition


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_condition(
    conditions: Sequence[Condition] | None,
    type_: str,
    status: bool | str,
    reason: str,
    message: str,
    generation: int | None,
    now: str,
) -> list[Condition]:
    """A new condition list with ``type_`` set; the others are kept as they were, in order."""
    status_text = status if isinstance(status, str) else ("True" if status else "False")
    existing = find_condition(conditions, type_)
    transition = (
        existing.last_transition_time
        if existing is not None and existing.status == status_text and existing.last_transition_time
        else now
    )
    updated = Condition(
        type=type_,
        status=status_text,  # type: ignore[arg-type] - checked by the model
        reason=reason,
        message=message,
        last_transition_time=transition,
        observed_generation=generation,
    )
    if existing is None:
        return [*(conditions or []), updated]
    return [updated if c.type == type_ else c for c in conditions or []]


def remove_condition(conditions: Sequence[Condition] | None, type_: str) -> list[Condition]:
    return [c for c in conditions or [] if c.type != type_]


def find_condition(conditions: Sequence[Condition] | None, type_: str) -> Condition | None:
    return next((c for c in conditions or [] if c.type == type_), None)


def transitions(
    before: Sequence[Condition] | None,
    after: Sequence[Condition] | None,
    progress_reasons: frozenset[str] = frozenset(),
) -> tuple[Transition, ...]:
    """The changes from ``before`` to ``after`` worth an Event.

    Every object goes through the same first steps, so these are left out: a condition that
    first appears True or merely in progress (a reason in ``progress_reasons``), and a move
    from one in-progress reason to another. Everything else whose status or reason changed is
    a transition. One into progress is not a warning when it comes from anything but True, or
    when it follows a change of the object itself (a new generation: a new prompt being rolled
    out, more replicas being started); leaving True at the same generation (pods failing) is."""
    changed = []
    for cond in after or []:
        old = find_condition(before, cond.type)
        progress = cond.reason in progress_reasons
        if old is None:
            if cond.status == "True" or progress:
                continue
        elif (old.status, old.reason) == (cond.status, cond.reason):
            continue
        elif progress and old.status == cond.status and old.reason in progress_reasons:
            continue
        changed.append(Transition(cond.type, cond.status, cond.reason or "", cond.message or "",
                                  progress=progress and (
                                      old is None or old.status != "True"
                                      or cond.observed_generation != old.observed_generation)))
    return tuple(changed)


def condition(conditions: list[dict[str, Any]] | None, type_: str) -> dict[str, Any] | None:
    """A condition of a status read as plain JSON."""
    return next((c for c in conditions or [] if c.get("type") == type_), None)


def is_true(conditions: list[dict[str, Any]] | None, type_: str) -> bool:
    found = condition(conditions, type_)
    return bool(found and found.get("status") == "True")
