"""Agent pods realised as local processes: the kubelet and kube-proxy of ``kagent dev``.

In a cluster an agent pod runs ``kagent runtime`` in a container. On the local control plane the
pods are scheduled onto kwok's fake node, and this module gives them a real body: for every agent
pod bound to the node it starts the pod's own command — the ConfigMap the controller rendered
mounted as files, the Secrets it references as environment variables, its ports mapped to free
local ones — and stops it when the pod goes away. A pod becomes Ready (kwok's dev stage waits for
the ``kagent.dev/ready-locally`` annotation) only once its process answers its readiness probe,
so a Deployment's rollout waits for real processes exactly as it waits for real containers.

Services are played by a small reverse proxy on one local port: ``/<namespace>/<agent>/…`` goes to
a Ready process of that agent, round robin. The workflow engine, ``kagent chat`` and the agents'
own agent-as-tool calls reach agents through it.

The planning (pod → command, environment, files) is pure; :class:`LocalPods` is the I/O shell.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import re
import shutil
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from kagent.api.labels import AGENT_LABEL
from kagent.api.labels import LOCAL_READY_ANNOTATION as READY_ANNOTATION
from kagent.kube import is_not_found
from kagent.local.process import Process

logger = logging.getLogger("kagent.dev.pods")

PREFIX_HEADER = "X-Forwarded-Prefix"
"""Tells a runtime behind the proxy the path prefix clients use, for its agent card URLs."""
RESYNC_SECONDS = 1.0
PROBE_TIMEOUT = 2.0
MAX_GRACE_SECONDS = 10.0
RESTART_BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0)


class LaunchError(Exception):
    """The pod cannot be started as written (a missing Secret, say); ``str()`` says why."""


@dataclass(frozen=True)
class LaunchPlan:
    """What it takes to run one pod's agent container on this machine."""

    argv: list[str]
    env: dict[str, str]
    files: dict[str, bytes]
    """Files to write before starting, relative to the pod's folder (mounted volumes)."""
    dirs: list[str]
    """Empty folders to create, relative to the pod's folder (emptyDir volumes)."""
    http_port: int
    """The local port of the container's ``http`` port."""


Lookup = Mapping[tuple[str, str], Mapping[str, str]]
"""(kind, name) → decoded data, for the ConfigMaps and Secrets a pod references."""


def agent_container(pod: Mapping[str, Any]) -> dict[str, Any]:
    containers = pod["spec"]["containers"]
    return next((c for c in containers if c.get("name") == "agent"), containers[0])


def referenced_objects(pod: Mapping[str, Any]) -> set[tuple[str, str]]:
    """The (kind, name) of every ConfigMap and Secret the pod's agent container needs."""
    found: set[tuple[str, str]] = set()
    for volume in pod["spec"].get("volumes") or []:
        if "configMap" in volume:
            found.add(("ConfigMap", volume["configMap"]["name"]))
        if "secret" in volume:
            found.add(("Secret", volume["secret"]["secretName"]))
    for env in agent_container(pod).get("env") or []:
        source = env.get("valueFrom") or {}
        if "secretKeyRef" in source:
            found.add(("Secret", source["secretKeyRef"]["name"]))
        if "configMapKeyRef" in source:
            found.add(("ConfigMap", source["configMapKeyRef"]["name"]))
    return found


def _volume_files(volume: Mapping[str, Any], lookup: Lookup) -> dict[str, str] | None:
    """File name → content of a configMap or secret volume; None for any other volume."""
    for kind, key, name_key in (("ConfigMap", "configMap", "name"),
                                ("Secret", "secret", "secretName")):
        if key in volume:
            source = volume[key]
            data = lookup.get((kind, source[name_key]))
            if data is None:
                if source.get("optional"):
                    return {}
                raise LaunchError(f'{kind} "{source[name_key]}" (volume {volume["name"]}) not found')
            items = source.get("items")
            if not items:
                return dict(data)
            return {item["path"]: data[item["key"]] for item in items if item["key"] in data}
    return None


