"""The dashboard's HTTP app: the page, its assets, and a small JSON + Server-Sent-Events API.

Every ``/api`` route needs a signed-in viewer (:mod:`kagent.dashboard.auth`) and acts with that
viewer's own Kubernetes client, so the API server's RBAC decides what each person sees and does.
Live pages are SSE streams of batched changes (:mod:`kagent.dashboard.live`); actions are plain
JSON POSTs. Bodies, messages, streams and scrapes are bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from kagent.api.labels import WORKFLOW_LABEL
from kagent.api.workflow import WorkflowRun
from kagent.dashboard import views
from kagent.dashboard.access import Clients, Viewer, api_message, can_i, who_am_i
from kagent.dashboard.agents import AgentNetwork, PodRef, pod_ref
from kagent.dashboard.auth import COOKIE, Authenticator, SignInError
from kagent.dashboard.chat import CHAT_TIMEOUT, check_message, stream_turn
from kagent.dashboard.forms import InputError, check_run_input, check_run_name
from kagent.dashboard.live import Feed, Informers, Source
from kagent.dashboard.metrics import Sample, agent_health
from kagent.dashboard.steps import step_detail

log = logging.getLogger("kagent.dashboard")

STATIC = Path(__file__).parent / "static"
MAX_BODY_BYTES = 256 * 1024
RUN_COLUMNS = WorkflowRun.printer_columns
"""Run lists are read as the API server's tables: a run's row, not its steps' outputs."""
METRICS_SECONDS = 5.0
MAX_STREAMS_PER_VIEWER = 32
SSE_PING_SECONDS = 15
NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
                               "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
                               "form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def kagent_resource(kind: str) -> Any:
    from kagent.kube import KAGENT_RESOURCES

    return KAGENT_RESOURCES[kind]


def error(message: str, status: int, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def api_error(err: ApiError, doing: str) -> JSONResponse:
    """An API server refusal as the page shows it: a 403 says plainly it is a permission."""
    code = err.status.code or 500
    if code in (401, 403):
        return error(f"No permission to {doing}: {api_message(err)}", 403, forbidden=True)
    if code == 404:
        return error(f"Not found: {api_message(err)}", 404)
    return error(f"Could not {doing}: {api_message(err)}", code if 400 <= code < 600 else 500)


@dataclass
class Dashboard:
    """What the routes share."""

    auth: Authenticator
    network: AgentNetwork
    allowed_hosts: set[str] | None = None
    """Host headers to answer (DNS-rebinding guard); None answers any."""
    secure_cookies: bool = False
    clients: Clients = field(default_factory=Clients)
    streams: dict[str, int] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)
    informers: dict[str, Informers] = field(default_factory=dict)

    # --- who is asking ----------------------------------------------------------------------

    async def viewer(self, request: Request) -> Viewer | None:
        header = request.headers.get("authorization", "")
        if self.auth.mode == "token" and header.lower().startswith("bearer "):
            return await self.auth.bearer_viewer(header[7:].strip())
        return self.auth.sessions.get(request.cookies.get(COOKIE))

    def client(self, viewer: Viewer) -> AsyncClient:
        return self.clients.for_viewer(viewer).kube

    def http(self, viewer: Viewer) -> httpx2.AsyncClient:
        return self.clients.for_viewer(viewer).http

    def feed(self, viewer: Viewer, namespace: str, sources: list[Source]) -> Feed:
        informers = self.informers.get(viewer.key)
        if informers is None:
            informers = self.informers[viewer.key] = Informers(lambda: self.http(viewer))
        return Feed(informers, namespace, sources)

    async def display_name(self, viewer: Viewer) -> str:
        """The user name the API server knows the viewer by (a kubeconfig only names its
        entry), asked once."""
        if viewer.key not in self.names:
            try:
                self.names[viewer.key] = await who_am_i(self.client(viewer)) or viewer.user
            except Exception:  # noqa: BLE001 — keep the kubeconfig's name
                return viewer.user
        return self.names[viewer.key]

    def set_session(self, response: Response, session: str) -> None:
        response.set_cookie(COOKIE, session, httponly=True, samesite="strict",
                            secure=self.secure_cookies, path="/")


