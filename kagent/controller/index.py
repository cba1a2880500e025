"""Which objects depend on which: a change to a Tool, Memory, Secret or Agent re-reconciles
exactly the objects that use it, instead of everything."""

from __future__ import annotations

from collections import defaultdict

from kagent.kube.reconcile import ObjectKey

__all__ = ["DependencyIndex", "ObjectKey"]


class DependencyIndex:
    def __init__(self) -> None:
        self._uses: dict[ObjectKey, set[ObjectKey]] = {}
        self._used_by: defaultdict[ObjectKey, set[ObjectKey]] = defaultdict(set)

    def record(self, dependent: ObjectKey, dependencies: set[ObjectKey]) -> None:
        """Replace what ``dependent`` uses with ``dependencies``."""
        for old in self._uses.get(dependent, set()) - dependencies:
            users = self._used_by.get(old)
            if users is not None:
                users.discard(dependent)
                if not users:
                    del self._used_by[old]
        for new in dependencies:
            self._used_by[new].add(dependent)
        self._uses[dependent] = set(dependencies)

    def forget(self, dependent: ObjectKey) -> None:
        self.record(dependent, set())
        self._uses.pop(dependent, None)

    def dependents(self, dependency: ObjectKey) -> set[ObjectKey]:
        return set(self._used_by.get(dependency, set()))

    def is_used(self, dependency: ObjectKey) -> bool:
        return dependency in self._used_by
