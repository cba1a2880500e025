"""`kagent invoke`, `kagent chat` and `kagent run`: talking to an agent.

Both speak the runtime's OpenAI-compatible ``POST /v1/chat/completions`` (``model`` = the agent's
name, ``X-Conversation-Id`` for memory). The agent is reached either directly (``--url``, a
local runtime) or, in a cluster, through the API server's service proxy with the kubeconfig's
own credentials — so no port-forward and no Ingress are needed. Agents authenticate every
request: the caller's bearer token goes along (see :mod:`kagent.cli.credentials`).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# lightkube (whose kubeconfig auth we reuse) is built on httpx2, the maintained httpx fork.
import httpx2 as httpx
import typer

from kagent.cli.common import (
    EXIT_ERROR,
    EXIT_NOT_FOUND,
    EXIT_USAGE,
    KubeconfigOption,
    NamespaceOption,
    err_console,
    fail,
    load_config,
    resolve_namespace,
)
from kagent.cli.credentials import (
    PROXY_TOKEN_HEADER,
    SERVICE_ACCOUNT_ENV,
    TOKEN_ENV,
    agent_token,
)

CONVERSATION_HEADER = "X-Conversation-Id"
SERVICE_PORT_NAME = "http"
EXIT_COMMANDS = ("/exit", "/quit")


def service_proxy_path(namespace: str, service: str, port: str = SERVICE_PORT_NAME) -> str:
    """The API server path that proxies to an agent's Service (``…/proxy`` + the agent's path)."""
    return f"/api/v1/namespaces/{namespace}/services/{service}:{port}/proxy"


@dataclass
class AgentTarget:
    """Where an agent's OpenAI-compatible API is, and the HTTP client that reaches it."""

    agent: str
    base_url: str
    client_params: dict[str, Any] = field(default_factory=dict)
    namespace: str | None = None
    """The Agent's namespace (None for a runtime reached by --url): hints name it."""

    @property
    def in_namespace(self) -> str:
        """`` -n NAMESPACE`` for a hint's command (empty for a --url runtime)."""
        return f" -n {self.namespace}" if self.namespace else ""
    token: str | None = None
    """The bearer token the agent checks."""
    token_header: str = "Authorization"

    @property
    def completions_url(self) -> str:
        return f"{self.base_url.rstrip('/')}/v1/chat/completions"

    def client(self, timeout: float) -> httpx.Client:
        params = {**self.client_params, "timeout": httpx.Timeout(timeout, connect=10)}
        return httpx.Client(**params)

    def request_body(self, text: str, stream: bool) -> dict[str, Any]:
        return {"model": self.agent, "messages": [{"role": "user", "content": text}],
                "stream": stream}

    def headers(self, conversation: str | None) -> dict[str, str]:
        headers = {CONVERSATION_HEADER: conversation} if conversation else {}
        if self.token:
            headers[self.token_header] = f"Bearer {self.token}"
        return headers


def direct_target(agent: str | None, url: str, token: str | None = None) -> AgentTarget:
    """A runtime reached directly; with no agent name, ask it (``GET /v1/models``)."""
    base = url.rstrip("/").removesuffix("/v1")
    if not agent:
        try:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            models = httpx.get(f"{base}/v1/models", timeout=10, trust_env=False,
                               headers=headers).json()
            agent = models["data"][0]["id"]
        except (httpx.HTTPError, KeyError, IndexError, ValueError) as error:
            fail(f"cannot reach an agent runtime at {url}: {error}",
                 "is `kagent runtime` (or `kagent run --serve`) running there?")
    return AgentTarget(agent=str(agent), base_url=base, client_params={"trust_env": False},
                       token=token)


def proxy_target(agent: str, namespace: str, config: Any, token: str | None = None) -> AgentTarget:
    """An agent in the cluster, through the API server's service proxy, authenticated exactly
    as the kubeconfig's user (client certificate, token or exec plugin)."""
    from lightkube.config.client_adapter import ConnectionParams

    params = ConnectionParams(trust_env=False).httpx_params(config)
    server = str(params.pop("base_url")).rstrip("/")
    params.pop("timeout", None)
    return AgentTarget(agent=agent, base_url=server + service_proxy_path(namespace, agent),
                       client_params=params, namespace=namespace, token=token,
                       token_header=PROXY_TOKEN_HEADER)


def resolve_target(agent: str | None, url: str | None, namespace: str | None,
                   kubeconfig: Path | None, token: str | None = None) -> AgentTarget:
    if url:
        return direct_target(agent, url, token)
    if not agent:
        fail("name the agent (or give --url of a local runtime)", code=EXIT_USAGE)
    ns = resolve_namespace(namespace, kubeconfig)
    _check_agent_exists(agent, ns, kubeconfig)
    from kagent.local.dev import local_agents_url

    config = load_config(kubeconfig)
    bearer = agent_token(config, kubeconfig, token)
    local = local_agents_url(kubeconfig)
    if local is not None:  # a `kagent dev` cluster: its agents are local processes
        return AgentTarget(agent=agent, base_url=f"{local}/{ns}/{agent}",
                           client_params={"trust_env": False}, namespace=ns, token=bearer)
    return proxy_target(agent, ns, config, bearer)