def _field_value(path: str, pod: Mapping[str, Any]) -> str:
    meta = pod["metadata"]
    values = {
        "metadata.name": meta["name"],
        "metadata.namespace": meta["namespace"],
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": pod["spec"].get("nodeName", ""),
        "spec.serviceAccountName": pod["spec"].get("serviceAccountName", ""),
        "status.podIP": "127.0.0.1",
        "status.hostIP": "127.0.0.1",
    }
    match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if match:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    return values.get(path, "")


def _env_value(env: Mapping[str, Any], pod: Mapping[str, Any], lookup: Lookup) -> str | None:
    if "value" in env:
        return str(env["value"])
    source = env.get("valueFrom") or {}
    if "fieldRef" in source:
        return _field_value(source["fieldRef"]["fieldPath"], pod)
    for kind, key in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
        if key in source:
            ref = source[key]
            value = (lookup.get((kind, ref["name"])) or {}).get(ref["key"])
            if value is None:
                if ref.get("optional"):
                    return None
                raise LaunchError(f'{kind} "{ref["name"]}" has no key "{ref["key"]}" '
                                  f'(env {env["name"]})')
            return value
    return None


def plan_launch(
    pod: Mapping[str, Any],
    lookup: Lookup,
    *,
    pod_dir: Path,
    ports: Mapping[int, int],
    base_env: Mapping[str, str],
    overrides: Mapping[str, str],
) -> LaunchPlan:
    """The local command for a pod's agent container (pure).

    Mount paths in the arguments become folders under ``pod_dir``; container ports in the
    arguments become the local ports in ``ports``; ``overrides`` win over the pod's own
    environment (the dev proxy's address for agent-to-agent calls, a scripted model's URL).
    """
    container = agent_container(pod)
    files: dict[str, bytes] = {}
    dirs: list[str] = []
    mounts: dict[str, str] = {}
    volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
    for mount in container.get("volumeMounts") or []:
        volume = volumes.get(mount["name"])
        if volume is None:
            raise LaunchError(f'volume "{mount["name"]}" is mounted but not declared')
        local = f"volumes/{mount['name']}"
        mounts[mount["mountPath"].rstrip("/")] = str(pod_dir / local)
        content = _volume_files(volume, lookup)
        if content is None:
            dirs.append(local)
        else:
            files.update({f"{local}/{name}": text.encode() for name, text in content.items()})

    def local_arg(arg: str) -> str:
        for mount_path, local_path in sorted(mounts.items(), key=lambda m: -len(m[0])):
            if arg == mount_path or arg.startswith(mount_path + "/"):
                return local_path + arg[len(mount_path):]
        if arg.isdigit() and int(arg) in ports:
            return str(ports[int(arg)])
        return arg

    command = list(container.get("command") or ["kagent"])
    if command[0] == "kagent":
        command = [sys.executable, "-m", "kagent", *command[1:]]
    argv = [*command, *(local_arg(a) for a in container.get("args") or [])]
    if argv[3:4] == ["runtime"] and "--host" not in argv:
        argv += ["--host", "127.0.0.1"]

    env = {k: base_env[k] for k in ("PATH", "HOME", "LANG", "LC_ALL", "PYTHONPATH", "VIRTUAL_ENV")
           if k in base_env}
    for entry in container.get("env") or []:
        value = _env_value(entry, pod, lookup)
        if value is not None:
            env[entry["name"]] = value
    if "/tmp" in mounts:
        env["TMPDIR"] = mounts["/tmp"]
    env.update(overrides)
    http = next((p["containerPort"] for p in container.get("ports") or []
                 if p.get("name") == "http"), None)
    if http is None or http not in ports:
        raise LaunchError("the agent container declares no port named http")
    return LaunchPlan(argv=argv, env=env, files=files, dirs=dirs, http_port=ports[http])