def _invalid_path_name(request: Request) -> str | None:
    """The first path parameter (namespace, name, step) that is not a Kubernetes name."""
    for key, value in request.path_params.items():
        if not (isinstance(value, str) and NAME.fullmatch(value) and len(value) <= 253):
            return str(key)
    return None


async def _json_body(request: Request) -> Any:
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise ValueError("send the body as application/json")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise ValueError(f"the body is larger than {MAX_BODY_BYTES // 1024} KiB")
    try:
        return json.loads(body or b"{}")
    except json.JSONDecodeError as err:
        raise ValueError(f"the body is not valid JSON: {err.msg}") from None


Handler = Callable[[Request, Viewer, Dashboard], Awaitable[Response]]


def needs_viewer(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        dashboard: Dashboard = request.app.state.dashboard
        viewer = await dashboard.viewer(request)
        if viewer is None:
            return error("Sign in first.", 401, signIn=dashboard.auth.mode)
        invalid = _invalid_path_name(request)
        if invalid is not None:
            return error(f"Not a valid {invalid} name.", 400)
        return await handler(request, viewer, dashboard)
    return endpoint


# --- live pages ---------------------------------------------------------------------------------


def _agent_events(agent: str) -> Callable[[dict[str, Any]], dict[str, Any] | None]:
    """Events about the Agent and the objects named after it (Deployment, its pods, …)."""
    def project(doc: dict[str, Any]) -> dict[str, Any] | None:
        involved = (doc.get("involvedObject") or {}).get("name", "")
        if involved == agent or involved.startswith(f"{agent}-"):
            return views.event_row(doc)
        return None
    return project


def _runs_of(workflow: str) -> Callable[[dict[str, Any]], dict[str, Any] | None]:
    def project(doc: dict[str, Any]) -> dict[str, Any] | None:
        row = views.run_row(doc)
        return row if row["workflow"] == workflow else None
    return project


def _child_key(doc: dict[str, Any]) -> str:
    return f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name', '')}"


def agent_children(agent: str) -> list[Source]:
    from lightkube.resources.apps_v1 import Deployment
    from lightkube.resources.autoscaling_v2 import HorizontalPodAutoscaler
    from lightkube.resources.core_v1 import ConfigMap, Pod, Service, ServiceAccount
    from lightkube.resources.policy_v1 import PodDisruptionBudget

    from kagent.controller.render import AGENT_LABEL
    from kagent.kube import ScaledObject

    labels = {AGENT_LABEL: agent}
    kinds = [(Deployment, "Deployment", False), (Service, "Service", False),
             (ConfigMap, "ConfigMap", False), (ServiceAccount, "ServiceAccount", False),
             (HorizontalPodAutoscaler, "HorizontalPodAutoscaler", False),
             (PodDisruptionBudget, "PodDisruptionBudget", False), (Pod, "Pod", False),
             (ScaledObject, "ScaledObject", True)]
    return [Source(f"children:{kind}", resource, kind, views.child_row, labels=labels,
                   optional=optional, key=_child_key) for resource, kind, optional in kinds]


def pods_source(labels: dict[str, Any] | None = None) -> Source:
    from lightkube.operators import exists
    from lightkube.resources.core_v1 import Pod

    from kagent.controller.render import AGENT_LABEL

    return Source("pods", Pod, "Pod", pod_ref, labels=labels or {AGENT_LABEL: exists()},
                  send=False)


async def poll_metrics(feed: Feed, network: AgentNetwork, viewer: Viewer, namespace: str) -> None:
    """Scrape the Ready agent pods the feed knows of; upsert each agent's figures."""
    previous: dict[str, Sample] = {}
    while not feed.listed("pods"):
        await asyncio.sleep(0.2)
    while True:
        pods = list(feed.state.get("pods", {}).values())
        try:
            samples = await network.scrape(viewer, namespace, [
                PodRef(p["name"], p["agent"], p["metricsPort"]) for p in pods]) if pods else {}
        except Exception:  # figures are an aid: said in the log, tried again next round
            log.exception("scraping agent metrics in %s failed", namespace)
            samples = {}
        by_agent: dict[str, list[str]] = {}
        for pod in pods:
            if pod["name"] in samples:
                by_agent.setdefault(pod["agent"], []).append(pod["name"])
        for agent, names in by_agent.items():
            figures = agent_health([samples[n] for n in names], [previous.get(n) for n in names])
            feed.upsert("metrics", agent, {"name": agent, **figures})
        for agent in [a for a in feed.state.get("metrics", {}) if a not in by_agent]:
            feed.delete("metrics", agent)
        previous = samples
        await asyncio.sleep(METRICS_SECONDS)


async def permissions(client: AsyncClient, namespace: str, agent: str | None = None
                      ) -> dict[str, Any]:
    """What the viewer may do here, so the page offers only that (the API server still
    decides when they do it)."""
    checks = {
        "createRuns": can_i(client, namespace, "create", "workflowruns"),
        "cancelRuns": can_i(client, namespace, "patch", "workflowruns"),
        "invokeAgents": can_i(client, namespace, "invoke", "agents", name=agent),
        "readOutputs": can_i(client, namespace, "get", "configmaps", group=""),
    }
    answers = await asyncio.gather(*checks.values())
    return {"name": "permissions", **dict(zip(checks, answers, strict=True))}


async def live_response(request: Request, viewer: Viewer, dashboard: Dashboard, feed: Feed,
                        extra: list[Callable[[], Awaitable[None]]] | None = None) -> Response:
    """Stream ``feed``'s batches as SSE ``changes`` events until the browser leaves."""
    count = dashboard.streams.get(viewer.key, 0)
    if count >= MAX_STREAMS_PER_VIEWER:
        return error(f"Too many open pages ({MAX_STREAMS_PER_VIEWER}); close some tabs.", 429)

    async def events() -> AsyncIterator[dict[str, str]]:
        dashboard.streams[viewer.key] = dashboard.streams.get(viewer.key, 0) + 1
        tasks = [asyncio.create_task(feed.run())]
        tasks += [asyncio.create_task(job()) for job in extra or []]
        try:
            async for ops in feed.batches():
                yield {"event": "changes", "data": json.dumps({"ops": ops}, default=str)}
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                try:
                    await task
                except asyncio.CancelledError:
                    pass  # cancelled just above: the viewer went away
                except Exception:
                    log.exception("a live feed of the dashboard failed")
            dashboard.streams[viewer.key] -= 1

    return EventSourceResponse(events(), ping=SSE_PING_SECONDS,
                               headers={"Cache-Control": "no-store"})


@needs_viewer
async def overview_stream(request: Request, viewer: Viewer, dashboard: Dashboard) -> Response:
    namespace = request.path_params["namespace"]
    client = dashboard.client(viewer)
    feed = dashboard.feed(viewer, namespace, [
        Source("agents", kagent_resource("Agent"), "Agent", views.agent_row),
        Source("workflows", kagent_resource("Workflow"), "Workflow", views.workflow_row),
        Source("runs", kagent_resource("WorkflowRun"), "WorkflowRun", views.run_row,
               table=RUN_COLUMNS),
        pods_source(),
    ])

    async def allowed() -> None:
        feed.reset("permissions", {"permissions": await permissions(client, namespace)})

    async def metrics() -> None:
        await poll_metrics(feed, dashboard.network, viewer, namespace)

    return await live_response(request, viewer, dashboard, feed, [allowed, metrics])


@needs_viewer
async def agent_stream(request: Request, viewer: Viewer, dashboard: Dashboard) -> Response:
    namespace, name = request.path_params["namespace"], request.path_params["name"]
    client = dashboard.client(viewer)
    from lightkube.resources.core_v1 import Event

    from kagent.controller.render import AGENT_LABEL

    feed = dashboard.feed(viewer, namespace, [
        Source("agent", kagent_resource("Agent"), "Agent", views.agent_detail,
               fields={"metadata.name": name}),
        Source("events", Event, "Event", _agent_events(name)),
        *agent_children(name),
        pods_source({AGENT_LABEL: name}),
    ])

    async def allowed() -> None:
        feed.reset("permissions", {"permissions": await permissions(client, namespace, name)})

    async def metrics() -> None:
        await poll_metrics(feed, dashboard.network, viewer, namespace)

    return await live_response(request, viewer, dashboard, feed, [allowed, metrics])


@needs_viewer
async def workflow_stream(request: Request, viewer: Viewer, dashboard: Dashboard) -> Response:
    namespace, name = request.path_params["namespace"], request.path_params["name"]
    client = dashboard.client(viewer)
    feed = dashboard.feed(viewer, namespace, [
        Source("workflow", kagent_resource("Workflow"), "Workflow", views.workflow_detail,
               fields={"metadata.name": name}),
        Source("runs", kagent_resource("WorkflowRun"), "WorkflowRun", _runs_of(name),
               table=RUN_COLUMNS),
    ])

    async def allowed() -> None:
        feed.reset("permissions", {"permissions": await permissions(client, namespace)})

    return await live_response(request, viewer, dashboard, feed, [allowed])


@needs_viewer
async def run_stream(request: Request, viewer: Viewer, dashboard: Dashboard) -> Response:
    namespace, name = request.path_params["namespace"], request.path_params["name"]
    client = dashboard.client(viewer)
    try:
        run = (await client.get(kagent_resource("WorkflowRun"), name,
                                namespace=namespace)).to_dict()
    except ApiError as err:
        return api_error(err, f"read WorkflowRun {name} in namespace {namespace}")
    workflow = (run.get("spec") or {}).get("workflowRef", {}).get("name", "")
    feed = dashboard.feed(viewer, namespace, [
        Source("run", kagent_resource("WorkflowRun"), "WorkflowRun", views.run_detail,
               fields={"metadata.name": name}),
        Source("workflow", kagent_resource("Workflow"), "Workflow", views.workflow_detail,
               fields={"metadata.name": workflow}),
    ])

    async def allowed() -> None:
        feed.reset("permissions", {"permissions": await permissions(client, namespace)})

    return await live_response(request, viewer, dashboard, feed, [allowed])


# --- reads and actions --------------------------------------------------------------------------


@needs_viewer
async def session_info(request: Request, viewer: Viewer, dashboard: Dashboard) -> Response:
    """Who is signed in, and the namespaces they may list (None: they may not list them)."""
    from lightkube.resources.core_v1 import Namespace

    namespaces: list[str] | None
    try:
        namespaces = sorted([ns.metadata.name async for ns in
                             dashboard.client(viewer).list(Namespace) if ns.metadata])
    except ApiError:
        namespaces = None
    except Exception as err:  # noqa: BLE001 — the API server is down: say so, page still loads
        return error(f"Cannot reach the Kubernetes API server: {err}", 502)
    return JSONResponse({"user": await dashboard.display_name(viewer), "mode": dashboard.auth.mode,
                         "defaultNamespace": viewer.default_namespace, "namespaces": namespaces,
                         "agentsVia": dashboard.network.description})


@needs_viewer
async def step_info(request: Request, viewer: Viewer, dashboard: Dashboard) -> Response:
    """A step's input, full output (read from the outputs ConfigMap when it was cut), error
    and tokens."""
    from lightkube.resources.core_v1 import ConfigMap

    namespace, name = request.path_params["namespace"], request.path_params["name"]
    step = request.path_params["step"]
    client = dashboard.client(viewer)
    try:
        run = (await client.get(kagent_resource("WorkflowRun"), name,
                                namespace=namespace)).to_dict()
        ref = (run.get("spec") or {}).get("workflowRef", {}).get("name", "")
        workflow = (await client.get(kagent_resource("Workflow"), ref,
                                     namespace=namespace)).to_dict()
    except ApiError as err:
        return api_error(err, f"read WorkflowRun {name} and its Workflow")
    full: dict[str, str] = {}
    note = None
    if any(s.get("outputRef") for s in (run.get("status") or {}).get("steps") or []):
        configmap = next(s["outputRef"]["configMap"] for s in run["status"]["steps"]
                         if s.get("outputRef"))
        try:
            full = (await client.get(ConfigMap, configmap, namespace=namespace)).data or {}
        except ApiError as err:
            note = (f"The full text is in ConfigMap {configmap}, which you may not read "
                    f"({api_message(err)}); showing the first part kept in the run's status.")
    detail = step_detail(workflow.get("spec") or {}, run, step, dict(full))
    if detail is None:
        return error(f"Run {name} has no step {step}.", 404)
    return JSONResponse({**detail, "note": note})


@needs_viewer
async def start_run(request: Request, viewer: Viewer, dashboard: Dashboard) -> Response:
    namespace, workflow_name = request.path_params["namespace"], request.path_params["name"]
    try:
        body = await _json_body(request)
        run_name = check_run_name(body.get("name") if isinstance(body, dict) else None)
    except ValueError as err:
        return error(str(err), 400, fields=getattr(err, "errors", None))
    client = dashboard.client(viewer)
    try:
        workflow = (await client.get(kagent_resource("Workflow"), workflow_name,
                                     namespace=namespace)).to_dict()
    except ApiError as err:
        return api_error(err, f"read Workflow {workflow_name} in namespace {namespace}")
    try:
        values = check_run_input((workflow.get("spec") or {}).get("input") or [],
                                 body.get("input", {}))
    except InputError as err:
        return error("Check the inputs.", 422, fields=err.errors)
    metadata: dict[str, Any] = {"namespace": namespace,
                                "labels": {WORKFLOW_LABEL: workflow_name}}
    if run_name:
        metadata["name"] = run_name
    else:
        metadata["generateName"] = f"{workflow_name[:50]}-"
    manifest = {"apiVersion": "kagent.dev/v1alpha1", "kind": "WorkflowRun", "metadata": metadata,
                "spec": {"workflowRef": {"name": workflow_name}, "input": values}}
    try:
        created = await client.create(kagent_resource("WorkflowRun")(manifest))
    except ApiError as err:
        return api_error(err, f"start a run of {workflow_name} in namespace {namespace}")
    return JSONResponse({"name": created.metadata.name}, status_code=201)


@needs_viewer
async def cancel_run(request: Request, viewer: Viewer, dashboard: Dashboard) -> Response:
    from lightkube.types import PatchType

    namespace, name = request.path_params["namespace"], request.path_params["name"]
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        return error("send the body as application/json", 400)
    try:
        await dashboard.client(viewer).patch(
            kagent_resource("WorkflowRun"), name, {"spec": {"cancel": True}},
            namespace=namespace, patch_type=PatchType.MERGE)
    except ApiError as err:
        return api_error(err, f"cancel run {name} in namespace {namespace}")
    return JSONResponse({"name": name, "cancel": True})


@needs_viewer
async def chat(request: Request, viewer: Viewer, dashboard: Dashboard) -> Response:
    """One chat turn, streamed back as SSE ``chat`` events."""
    namespace, agent = request.path_params["namespace"], request.path_params["name"]
    try:
        text, context_id, task_id = check_message(await _json_body(request))
    except ValueError as err:
        return error(str(err), 400)
    client = dashboard.client(viewer)
    try:
        await client.get(kagent_resource("Agent"), agent, namespace=namespace)
    except ApiError as err:
        return api_error(err, f"read Agent {agent} in namespace {namespace}")
    if not await can_i(client, namespace, "invoke", "agents", name=agent):
        return error(f"No permission to talk to agent {agent}: your Kubernetes user may not "
                     f"'invoke' agents.kagent.dev in namespace {namespace}.", 403, forbidden=True)
    network = dashboard.network
    url = network.agent_url(viewer, namespace, agent)

    async def events() -> AsyncIterator[dict[str, str]]:
        async with await network.chat_client(viewer, CHAT_TIMEOUT) as http:
            async for event in stream_turn(http, url, agent, text, context_id=context_id,
                                           task_id=task_id):
                yield {"event": "chat", "data": json.dumps(event, default=str)}
        yield {"event": "end", "data": "{}"}

    return EventSourceResponse(events(), ping=SSE_PING_SECONDS,
                               headers={"Cache-Control": "no-store"})


# --- sign-in and the page ------------------------------------------------------------------------


async def sign_in(request: Request) -> Response:
    """Token mode: ``{"token": …}`` → a session cookie."""
    dashboard: Dashboard = request.app.state.dashboard
    try:
        body = await _json_body(request)
        token = body.get("token") if isinstance(body, dict) else None
        if not isinstance(token, str):
            raise SignInError("token: paste your Kubernetes bearer token")
        session, viewer = await dashboard.auth.sign_in_with_token(token)
    except (ValueError, SignInError) as err:
        return error(str(err), 401 if isinstance(err, SignInError) else 400)
    response = JSONResponse({"user": viewer.user})
    dashboard.set_session(response, session)
    return response


async def sign_out(request: Request) -> Response:
    dashboard: Dashboard = request.app.state.dashboard
    dashboard.auth.sessions.drop(request.cookies.get(COOKIE))
    response = JSONResponse({})
    response.delete_cookie(COOKIE, path="/")
    return response


async def index(request: Request) -> Response:
    """The page. In kubeconfig mode, ``?key=`` (the printed URL) signs the browser in."""
    dashboard: Dashboard = request.app.state.dashboard
    key = request.query_params.get("key")
    if key is not None:
        session = dashboard.auth.sign_in_with_key(key)
        if session is None:
            return HTMLResponse(_notice("This link's key is not valid (the dashboard was "
                                        "restarted?). Open the URL `kagent dashboard` printed "
                                        "last."), status_code=401)
        response = RedirectResponse("/", status_code=303)
        dashboard.set_session(response, session)
        return response
    page = STATIC / "index.html"
    if not page.is_file():
        return HTMLResponse(_notice("The dashboard's front-end is not built: run "
                                    "`make dashboard` in the Kagent repository."), 500)
    return HTMLResponse(page.read_text())


def _notice(text: str) -> str:
    from html import escape

    return (f"<!doctype html><meta charset=utf-8><title>Kagent</title>"
            f"<p style='font-family:sans-serif;margin:3em'>{escape(text)}</p>")


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


class Guard:
    """Security headers on every answer; only the expected Host names are answered (a page
    on another site that rebinds its name to this address gets nothing)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        dashboard: Dashboard = scope["app"].state.dashboard
        host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
        if dashboard.allowed_hosts is not None and host not in dashboard.allowed_hosts:
            await Response("unexpected Host header", status_code=421)(scope, receive, send)
            return

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()
                         if k.lower().encode() not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(dashboard: Dashboard) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        for informers in dashboard.informers.values():
            informers.close()
        await dashboard.clients.close()

    ns = "/api/namespaces/{namespace}"
    routes = [
        Route("/", index, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/api/login", sign_in, methods=["POST"]),
        Route("/api/logout", sign_out, methods=["POST"]),
        Route("/api/session", session_info, methods=["GET"]),
        Route(f"{ns}/overview", overview_stream, methods=["GET"]),
        Route(f"{ns}/agents/{{name}}", agent_stream, methods=["GET"]),
        Route(f"{ns}/agents/{{name}}/chat", chat, methods=["POST"]),
        Route(f"{ns}/workflows/{{name}}", workflow_stream, methods=["GET"]),
        Route(f"{ns}/workflows/{{name}}/runs", start_run, methods=["POST"]),
        Route(f"{ns}/runs/{{name}}", run_stream, methods=["GET"]),
        Route(f"{ns}/runs/{{name}}/cancel", cancel_run, methods=["POST"]),
        Route(f"{ns}/runs/{{name}}/steps/{{step}}", step_info, methods=["GET"]),
    ]
    if (STATIC / "assets").is_dir():
        routes.append(Mount("/assets", StaticFiles(directory=STATIC / "assets"), name="assets"))
    app = Starlette(routes=routes, lifespan=lifespan, middleware=[Middleware(Guard)])
    app.state.dashboard = dashboard
    return app