def _check_agent_exists(agent: str, namespace: str, kubeconfig: Path | None) -> None:
    from kagent.cli.common import api_failure, client
    from kagent.kube import KAGENT_RESOURCES

    try:
        client(kubeconfig).get(KAGENT_RESOURCES["Agent"], agent, namespace=namespace)
    except Exception as error:  # noqa: BLE001
        api_failure(error, f"Agent {agent!r} in namespace {namespace!r}", "Agent", namespace)


def _http_failure(target: AgentTarget, response: httpx.Response) -> None:
    kind = ""
    try:
        error = response.json()["error"]
        message, kind = error["message"], str(error.get("code") or "")
    except (ValueError, KeyError, TypeError, AttributeError):
        message = response.text.strip()[:500] or response.reason_phrase
    if response.status_code == 404:
        fail(f"agent {target.agent!r} answered 404: {message}",
             f"check the agent's name; `kagent get agents{target.in_namespace}` lists them",
             EXIT_NOT_FOUND)
    if response.status_code == 401:
        fail(f"agent {target.agent!r} did not accept the credentials: {message}",
             "see `kagent invoke --help`: --token, your kubeconfig's token, or "
             "KAGENT_SERVICE_ACCOUNT for a minted one")
    if response.status_code == 403:
        ns = target.namespace or "NAMESPACE"
        fail(f"agent {target.agent!r} refused: {message}",
             f"ask an admin to grant it: kubectl create role invoke-{target.agent} -n {ns} "
             f"--verb=invoke --resource=agents.kagent.dev --resource-name={target.agent}, then "
             f"kubectl create rolebinding … -n {ns} --role=invoke-{target.agent} for your user "
             "or ServiceAccount (docs/security.md)")
    if response.status_code == 503 and kind == "budget_unavailable":
        fail(f"agent {target.agent!r} cannot count its Budget right now: {message}",
             f"the Budget's counter store (Redis or PostgreSQL) did not answer; see "
             f"`kagent describe budget{target.in_namespace}` and check that store")
    if response.status_code == 503:
        fail(f"agent {target.agent!r} is not reachable yet: {message}",
             f"is it Ready? see `kagent describe agent {target.agent}{target.in_namespace}`")
    fail(f"agent {target.agent!r} failed ({response.status_code}): {message}")


def complete(target: AgentTarget, text: str, conversation: str | None, timeout: float) -> str:
    """One turn, not streamed; returns the answer."""
    with target.client(timeout) as http:
        try:
            response = http.post(target.completions_url, json=target.request_body(text, False),
                                 headers=target.headers(conversation))
        except httpx.HTTPError as error:
            fail(f"cannot reach agent {target.agent!r} at {target.base_url}: {error}",
                 "check --url, or that the cluster and the agent are up")
    if response.status_code != 200:
        _http_failure(target, response)
    return str(response.json()["choices"][0]["message"]["content"] or "")


def stream(http: httpx.Client, target: AgentTarget, text: str,
           conversation: str | None) -> Iterator[str]:
    """One turn, streamed: yields pieces of the answer as they arrive (server-sent events)."""
    with http.stream("POST", target.completions_url, json=target.request_body(text, True),
                     headers=target.headers(conversation)) as response:
        if response.status_code != 200:
            response.read()
            _http_failure(target, response)
        for line in response.iter_lines():
            if not line.startswith("data:"):
                continue
            data = line[len("data:"):].strip()
            if data == "[DONE]":
                return
            event = json.loads(data)
            if "error" in event:
                fail(f"agent {target.agent!r} failed: {event['error'].get('message')}")
            for choice in event.get("choices") or []:
                piece = (choice.get("delta") or {}).get("content")
                if piece:
                    yield piece


UrlOption = typer.Option(None, "--url", help="Base URL of a runtime to talk to directly "
                         "(e.g. http://127.0.0.1:8080), instead of the cluster.")
TokenOption = typer.Option(None, "--token", envvar=TOKEN_ENV, show_default=False,
                           help="Bearer token (a Kubernetes token or the agent's API key); "
                                "default: the kubeconfig's, or one minted for "
                                f"${SERVICE_ACCOUNT_ENV}.")


