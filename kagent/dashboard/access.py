"""Whose rights the dashboard acts with, and the Kubernetes clients that carry them.

``kubeconfig`` mode (``kagent dashboard`` on a laptop): the one viewer is the kubeconfig's user,
exactly as kubectl would act. ``token`` mode (deployed in a cluster): every viewer signs in with
their own bearer token, and every API call made for them carries that token; the dashboard's own
ServiceAccount is never used for viewers' requests. Either way the API server decides what a
viewer may see and do, so the dashboard can never exceed the viewer's rights.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
from lightkube import AsyncClient, KubeConfig
from lightkube.config.kubeconfig import SingleConfig
from lightkube.config.models import Cluster, User
from lightkube.core.exceptions import ApiError, ConfigError

FIELD_MANAGER = "kagent-dashboard"
CA_FILE_ENV = "KAGENT_KUBE_CA_FILE"
"""In a cluster: the API server's CA (the Helm chart mounts the kube-root-ca.crt ConfigMap, so
the dashboard needs no ServiceAccount token at all). Default: the pod's service account CA."""
IN_CLUSTER_CA = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
MAX_TOKEN_CLIENTS = 256
"""Viewers whose clients are kept open in token mode; the least recently used closes first."""
MAX_TOKEN_BYTES = 16 * 1024
WATCH_SECONDS = 300
"""A watch is reopened (from its last resourceVersion) after this long, as the API server
expects of clients."""


@dataclass(frozen=True)
class Viewer:
    """The person the dashboard acts for."""

    user: str
    """A name to show (the API server's own answer where it gives one)."""
    config: SingleConfig
    """The cluster and this viewer's credentials."""
    token: str | None = None
    """The viewer's bearer token, when they have one (forwarded to agents they talk to)."""

    @property
    def key(self) -> str:
        """Identifies the viewer's credentials without holding them in the clear."""
        secret = self.token or f"{self.config.fname}:{self.config.context_name}"
        return hashlib.sha256(secret.encode()).hexdigest()

    @property
    def default_namespace(self) -> str:
        return self.config.namespace


def kubeconfig_viewer(path: Path | None, context: str | None = None) -> Viewer:
    """The kubeconfig's user (``path`` None: $KUBECONFIG, ~/.kube/config, or in-cluster)."""
    config = KubeConfig.from_file(path) if path else KubeConfig.from_env()
    single = config.get(context)
    user = single.context.user or single.context_name
    token = single.user.token if single.user is not None else None
    return Viewer(user=str(user), config=single, token=token)


def cluster_only(path: Path | None) -> SingleConfig:
    """The API server's address and CA from a kubeconfig (or the pod's in-cluster files), with
    no credentials at all: token mode adds each viewer's own."""
    if path is not None:
        single = KubeConfig.from_file(path).get()
        cluster = single.cluster
        if cluster.certificate_auth and single.fname is not None:
            cluster = Cluster(server=cluster.server,
                              certificate_auth=str(single.abs_file(cluster.certificate_auth)),
                              certificate_auth_data=cluster.certificate_auth_data,
                              insecure=cluster.insecure)
    else:
        host = os.environ.get("KUBERNETES_SERVICE_HOST")
        if not host:
            raise ConfigError("not running in a cluster: give --kubeconfig for the API server")
        host = f"[{host}]" if ":" in host else host
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        cluster = Cluster(server=f"https://{host}:{port}",
                          certificate_auth=os.environ.get(CA_FILE_ENV) or IN_CLUSTER_CA)
    return KubeConfig.from_one(cluster=cluster).get()


def token_viewer(cluster: SingleConfig, token: str, user: str = "") -> Viewer:
    config = KubeConfig.from_one(cluster=cluster.cluster, user=User(token=token),
                                 namespace=cluster.context.namespace).get()
    return Viewer(user=user or "token user", config=config, token=token)


def new_client(viewer: Viewer) -> AsyncClient:
    # No proxies from the environment: the API server is reached as kubectl reaches it.
    return AsyncClient(config=viewer.config, field_manager=FIELD_MANAGER, trust_env=False)


def new_http(viewer: Viewer) -> httpx2.AsyncClient:
    """A plain HTTP client to the API server as the viewer (lightkube's own connection setup:
    TLS, client certificates, tokens, exec plugins), for lists and watches decoded by the
    dashboard itself — only the fields a page shows, which is several times faster."""
    from lightkube.config.client_adapter import AsyncClient as adapter
    from lightkube.config.client_adapter import ConnectionParams

    timeout = httpx2.Timeout(WATCH_SECONDS + 30, connect=10)
    return adapter(viewer.config, ConnectionParams(trust_env=False, timeout=timeout))


@dataclass
class ViewerClients:
    kube: AsyncClient
    http: httpx2.AsyncClient

    async def close(self) -> None:
        await self.kube.close()
        await self.http.aclose()


class Clients:
    """The API clients of each viewer, bounded, closed when evicted or at shutdown."""

    def __init__(self, limit: int = MAX_TOKEN_CLIENTS) -> None:
        self.limit = limit
        self._clients: OrderedDict[str, ViewerClients] = OrderedDict()
        self._retired: list[ViewerClients] = []

    def for_viewer(self, viewer: Viewer) -> ViewerClients:
        clients = self._clients.get(viewer.key)
        if clients is None:
            clients = self._clients[viewer.key] = ViewerClients(new_client(viewer),
                                                                new_http(viewer))
            while len(self._clients) > self.limit:
                # Streams may still use it: close it later, not under their feet — once as many
                # newer viewers have come since, it is long unused.
                self._retired.append(self._clients.popitem(last=False)[1])
            while len(self._retired) > self.limit:
                asyncio.get_running_loop().create_task(self._retired.pop(0).close())
        self._clients.move_to_end(viewer.key)
        return clients

    async def close(self) -> None:
        for clients in [*self._clients.values(), *self._retired]:
            await clients.close()
        self._clients.clear()
        self._retired.clear()


async def who_am_i(client: AsyncClient) -> str | None:
    """The user name the API server sees for these credentials (SelfSubjectReview); None when
    the credentials are refused. Other errors raise."""
    from lightkube.resources.authentication_v1 import SelfSubjectReview

    try:
        review = await client.create(SelfSubjectReview(metadata={}))  # type: ignore[arg-type]
    except ApiError as error:
        if error.status.code == 401:
            return None
        if error.status.code in (403, 404):  # review API off: the credentials still worked
            return ""
        raise
    info = review.status.userInfo if review.status else None
    return (info.username if info else "") or ""


async def can_i(client: AsyncClient, namespace: str, verb: str, resource: str,
                group: str = "kagent.dev", name: str | None = None,
                subresource: str | None = None) -> bool:
    """Whether the viewer may ``verb`` the resource (SelfSubjectAccessReview, as `kubectl auth
    can-i`). Any failure to ask counts as no."""
    from lightkube.resources.authorization_v1 import SelfSubjectAccessReview

    body: dict[str, Any] = {"namespace": namespace, "verb": verb, "resource": resource,
                            "group": group}
    if name:
        body["name"] = name
    if subresource:
        body["subresource"] = subresource
    review = SelfSubjectAccessReview.from_dict({
        "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": body}})
    try:
        answer = await client.create(review)
    except Exception:  # noqa: BLE001 — no answer is no permission
        return False
    return bool(answer.status and answer.status.allowed)


def api_message(error: ApiError) -> str:
    return str(error.status.message or error.status.reason or error)
