"""The contract every reconciler keeps, whatever kind it owns.

A reconciler is level-based (controller-runtime style): given a key it reads the object and what it
refers to from the watch-fed cache, makes the world match, and returns a :class:`Result` saying
what it learned. It never sleeps, never loops on its own and never posts Events itself: the
runner (``kagent.controller.manager``) does that from the Result, the same way for every kind:

- ``requeue_after``: look at the key again after this many seconds even if no watch event comes
  (a rollout in progress, an MCP refresh, a run's deadline). None: only on events and the
  periodic resync.
- ``dependencies``: the objects the reconcile read (Tools, Memory, Secrets, Agents …); a change
  to any of them queues this key again. None leaves the recorded set as it was.
- ``transitions``: conditions whose status or reason changed, worth telling; each becomes a
  Kubernetes Event (Warning when the condition turned False and is not mere progress, else
  Normal). See :func:`kagent.kube.conditions.transitions` for what is left out.
- ``gone``: the object no longer exists (or is being deleted); its dependencies are forgotten.

Errors are raised, not returned: the runner logs them, counts them
(``kagent_controller_reconcile_errors_total``), records a ``ReconcileFailed`` Warning Event on the
object (once per distinct message) and retries the key with exponential backoff.

This module sits at the bottom of the layers so the workflow engine can return the same Result.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

ObjectKey = tuple[str, str, str]
"""(kind, namespace, name)."""


@dataclass(frozen=True)
class Transition:
    """A condition whose status or reason changed in this reconcile."""

    type: str
    status: str
    """"True", "False" or "Unknown"."""
    reason: str
    message: str
    progress: bool = False
    """Not True yet, but on its way (a rollout in progress): not a warning."""
    warning: bool | None = None
    """Whether the Event is a Warning; by default when the condition is neither True nor progress
    (a phase such as a run's ``Failed`` says so itself)."""

    @property
    def event_type(self) -> str:
        warning = self.warning if self.warning is not None else not (self.status == "True" or self.progress)
        return "Warning" if warning else "Normal"


@dataclass(frozen=True)
class Result:
    """What one reconcile learned; see the module docstring."""

    requeue_after: float | None = None
    dependencies: frozenset[ObjectKey] | None = None
    transitions: tuple[Transition, ...] = ()
    gone: bool = False

    @classmethod
    def forget(cls) -> Result:
        """The object is gone: nothing to requeue, nothing it depends on."""
        return cls(gone=True, dependencies=frozenset())


class Reconciler(Protocol):
    """One reconciler per kind (or family of kinds)."""

    async def reconcile(self, key: ObjectKey) -> Result: ...


class ObjectReader(Protocol):
    """Read access to the watch-fed cache. Objects are the cache's trimmed views (plain dicts):
    callers must never mutate them nor write them back."""

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None: ...

    def list(self, kind: str, namespace: str | None = None) -> Iterable[dict[str, Any]]: ...


@dataclass(frozen=True)
class Verdict:
    """The outcome of a check that becomes a condition: status, a CamelCase reason, a sentence."""

    ok: bool
    reason: str
    message: str
