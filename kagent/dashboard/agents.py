"""How the dashboard reaches agents for a viewer: their A2A endpoint (chat) and their pods'
/metrics.

Three ways, picked once at start:

- through the **API server's proxy** (``kagent dashboard`` against any cluster): the viewer's
  kubeconfig credentials ride every request, as with ``kagent chat`` — nothing is exposed;
- to the agent's **Service** directly (deployed in the cluster), with the viewer's bearer token
  as ``Authorization`` so an agent that checks callers (TokenReview + SubjectAccessReview, verb
  ``invoke``) sees the viewer, not the dashboard; pod metrics still go through the API server;
- through the **local proxy** of a ``kagent dev`` environment, whose agent pods are processes on
  this machine (the viewer's token, if any, is forwarded the same way).

Whatever the way, :func:`viewer_headers` is the one place that decides which credentials of
the viewer an agent receives.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from kagent.dashboard.access import Viewer
from kagent.dashboard.metrics import MAX_SCRAPE_BYTES, Sample, parse_sample

SERVICE_PORT_NAME = "http"
SCRAPE_TIMEOUT = 3.0
SCRAPE_CONCURRENCY = 8
MAX_SCRAPED_PODS = 200


def service_proxy_url(server: str, namespace: str, service: str,
                      port: str = SERVICE_PORT_NAME) -> str:
    return f"{server.rstrip('/')}/api/v1/namespaces/{namespace}/services/{service}:{port}/proxy"


def pod_proxy_url(server: str, namespace: str, pod: str, port: int | str) -> str:
    return f"{server.rstrip('/')}/api/v1/namespaces/{namespace}/pods/{pod}:{port}/proxy"


async def api_server_auth_header(viewer: Viewer) -> dict[str, str]:
    """The Authorization header the viewer's kubeconfig gives (static token, token file, exec
    plugin, basic), computed by lightkube's own auth flow; empty for client certificates."""
    import httpx2
    from lightkube.config.client_adapter import user_auth

    if viewer.config.user is None:
        return {}
    auth = user_auth(viewer.config.user)
    if auth is None:
        return {}
    request = httpx2.Request("GET", viewer.config.cluster.server)
    flow = auth.async_auth_flow(request)
    signed = await flow.__anext__()
    await flow.aclose()
    header = signed.headers.get("Authorization")
    return {"Authorization": header} if header else {}


async def api_server_client(viewer: Viewer, timeout: float) -> httpx.AsyncClient:
    """An httpx client to the API server as the viewer (TLS, client certificate or token)."""
    from lightkube.config.client_adapter import verify_cluster

    config = viewer.config
    verify = verify_cluster(config.cluster, config.user, config.abs_file, trust_env=False)
    return httpx.AsyncClient(verify=verify, headers=await api_server_auth_header(viewer),
                             timeout=httpx.Timeout(timeout, connect=10), trust_env=False)


def viewer_headers(viewer: Viewer) -> dict[str, str]:
    """What of the viewer's identity an agent called directly receives: their bearer token, so
    the agent authorises the person, never the dashboard."""
    return {"Authorization": f"Bearer {viewer.token}"} if viewer.token else {}


@dataclass(frozen=True)
class PodRef:
    name: str
    agent: str
    metrics_port: int | str


class AgentNetwork(Protocol):
    description: str

    async def chat_client(self, viewer: Viewer, timeout: float) -> httpx.AsyncClient: ...

    def agent_url(self, viewer: Viewer, namespace: str, agent: str) -> str: ...

    async def scrape(self, viewer: Viewer, namespace: str,
                     pods: list[PodRef]) -> dict[str, Sample]: ...


async def _scrape_all(http: httpx.AsyncClient, urls: dict[str, str]) -> dict[str, Sample]:
    """GET every URL (bounded concurrency, size and time); pods that fail are left out."""
    semaphore = asyncio.Semaphore(SCRAPE_CONCURRENCY)
    samples: dict[str, Sample] = {}

    async def one(pod: str, url: str) -> None:
        async with semaphore:
            try:
                async with http.stream("GET", url, timeout=SCRAPE_TIMEOUT) as response:
                    if response.status_code != 200:
                        return
                    body = b""
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        if len(body) > MAX_SCRAPE_BYTES:
                            return
                samples[pod] = parse_sample(body.decode(errors="replace"), time.monotonic())
            except (httpx.HTTPError, ValueError):
                return

    await asyncio.gather(*(one(p, u) for p, u in list(urls.items())[:MAX_SCRAPED_PODS]))
    return samples


