"""How any Kagent component calls an agent over A2A: the workflow engine, agent-as-tool, the CLI
and the benchmarks share this one client.

The agent's card is read from ``<url>/.well-known/agent-card.json`` (so the transport and URL it
advertises are honoured), the message is sent as a user message, and the call waits for the
final answer: a direct reply, or the task's artifacts (or its last status message) once the task
completes. The W3C trace context goes along as request headers.

An :class:`AgentClient` keeps one pooled HTTP client (a bounded number of connections, kept
alive between calls) and remembers each agent's card for a short while, so a call costs one
request, not a new connection, a TLS context and a card fetch. A card is dropped as soon as a
call through it cannot reach the agent, so an agent that moved is found again at once.
Everything read from an agent is bounded: the card and every answer body.

Every call carries the caller's credentials as a bearer token (agents authenticate every
request): an agent pod sends its own projected, audience-bound ServiceAccount token
(``KAGENT_AGENT_TOKEN_FILE``), the controller its ServiceAccount's token, a CLI the
kubeconfig's. A refusal (401, 403) becomes an :class:`AgentCallError` that names the agent and
repeats the agent's reason (which permission is missing).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
from opentelemetry import propagate

from kagent.api.labels import AGENT_TOKEN_FILE_ENV

DEFAULT_TIMEOUT = 300.0
MODEL_METADATA = "kagent.dev/model"
"""Key of a Kagent runtime's answer metadata naming the model that answered (``provider/name``),
which is not always ``spec.model`` when the Agent has ``model.fallbacks``."""
TOOL_CALL_METADATA = "kagent.dev/toolCall"
TOOL_RESULT_METADATA = "kagent.dev/toolResult"
"""Keys of a Kagent runtime's working-status messages reporting a tool call as it starts (id,
name, arguments) and as it finishes (id, name, outcome, content), bounded in size."""
USAGE_METADATA = "kagent.dev/usage"
"""Key of a Kagent runtime's answer metadata holding the turn's model usage, so a caller (the
workflow engine) accounts for tokens without guessing."""
CARD_PATH = "/.well-known/agent-card.json"
CARD_TTL_SECONDS = 30.0
"""How long a fetched card is trusted before it is read again."""
MAX_CARDS = 1024
MAX_CARD_BYTES = 1 << 20
MAX_ANSWER_BYTES = 32 << 20
MAX_CONNECTIONS = 256
"""Connections open at once across all agents; further calls wait for a free one (the wait
counts against their timeout)."""
MAX_IDLE_CONNECTIONS = 64
IDLE_SECONDS = 2.0
"""How long an idle connection is kept: below the usual server keep-alive (uvicorn's is 5 s),
so a connection is not reused just as the agent closes it."""


IN_CLUSTER_TOKEN_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
TOKEN_REREAD_SECONDS = 60.0
"""How often a token file is read again: the kubelet rotates projected tokens in place."""
REFRESH_AT = 0.8
"""Share of a minted token's lifetime after which a new one is minted."""


class AgentCallError(Exception):
    """The agent could not be reached, failed the task, or sent no answer; ``code`` is the
    failure's kind when the agent said (``budget_exceeded``, ``limit_exceeded``, …)."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


FAILURE_METADATA = "kagent.error"
"""Metadata key of a failed task's status message: the kind of failure (a RequestFailure code)."""
FINAL_FAILURES = frozenset({"budget_exceeded"})
"""Failure kinds a prompt retry cannot fix: a Budget used up stays used up until its window
resets (hours away), so a workflow step fails at once instead of spending its retries."""


class AnswerLost(AgentCallError):
    """The request may have reached the agent but no answer came back (the connection broke,
    or a proxy answered 502/503/504 for it): whether the agent ran it is unknown. Re-send it
    with the same message id, so an agent that did run it answers from its record."""


def answer_lost(error: BaseException) -> bool:
    """Whether ``error`` (or what caused it) is a transport failure or a gateway's 502/503/504."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, httpx.TransportError):
            return True
        if isinstance(seen, httpx.HTTPStatusError) and seen.response.status_code in (502, 503, 504):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class Credentials(Protocol):
    """Where a caller's bearer token comes from (read again whenever it may have changed)."""

    async def token(self) -> str | None: ...


@dataclass
class StaticToken:
    """A fixed bearer token (a kubeconfig's token, an API key)."""

    value: str

    async def token(self) -> str | None:
        return self.value


@dataclass
class TokenFile:
    """A token file the kubelet keeps fresh (a projected ServiceAccount token)."""

    path: Path
    _value: str | None = None
    _read_at: float = -1e9

    async def token(self) -> str | None:
        now = time.monotonic()
        if self._value is None or now - self._read_at > TOKEN_REREAD_SECONDS:
            try:
                self._value = self.path.read_text().strip() or None
            except OSError:
                self._value = None
            self._read_at = now
        return self._value


@dataclass
class MintedToken:
    """A token minted on demand (a TokenRequest) and minted again before it expires.

    ``mint`` answers the token and its lifetime in seconds."""

    mint: Any  # Callable[[], Awaitable[tuple[str, float]]]
    _value: str | None = None
    _renew_at: float = 0.0
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def token(self) -> str | None:
        async with self._lock:
            if self._value is None or time.monotonic() >= self._renew_at:
                value, lifetime = await self.mint()
                self._value = value
                self._renew_at = time.monotonic() + lifetime * REFRESH_AT
            return self._value


def default_credentials(environ: dict[str, str] | None = None) -> Credentials | None:
    """This process's own identity: an agent pod's projected token, else a pod's
    ServiceAccount token; None outside a pod (calls go unauthenticated)."""
    import os

    env = os.environ if environ is None else environ
    if env.get(AGENT_TOKEN_FILE_ENV):
        return TokenFile(Path(env[AGENT_TOKEN_FILE_ENV]))
    if "KUBERNETES_SERVICE_HOST" in env and IN_CLUSTER_TOKEN_FILE.exists():
        return TokenFile(IN_CLUSTER_TOKEN_FILE)
    return None


_UNSET: Any = object()
_default_credentials: Credentials | None = _UNSET


def set_default_credentials(credentials: Credentials | None) -> None:
    """The identity :func:`default_agent_client` calls with (the controller sets its own)."""
    global _default_credentials
    _default_credentials = credentials
    for client in list(_DEFAULT_CLIENTS.values()):
        client.credentials = credentials


def _credentials_default() -> Credentials | None:
    global _default_credentials
    if _default_credentials is _UNSET:
        _default_credentials = default_credentials()
    return _default_credentials


def refusal_reason(error: BaseException) -> tuple[int, str] | None:
    """(status, the agent's own message) when ``error`` comes from a 401 or 403 answer."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, httpx.HTTPStatusError) and seen.response.status_code in (401, 403):
            response = seen.response
            try:
                message = str(response.json()["error"]["message"])
            except Exception:  # noqa: BLE001 - not our runtime's body: say what we have
                message = response.reason_phrase or ""
            return response.status_code, message[:2000]
        seen = seen.__cause__ or seen.__context__
    return None


@dataclass(frozen=True)
class Answer:
    """An agent's final text, the model usage it reported (camelCase keys, may be empty) and the
    model that answered (``provider/name``; None when the agent does not say)."""

    text: str
    usage: dict[str, int] = field(default_factory=dict)
    model: str | None = None


def _text_of(parts: Any) -> str:
    return "\n".join(part.text for part in parts if part.HasField("text"))


def answer_text(agent_name: str, response: Any) -> str:
    """The final text of an A2A StreamResponse (a Message or a Task); failures raise."""
    from a2a.types import Role, TaskState

    if response.HasField("message"):
        return _text_of(response.message.parts)
    if not response.HasField("task"):
        raise AgentCallError(f"agent {agent_name} answered neither a message nor a task")
    task = response.task
    state = task.status.state
    status_text = _text_of(task.status.message.parts) if task.status.HasField("message") else ""
    if state == TaskState.TASK_STATE_COMPLETED:
        texts = [_text_of(artifact.parts) for artifact in task.artifacts]
        text = "\n".join(t for t in texts if t) or status_text
        if not text:
            agent_messages = [m for m in task.history if m.role == Role.ROLE_AGENT]
            text = _text_of(agent_messages[-1].parts) if agent_messages else ""
        return text
    if state in (TaskState.TASK_STATE_INPUT_REQUIRED, TaskState.TASK_STATE_AUTH_REQUIRED):
        return f"Agent {agent_name} needs more information: {status_text or '(no question given)'}"
    name = TaskState.Name(state).removeprefix("TASK_STATE_").lower()
    detail = f": {status_text}" if status_text else ""
    code = _answer_metadata(response).get(FAILURE_METADATA)
    raise AgentCallError(f"agent {agent_name} {name} the task{detail}",
                         code=code if isinstance(code, str) else None)


def _answer_metadata(response: Any) -> dict[str, Any]:
    """The metadata of an A2A StreamResponse's final message, as plain data."""
    from google.protobuf.json_format import MessageToDict

    if response.HasField("task") and response.task.status.HasField("message"):
        return MessageToDict(response.task.status.message.metadata)
    if response.HasField("message"):
        return MessageToDict(response.message.metadata)
    return {}


def reported_usage(metadata: dict[str, Any]) -> dict[str, int]:
    """The usage a Kagent runtime puts in its answer's metadata (``kagent.dev/usage``)."""
    usage = metadata.get(USAGE_METADATA) or {}
    if not isinstance(usage, dict):
        return {}
    return {key: int(value) for key, value in usage.items() if isinstance(value, int | float)}


class BodyTooLarge(httpx.HTTPError):
    """A response body larger than the client accepts."""


class _BoundedStream(httpx.AsyncByteStream):
    def __init__(self, stream: httpx.AsyncByteStream, limit: int, url: str) -> None:
        self.stream = stream
        self.limit = limit
        self.url = url

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in self.stream:
            seen += len(chunk)
            if seen > self.limit:
                raise BodyTooLarge(f"the answer from {self.url} is larger than {self.limit} bytes")
            yield chunk

    async def aclose(self) -> None:
        await self.stream.aclose()


class _BoundedTransport(httpx.AsyncHTTPTransport):
    """Refuses response bodies over ``limit`` bytes while they are read, so a hostile or broken
    agent cannot make the caller buffer without end."""

    def __init__(self, limit: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.limit = limit

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _BoundedStream(response.stream, self.limit, str(request.url))
        return response


@dataclass
class _Card:
    expires: float
    client: Any
    """An a2a-sdk client built from the card, on the shared HTTP client."""


class AgentClient:
    """One pooled, bounded HTTP client and a short-lived cache of agent cards (and the a2a
    clients built from them). Use one per event loop; :func:`default_agent_client` gives it."""

    def __init__(self, *, card_ttl: float = CARD_TTL_SECONDS, max_cards: int = MAX_CARDS,
                 max_connections: int = MAX_CONNECTIONS,
                 max_answer_bytes: int = MAX_ANSWER_BYTES,
                 credentials: Credentials | None = _UNSET) -> None:
        """``credentials``: the caller's identity; by default this process's own
        (:func:`default_credentials`, or what :func:`set_default_credentials` set)."""
        from a2a.client import ClientConfig, ClientFactory

        self.credentials = _credentials_default() if credentials is _UNSET else credentials
        limits = httpx.Limits(max_connections=max_connections,
                              max_keepalive_connections=min(MAX_IDLE_CONNECTIONS, max_connections),
                              keepalive_expiry=IDLE_SECONDS)
        self.http = httpx.AsyncClient(
            transport=_BoundedTransport(max_answer_bytes, limits=limits),
            timeout=DEFAULT_TIMEOUT)
        self.factory = ClientFactory(ClientConfig(streaming=False, httpx_client=self.http))
        self.card_ttl = card_ttl
        self.max_cards = max_cards
        self._cards: OrderedDict[str, _Card] = OrderedDict()
        self._fetching: dict[str, asyncio.Future[_Card]] = {}

    async def aclose(self) -> None:
        self._cards.clear()
        await self.http.aclose()

    def forget(self, url: str) -> None:
        """Drop the card of the agent at ``url`` (it moved, or could not be reached)."""
        self._cards.pop(url.rstrip("/"), None)

    async def _card(self, url: str, timeout: float, headers: dict[str, str]) -> _Card:
        now = time.monotonic()
        card = self._cards.get(url)
        if card is not None and card.expires > now:
            return card
        pending = self._fetching.get(url)
        if pending is None:  # one fetch per agent, however many calls wait for it
            pending = asyncio.ensure_future(self._fetch_card(url, timeout, headers))
            self._fetching[url] = pending
            pending.add_done_callback(lambda _: self._fetching.pop(url, None))
        return await asyncio.shield(pending)

    async def _fetch_card(self, url: str, timeout: float, headers: dict[str, str]) -> _Card:
        """Read the card, as part of the call that needed it (its trace headers go along)."""
        from a2a.client.card_resolver import parse_agent_card
        from google.protobuf.json_format import ParseError

        body = bytearray()
        async with self.http.stream("GET", url + CARD_PATH, headers=headers,
                                    timeout=min(timeout, 30.0)) as response:
            response.raise_for_status()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_CARD_BYTES:
                    raise BodyTooLarge(f"the agent card at {url} is larger than {MAX_CARD_BYTES} bytes")
        try:
            client = self.factory.create(parse_agent_card(json.loads(body)))
        except ParseError as error:
            raise ValueError(f"invalid agent card: {error}") from None
        card = _Card(time.monotonic() + self.card_ttl, client)
        self._cards[url] = card
        self._cards.move_to_end(url)
        while len(self._cards) > self.max_cards:
            self._cards.popitem(last=False)
        return card

    async def ask(self, url: str, agent_name: str, message: str, *,
                  timeout: float = DEFAULT_TIMEOUT, message_id: str | None = None,
                  headers: dict[str, str] | None = None) -> Answer:
        """Send ``message`` to the agent served at ``url``; its final text and the model usage
        it reported.

        ``message_id`` is the A2A message id; a caller that may resend the same request (the
        workflow engine after a restart) passes a stable one as the idempotency key."""
        from a2a.client import ClientCallContext
        from a2a.client.errors import A2AClientError
        from a2a.types import Message, Part, Role, SendMessageRequest

        url = url.rstrip("/")
        trace_headers: dict[str, str] = dict(headers or {})
        propagate.inject(trace_headers)
        try:
            card = await self._card(url, timeout, trace_headers)
        except (A2AClientError, httpx.HTTPError, ValueError) as exc:
            raise AgentCallError(f"cannot reach agent {agent_name} at {url}: {exc}") from None
        request = SendMessageRequest(
            message=Message(role=Role.ROLE_USER, message_id=message_id or str(uuid.uuid4()),
                            parts=[Part(text=message)]),
        )
        headers = dict(trace_headers)
        if self.credentials is not None:
            try:
                bearer = await self.credentials.token()
            except Exception as exc:  # noqa: BLE001 - minting failed: say so, naming the agent
                raise AgentCallError(f"cannot get credentials to call agent {agent_name}: "
                                     f"{type(exc).__name__}: {exc}") from None
            if bearer:
                headers["Authorization"] = f"Bearer {bearer}"
        context = ClientCallContext(timeout=timeout, service_parameters=headers)
        final = None
        for attempt in (1, 2):
            try:
                async for response in card.client.send_message(request, context=context):
                    final = response
                break
            except (A2AClientError, httpx.HTTPError) as exc:
                if attempt == 1 and _not_delivered(exc):
                    continue  # the same message (and id) again, on a fresh connection
                refused = refusal_reason(exc)
                if refused is not None:
                    status, reason = refused
                    what = "unauthenticated" if status == 401 else "forbidden"
                    raise AgentCallError(f"agent {agent_name} refused the call ({status} "
                                         f"{what}): {reason}") from None
                self.forget(url)
                lost = answer_lost(exc)
                raise (AnswerLost if lost else AgentCallError)(
                    f"agent {agent_name} failed: {exc}") from None
        if final is None:
            raise AgentCallError(f"agent {agent_name} sent no answer")
        metadata = _answer_metadata(final)
        return Answer(answer_text(agent_name, final), reported_usage(metadata),
                      str(metadata.get(MODEL_METADATA) or "") or None)


def _not_delivered(error: BaseException) -> bool:
    """Whether the request surely never reached the agent: no connection, or a kept-alive
    connection the agent had closed (it hung up without a byte of answer). Such a call is sent
    once more; the message id stays, so an agent that deduplicates answers it once anyway."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, httpx.ConnectError | httpx.RemoteProtocolError):
            return True
        seen = seen.__cause__
    return False


_DEFAULT_CLIENTS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AgentClient] = (
    weakref.WeakKeyDictionary())


def default_agent_client() -> AgentClient:
    """The running event loop's shared client (an HTTP client belongs to one loop)."""
    loop = asyncio.get_running_loop()
    client = _DEFAULT_CLIENTS.get(loop)
    if client is None:
        client = _DEFAULT_CLIENTS[loop] = AgentClient()
    return client


async def ask_agent_at(url: str, agent_name: str, message: str, *,
                       timeout: float = DEFAULT_TIMEOUT, message_id: str | None = None,
                       headers: dict[str, str] | None = None) -> str:
    """Send ``message`` to the agent served at ``url`` and return its final text."""
    answer = await default_agent_client().ask(url, agent_name, message, timeout=timeout,
                                              message_id=message_id, headers=headers)
    return answer.text


async def ask_agent_with_usage(url: str, agent_name: str, message: str, *,
                               timeout: float = DEFAULT_TIMEOUT, message_id: str | None = None
                               ) -> tuple[str, dict[str, int]]:
    """Send ``message`` to the agent served at ``url``; its final text and the model usage it
    reported (empty when the agent reports none)."""
    answer = await default_agent_client().ask(url, agent_name, message, timeout=timeout,
                                              message_id=message_id)
    return answer.text, answer.usage


# --- the Workflow a call is a step of -------------------------------------------------------


WORKFLOW_HEADER = "kagent-workflow"
"""The request header a workflow step's call carries: its Workflow's name and labels (JSON), so
the agent counts it against the Budgets whose workflowSelector matches the Workflow."""
WORKFLOW_HEADER_MAX = 8192
"""Bytes of that header at most (a Workflow's labels fit easily)."""


@dataclass(frozen=True)
class WorkflowClaim:
    """The Workflow a request says it is a step of."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)

    def header(self) -> str:
        return json.dumps({"name": self.name, "labels": dict(self.labels)}, sort_keys=True,
                          separators=(",", ":"))


class InvalidWorkflowClaim(ValueError):
    """A kagent-workflow header that is not what the workflow engine sends."""


def parse_workflow_claim(headers: Mapping[str, str]) -> WorkflowClaim | None:
    """The request's Workflow (None when it names none); raises InvalidWorkflowClaim for a
    header that is too long or not ``{"name": str, "labels": {str: str}}``: refused rather than
    ignored, so a step cannot slip past its Workflow's Budgets with a malformed claim."""
    raw = next((v for k, v in headers.items() if k.lower() == WORKFLOW_HEADER), None)
    if raw is None:
        return None
    if len(raw.encode("utf-8", errors="replace")) > WORKFLOW_HEADER_MAX:
        raise InvalidWorkflowClaim(f"the {WORKFLOW_HEADER} header is longer than "
                                   f"{WORKFLOW_HEADER_MAX} bytes")
    try:
        value = json.loads(raw)
    except ValueError:
        raise InvalidWorkflowClaim(f"the {WORKFLOW_HEADER} header is not JSON") from None
    name = value.get("name") if isinstance(value, dict) else None
    labels = value.get("labels", {}) if isinstance(value, dict) else None
    if not isinstance(name, str) or not name or not isinstance(labels, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        raise InvalidWorkflowClaim(f'the {WORKFLOW_HEADER} header must be {{"name": "<workflow>", '
                                   '"labels": {"<key>": "<value>", …}}')
    return WorkflowClaim(name, labels)