def invoke(
    agent: str = typer.Argument(None, help="The Agent's name (optional with --url)."),
    message: str = typer.Option(..., "--message", "-m", help="What to ask."),
    conversation: str = typer.Option(None, "--conversation", "-c",
                                     help="Conversation id, to continue a conversation (memory)."),
    url: str = UrlOption,
    namespace: str = NamespaceOption,
    kubeconfig: Path = KubeconfigOption,
    timeout: float = typer.Option(300, "--timeout", help="Seconds to wait for the answer."),
    token: str = TokenOption,
) -> None:
    """Ask an agent one question and print its answer."""
    target = resolve_target(agent, url, namespace, kubeconfig, token)
    typer.echo(complete(target, message, conversation, timeout))


def chat(
    agent: str = typer.Argument(None, help="The Agent's name (optional with --url)."),
    url: str = UrlOption,
    namespace: str = NamespaceOption,
    kubeconfig: Path = KubeconfigOption,
    conversation: str = typer.Option(None, "--conversation", "-c",
                                     help="Conversation id (default: a new one per session)."),
    timeout: float = typer.Option(300, "--timeout", help="Seconds to wait for each answer."),
    token: str = TokenOption,
) -> None:
    """Chat with an agent: streamed answers, one conversation (memory) per session; /exit leaves."""
    target = resolve_target(agent, url, namespace, kubeconfig, token)
    chat_loop(target, conversation or str(uuid.uuid4()), timeout)


def chat_loop(target: AgentTarget, conversation: str, timeout: float) -> None:
    """Read messages from stdin, stream each answer to stdout. The banner, the prompts and the
    speaker labels go to stderr, so ``kagent chat AGENT < questions > answers`` keeps only the
    answers, one per line."""
    from rich.console import Console

    out = Console(highlight=False)
    chrome = Console(stderr=True, highlight=False)
    chrome.print(f"[bold]Chatting with {target.agent}[/] (conversation {conversation}). "
                 "Type /exit to leave.")
    with target.client(timeout) as http:
        while True:
            try:
                text = chrome.input("[bold cyan]you>[/] ").strip()
            except (EOFError, KeyboardInterrupt):
                chrome.print()
                return
            if not text:
                continue
            if text in EXIT_COMMANDS:
                return
            chrome.print(f"[bold green]{target.agent}>[/] ", end="")
            try:
                for piece in stream(http, target, text, conversation):
                    out.print(piece, end="", markup=False, soft_wrap=True)
            except httpx.HTTPError as error:
                out.print()
                err_console.print(f"[red]error:[/] cannot reach {target.agent}: {error}")
                continue
            except KeyboardInterrupt:
                out.print()
                chrome.print("[dim](interrupted)[/]")
                continue
            out.print()


def run(
    files: list[Path] = typer.Option(..., "--file", "-f",
                                     help="Manifests (Agent, Tool, Memory, Secret) or folders."),
    port: int = typer.Option(8080, "--port", "-p", help="Port for the local runtime."),
    serve: bool = typer.Option(False, "--serve", help="Only serve (no chat); Ctrl-C stops."),
    agent: str = typer.Option(None, "--agent", "-a",
                              help="Which Agent to run when the files hold several."),
    timeout: float = typer.Option(60, "--startup-timeout", help="Seconds to wait for readiness."),
) -> None:
    """Run an agent from manifests on this machine, no cluster, and chat with it."""
    for path in files:
        if not path.exists():
            fail(f"{path} does not exist", "give manifest files or folders with -f", EXIT_USAGE)
    command = [sys.executable, "-m", "kagent", "runtime", "--port", str(port),
               "--host", "127.0.0.1"]
    for path in files:
        command += ["-f", str(path)]
    env = dict(os.environ)
    if agent:
        env["KAGENT_AGENT_NAME"] = agent  # the runtime picks this Agent among the files'
    if serve:
        os.execve(sys.executable, command, env)
    err_console.print(f"starting the agent runtime on 127.0.0.1:{port}…")
    from kagent.local.process import Process, ProcessExited, ReadinessTimeout

    log = Path(tempfile.mkdtemp(prefix="kagent-run-")) / "runtime.log"
    process = Process.start(command, name="the runtime", log_file=log, die_with_parent=True,
                            env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        try:
            process.wait_ready(f"{base}/readyz", timeout=timeout, what="/readyz")
        except ProcessExited as exited:
            code = exited.returncode
            detail = log.read_text(errors="replace").strip()[-2000:]
            several = "several Agents among the files given" in detail
            fail(f"the runtime exited with status {code}: {detail}",
                 "pick one with --agent NAME" if several else
                 "fix the manifests (see the message above) and run again",
                 EXIT_USAGE if code == 2 else EXIT_ERROR)
        except ReadinessTimeout:
            fail(f"the runtime did not become ready in {timeout:.0f}s; the end of its log:\n"
                 f"{process.log_tail(20)}")
        chat_loop(direct_target(None, base), str(uuid.uuid4()), 300)
    finally:
        process.stop(grace=15)
        shutil.rmtree(log.parent, ignore_errors=True)