class ApiServerNetwork:
    """Agents and their pods through the API server's proxy, with the viewer's credentials."""

    description = "the Kubernetes API server's service proxy"

    async def chat_client(self, viewer: Viewer, timeout: float) -> httpx.AsyncClient:
        return await api_server_client(viewer, timeout)

    def agent_url(self, viewer: Viewer, namespace: str, agent: str) -> str:
        return service_proxy_url(viewer.config.cluster.server, namespace, agent)

    async def scrape(self, viewer: Viewer, namespace: str,
                     pods: list[PodRef]) -> dict[str, Sample]:
        server = viewer.config.cluster.server
        async with await api_server_client(viewer, SCRAPE_TIMEOUT) as http:
            return await _scrape_all(http, {
                p.name: pod_proxy_url(server, namespace, p.name, p.metrics_port) + "/metrics"
                for p in pods})


class ServiceNetwork(ApiServerNetwork):
    """In the cluster: agents at their Services with the viewer's token; metrics as above."""

    description = "the agents' Services, with the viewer's bearer token"

    async def chat_client(self, viewer: Viewer, timeout: float) -> httpx.AsyncClient:
        return httpx.AsyncClient(headers=viewer_headers(viewer), trust_env=False,
                                 timeout=httpx.Timeout(timeout, connect=10))

    def agent_url(self, viewer: Viewer, namespace: str, agent: str) -> str:
        return f"http://{agent}.{namespace}.svc"


class LocalProxyNetwork:
    """A ``kagent dev`` environment: agents behind its local proxy, pods as local processes."""

    description = "the local agent proxy of kagent dev"

    def __init__(self, proxy_url: str) -> None:
        self.proxy_url = proxy_url.rstrip("/")

    async def chat_client(self, viewer: Viewer, timeout: float) -> httpx.AsyncClient:
        return httpx.AsyncClient(headers=viewer_headers(viewer), trust_env=False,
                                 timeout=httpx.Timeout(timeout, connect=10))

    def agent_url(self, viewer: Viewer, namespace: str, agent: str) -> str:
        return f"{self.proxy_url}/{namespace}/{agent}"

    async def scrape(self, viewer: Viewer, namespace: str,
                     pods: list[PodRef]) -> dict[str, Sample]:
        async with httpx.AsyncClient(trust_env=False, timeout=SCRAPE_TIMEOUT) as http:
            try:
                listed = (await http.get(f"{self.proxy_url}/_pods")).json()["pods"]
            except (httpx.HTTPError, ValueError, KeyError):
                return {}
            local = {p["pod"]: p.get("ports") or {} for p in listed
                     if p.get("namespace") == namespace}
            urls = {}
            for pod in pods:
                ports = local.get(pod.name) or {}
                port = ports.get("metrics") or ports.get(SERVICE_PORT_NAME)
                if port:
                    urls[pod.name] = f"http://127.0.0.1:{port}/metrics"
            return await _scrape_all(http, urls)


def pod_ref(doc: dict[str, Any]) -> dict[str, Any] | None:
    """A Ready agent pod and the port its metrics are on (projection for the pods source)."""
    from kagent.controller.render import AGENT_LABEL

    meta = doc.get("metadata") or {}
    agent = (meta.get("labels") or {}).get(AGENT_LABEL)
    ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                for c in (doc.get("status") or {}).get("conditions") or [])
    if not agent or not ready or meta.get("deletionTimestamp"):
        return None
    ports = {p.get("name"): p.get("containerPort")
             for c in (doc.get("spec") or {}).get("containers") or []
             for p in c.get("ports") or []}
    port = ports.get("metrics") or ports.get(SERVICE_PORT_NAME)
    if port is None:
        return None
    return {"name": meta.get("name", ""), "agent": agent, "metricsPort": port}
