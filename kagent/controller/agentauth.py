"""Each agent's right to check its callers: the ClusterRoleBinding of its ServiceAccount to the
chart's auth-delegation ClusterRole (TokenReview and SubjectAccessReview, as
``system:auth-delegator``).

A cluster-scoped object cannot be owned by a namespaced Agent, so it is not one of the owned
children the reconciler applies and prunes: it is applied beside them and deleted when the Agent
goes (or opts out of authentication).
"""

from __future__ import annotations

import logging
import os

from lightkube import AsyncClient

from kagent.api import Agent
from kagent.controller.cache import manifest_digest
from kagent.controller.render import AGENT_AUTH_CLUSTER_ROLE, auth_binding, auth_binding_name
from kagent.kube import apply_raw, is_not_found, raw_resource

log = logging.getLogger("kagent.controller.agentauth")

CLUSTER_ROLE_ENV = "KAGENT_AGENT_AUTH_CLUSTER_ROLE"
"""The chart's name for the auth-delegation ClusterRole (it carries the release name)."""
_ABSENT = ""


class AuthBindings:
    """Applies each agent's auth ClusterRoleBinding once per change; deletes it with the Agent."""

    def __init__(self, client: AsyncClient, cluster_role: str | None = None) -> None:
        self.client = client
        self.cluster_role = cluster_role or os.environ.get(CLUSTER_ROLE_ENV) or AGENT_AUTH_CLUSTER_ROLE
        self._done: dict[tuple[str, str], str] = {}
        """(namespace, name) → digest of the binding applied, or _ABSENT once deleted."""

    def forget_all(self) -> None:
        self._done.clear()

    async def ensure(self, agent: Agent) -> None:
        namespace, name = str(agent.metadata.namespace), str(agent.metadata.name)
        manifest = auth_binding(agent, self.cluster_role)
        if manifest is None:
            await self._delete(namespace, name)
            return
        digest = manifest_digest(manifest)
        if self._done.get((namespace, name)) == digest:
            return
        await apply_raw(self.client, manifest)
        self._done[(namespace, name)] = digest

    async def remove(self, namespace: str, name: str) -> None:
        """The Agent is gone: its binding goes too."""
        await self._delete(namespace, name)
        self._done.pop((namespace, name), None)

    async def _delete(self, namespace: str, name: str) -> None:
        if self._done.get((namespace, name)) == _ABSENT:
            return
        try:
            await self.client.delete(raw_resource("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
                                     auth_binding_name(namespace, name))
            log.info("deleted the auth ClusterRoleBinding of agent %s/%s", namespace, name)
        except Exception as error:  # noqa: BLE001
            if not is_not_found(error):
                raise
        self._done[(namespace, name)] = _ABSENT