@dataclass
class LocalPod:
    """One pod's process and what the proxy needs to know of it."""

    namespace: str
    name: str
    agent: str
    uid: str
    directory: Path
    plan: LaunchPlan | None = None
    process: Process | None = None
    ready: bool = False
    marked_ready: bool = False
    restarts: int = 0
    next_start: float = 0.0
    problem: str | None = None
    ports: dict[str, int] = field(default_factory=dict)
    """Local port of each named container port (the dashboard scrapes ``metrics``)."""

    @property
    def url(self) -> str:
        assert self.plan is not None
        return f"http://127.0.0.1:{self.plan.http_port}"

    def running(self) -> bool:
        return self.process is not None and self.process.alive()


@dataclass
class LocalPods:
    """Keep one local process per agent pod on the fake node; serve them behind one proxy."""

    client: Any
    """A lightkube AsyncClient."""
    workdir: Path
    proxy_port: int
    overrides: dict[str, str] = field(default_factory=dict)
    pods: dict[str, LocalPod] = field(default_factory=dict)
    _round_robin: dict[tuple[str, str], itertools.count[int]] = field(default_factory=dict)

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}"

    def agent_url_template(self) -> str:
        return self.proxy_url + "/{namespace}/{name}"

    # --- the kubelet half -------------------------------------------------------------------

    async def run(self) -> None:
        try:
            while True:
                try:
                    await self.sync()
                except Exception:  # noqa: BLE001 — keep going; the next pass retries
                    logger.exception("syncing agent pods failed")
                await asyncio.sleep(RESYNC_SECONDS)
        finally:
            await asyncio.gather(*(self._stop(pod) for pod in list(self.pods.values())))

    async def sync(self) -> None:
        from lightkube import ALL_NS
        from lightkube.operators import exists
        from lightkube.resources.core_v1 import Pod

        listed = [p.to_dict() async for p in self.client.list(
            Pod, namespace=ALL_NS, labels={AGENT_LABEL: exists()})]
        wanted = {p["metadata"]["uid"]: p for p in listed
                  if p["spec"].get("nodeName") and not p["metadata"].get("deletionTimestamp")}
        for uid in [uid for uid in self.pods if uid not in wanted]:
            await self._stop(self.pods.pop(uid))
        loop = asyncio.get_running_loop()
        for uid, doc in wanted.items():
            pod = self.pods.get(uid)
            if pod is None and READY_ANNOTATION in (doc["metadata"].get("annotations") or {}):
                # Ready from an earlier realiser (the dev cluster was stopped and started): its
                # process is gone, so the pod goes too, like pods on a rebooted node; its
                # ReplicaSet makes a fresh one that becomes Ready only when its process is.
                await self._delete(doc)
                continue
            if pod is None:
                meta = doc["metadata"]
                pod = self.pods[uid] = LocalPod(
                    namespace=meta["namespace"], name=meta["name"],
                    agent=meta["labels"][AGENT_LABEL], uid=uid,
                    directory=self.workdir / "pods" / meta["namespace"] / meta["name"])
            if not pod.running() and loop.time() >= pod.next_start:
                await self._start(pod, doc)
            elif pod.running():
                await self._probe(pod)

    async def _start(self, pod: LocalPod, doc: dict[str, Any]) -> None:
        from kagent.local.services import free_port

        loop = asyncio.get_running_loop()
        if pod.process is not None:  # it ran and exited: restart with backoff, like a kubelet
            pod.restarts += 1
            logger.warning("pod %s/%s %s; restarting", pod.namespace, pod.name,
                           pod.process.exit_description())
            await pod.process.stop_async(grace=0)  # whatever it left in its process group
        pod.ready = False
        try:
            lookup = await self._lookup(doc)
            ports = {p["containerPort"]: free_port()
                     for p in agent_container(doc).get("ports") or []}
            pod.plan = plan_launch(doc, lookup, pod_dir=pod.directory, ports=ports,
                                   base_env=os.environ, overrides=self._overrides())
            pod.ports = {p["name"]: ports[p["containerPort"]]
                         for p in agent_container(doc).get("ports") or [] if p.get("name")}
        except LaunchError as error:
            if pod.problem != str(error):
                logger.warning("pod %s/%s cannot start: %s", pod.namespace, pod.name, error)
            pod.problem = str(error)
            pod.next_start = loop.time() + RESTART_BACKOFF[0]
            return
        pod.problem = None
        if pod.directory.exists():
            shutil.rmtree(pod.directory / "volumes", ignore_errors=True)
        for relative, content in pod.plan.files.items():
            target = pod.directory / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        for relative in pod.plan.dirs:
            (pod.directory / relative).mkdir(parents=True, exist_ok=True)
        # Its own process group, stopped as a whole; killed by the kernel if the realiser dies.
        pod.process = Process.start(
            pod.plan.argv, name=f"pod {pod.namespace}/{pod.name}",
            log_file=pod.directory / "agent.log", append_log=True, env=pod.plan.env,
            cwd=pod.directory, die_with_parent=True)
        backoff = RESTART_BACKOFF[min(pod.restarts, len(RESTART_BACKOFF) - 1)]
        pod.next_start = loop.time() + backoff
        logger.info("started pod %s/%s (agent %s) on port %d", pod.namespace, pod.name, pod.agent,
                    pod.plan.http_port)

    def _overrides(self) -> dict[str, str]:
        return {"KAGENT_AGENT_URL_TEMPLATE": self.agent_url_template(), **self.overrides}

    async def _lookup(self, doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, str]]:
        import base64

        from lightkube.core.exceptions import ApiError
        from lightkube.resources.core_v1 import ConfigMap, Secret

        found: dict[tuple[str, str], dict[str, str]] = {}
        for kind, name in referenced_objects(doc):
            res = ConfigMap if kind == "ConfigMap" else Secret
            try:
                obj = await self.client.get(res, name, namespace=doc["metadata"]["namespace"])
            except ApiError as error:
                if is_not_found(error):
                    continue
                raise
            if kind == "ConfigMap":
                found[(kind, name)] = dict(obj.data or {})
            else:
                found[(kind, name)] = {k: base64.b64decode(v).decode()
                                       for k, v in (obj.data or {}).items()}
        return found

    async def _probe(self, pod: LocalPod) -> None:
        if pod.ready and pod.marked_ready:
            return
        try:
            async with httpx.AsyncClient(timeout=PROBE_TIMEOUT, trust_env=False) as http:
                ok = (await http.get(pod.url + "/readyz")).status_code == 200
        except httpx.HTTPError:
            ok = False
        if not ok:
            return
        pod.ready = True
        if not pod.marked_ready:
            await self._mark_ready(pod)

    async def _delete(self, doc: dict[str, Any]) -> None:
        from lightkube.core.exceptions import ApiError
        from lightkube.resources.core_v1 import Pod

        meta = doc["metadata"]
        logger.info("deleting stale pod %s/%s (no local process)", meta["namespace"], meta["name"])
        try:
            await self.client.delete(Pod, meta["name"], namespace=meta["namespace"],
                                     grace_period=0)
        except ApiError as error:
            if not is_not_found(error):
                raise

    async def _mark_ready(self, pod: LocalPod) -> None:
        from lightkube.core.exceptions import ApiError
        from lightkube.resources.core_v1 import Pod
        from lightkube.types import PatchType

        try:
            await self.client.patch(Pod, pod.name, {"metadata": {"annotations": {
                READY_ANNOTATION: "true"}}}, namespace=pod.namespace, patch_type=PatchType.MERGE)
        except ApiError as error:
            if not is_not_found(error):
                raise
        pod.marked_ready = True
        logger.info("pod %s/%s is ready at %s", pod.namespace, pod.name, pod.url)

    async def _stop(self, pod: LocalPod) -> None:
        pod.ready = False
        if pod.process is None:
            return
        if pod.running():
            logger.info("stopping pod %s/%s", pod.namespace, pod.name)
        await pod.process.stop_async(grace=MAX_GRACE_SECONDS)

    # --- the Service half ---------------------------------------------------------------------

    def endpoints(self, namespace: str, agent: str) -> list[str]:
        """URLs of the agent's Ready local pods."""
        return sorted(p.url for p in self.pods.values()
                      if p.namespace == namespace and p.agent == agent and p.ready and p.running())

    def pick(self, namespace: str, agent: str) -> str | None:
        urls = self.endpoints(namespace, agent)
        if not urls:
            return None
        counter = self._round_robin.setdefault((namespace, agent), itertools.count())
        return urls[next(counter) % len(urls)]

    def proxy_app(self) -> Any:
        """The Starlette app that plays every agent's Service."""
        from starlette.applications import Starlette
        from starlette.background import BackgroundTask
        from starlette.requests import Request
        from starlette.responses import JSONResponse, Response, StreamingResponse
        from starlette.routing import Route

        http = httpx.AsyncClient(timeout=httpx.Timeout(None, connect=5), trust_env=False)
        hop_by_hop = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
                      "proxy-authorization", "proxy-authenticate", "content-length"}

        async def forward(request: Request) -> Response:
            namespace = request.path_params["namespace"]
            agent = request.path_params["agent"]
            target = self.pick(namespace, agent)
            if target is None:
                return JSONResponse({"error": {
                    "message": f'no Ready pod of Agent "{agent}" in namespace "{namespace}"',
                    "type": "unavailable"}}, status_code=503)
            headers = {k: v for k, v in request.headers.items() if k.lower() not in hop_by_hop}
            headers[PREFIX_HEADER] = f"/{namespace}/{agent}"
            upstream = http.build_request(
                request.method, f"{target}/{request.path_params.get('path', '')}",
                params=request.query_params, headers=headers, content=request.stream())
            try:
                response = await http.send(upstream, stream=True)
            except httpx.HTTPError as error:
                return JSONResponse({"error": {"message": f"agent {agent} unreachable: {error}",
                                               "type": "unavailable"}}, status_code=502)
            return StreamingResponse(
                response.aiter_raw(), status_code=response.status_code,
                headers={k: v for k, v in response.headers.items()
                         if k.lower() not in hop_by_hop},
                background=BackgroundTask(response.aclose))

        async def health(_: Request) -> Response:
            return JSONResponse({"pods": [
                {"namespace": p.namespace, "pod": p.name, "agent": p.agent, "ready": p.ready,
                 "url": p.url if p.plan else None, "ports": p.ports, "restarts": p.restarts,
                 "problem": p.problem}
                for p in self.pods.values()]})

        @contextlib.asynccontextmanager
        async def lifespan(_: Starlette) -> AsyncIterator[None]:
            yield
            await http.aclose()

        methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
        return Starlette(
            routes=[Route("/_pods", health, methods=["GET"]),
                    Route("/{namespace}/{agent}", forward, methods=methods),
                    Route("/{namespace}/{agent}/{path:path}", forward, methods=methods)],
            lifespan=lifespan)


async def serve_local_pods(kubeconfig: Path, workdir: Path, proxy_port: int,
                           overrides: Mapping[str, str]) -> None:
    """Run the pod realiser and its proxy until cancelled (``kagent dev`` runs this detached)."""
    import uvicorn

    from kagent.kube import async_client

    pods = LocalPods(async_client(kubeconfig), workdir, proxy_port, overrides=dict(overrides))
    server = uvicorn.Server(uvicorn.Config(pods.proxy_app(), host="127.0.0.1", port=proxy_port,
                                           log_level="warning", lifespan="on"))
    realiser = asyncio.create_task(pods.run())
    try:
        await server.serve()
    finally:
        realiser.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await realiser
