"""Who may call this agent: authentication and authorization of every A2A and OpenAI request.

Done as kube-rbac-proxy does it, so plain Kubernetes RBAC decides who may talk to which agent:
the caller's bearer token is checked with a TokenReview, and the user it names is authorized
with a SubjectAccessReview for verb ``invoke`` on ``agents.kagent.dev`` with the Agent's
namespace and name. Both decisions are cached briefly (bounded caches, short lifetimes), so a
busy caller costs the API server two requests a minute, not two per message, and a revoked
binding stops working within the authorization cache's lifetime.

Applications outside the cluster may present one of the API keys the Agent names instead
(``spec.auth.apiKeys``). The probes, metrics and the agent card stay open: the kubelet and
Prometheus carry no token, and the card is how a client learns which schemes the agent takes.

The API server's service proxy (how ``kagent chat`` reaches an agent) consumes the
``Authorization`` header itself, so a token may also come in ``Kagent-Authorization``.

A request that says it is a workflow step (the ``kagent-workflow`` header, which decides the
Budgets selecting Workflows it counts against) must come from a caller that runs workflows: one
allowed to ``update`` ``workflowruns/status`` in the agent's namespace (the controller, or an
administrator). Anyone else could otherwise spend a Workflow's Budget by naming the Workflow.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from cachetools import TTLCache
from starlette.types import ASGIApp, Receive, Scope, Send

from kagent.agentclient import WORKFLOW_HEADER
from kagent.api.base import GROUP
from kagent.api.labels import AGENT_TOKEN_AUDIENCE
from kagent.runtime.caller import ANONYMOUS, Caller, current_caller, reset_caller, set_caller

if TYPE_CHECKING:
    from kagent.runtime.config import RuntimeConfig

__all__ = ["AuthMiddleware", "Authenticator", "Caller", "current_caller", "set_caller"]

logger = logging.getLogger("kagent.runtime.auth")

TOKEN_HEADERS = ("authorization", "kagent-authorization")
OPEN_PATHS = frozenset({
    "/healthz", "/readyz", "/metrics",
    "/.well-known/agent-card.json", "/.well-known/agent.json",
})
INVOKE_VERB = "invoke"
AGENTS_RESOURCE = "agents"
STEP_CLAIM = ("update", "workflowruns", "status")
"""(verb, resource, subresource) a caller needs to say a request is a workflow step."""
MIN_API_KEY_LENGTH = 16
MAX_TOKEN_BYTES = 16 << 10
CACHE_ENTRIES = 4096
AUTHN_TTL = 120.0
"""Seconds a TokenReview's answer is trusted (kube-rbac-proxy's default)."""
AUTHZ_TTL = 60.0
"""Seconds an allowed SubjectAccessReview is trusted: a revoked binding stops working after at
most this long (``KAGENT_AUTHZ_CACHE_SECONDS`` changes it)."""
DENIED_TTL = 10.0
"""Seconds a refusal is remembered: a caller granted access a moment ago waits at most this."""
MAX_CONCURRENT_REVIEWS = 32
"""TokenReviews and SubjectAccessReviews in flight at once: a flood of distinct bad tokens
queues here instead of flooding the API server."""


@dataclass(frozen=True)
class UserInfo:
    """What a TokenReview says the token belongs to."""

    username: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()


@dataclass(frozen=True)
class Refusal:
    """Why a request is not served: 401 (no or unknown credentials), 403 (not allowed) or 503
    (the API server could not be asked)."""

    status: int
    message: str

    @property
    def kind(self) -> str:
        return {401: "authentication_error", 403: "permission_error"}.get(self.status,
                                                                          "service_unavailable")


class Reviewer(Protocol):
    """Asks the API server about a token and a user (a TokenReview, a SubjectAccessReview)."""

    async def authenticate(self, token: str) -> UserInfo | None: ...

    async def may_invoke(self, user: UserInfo, namespace: str, agent: str) -> tuple[bool, str]: ...

    async def may_claim_steps(self, user: UserInfo, namespace: str) -> tuple[bool, str]: ...


class ReviewUnavailable(Exception):
    """The API server could not answer a review; the request is refused (fails closed)."""


def caller_of(user: UserInfo) -> Caller:
    """The stable caller identity tasks and conversations are kept under."""
    if user.username.startswith("system:serviceaccount:"):
        return Caller(identity=user.username, kind="serviceaccount", groups=user.groups)
    return Caller(identity=f"user:{user.username}", kind="user", groups=user.groups)


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """The bearer token of a request (``Authorization``, else ``Kagent-Authorization``)."""
    for name in TOKEN_HEADERS:
        value = headers.get(name)
        if value:
            scheme, _, token = value.strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class Authenticator:
    """Decides who a request comes from and whether it may call the agent ``namespace/agent``.

    ``required`` False is the Agent's explicit ``auth.mode: none``: everyone is anonymous.
    ``reviewer`` None means no Kubernetes API to ask (a runtime on a laptop): only API keys
    work, unless ``allow_anonymous`` (loopback-only serving with no key configured)."""

    namespace: str
    agent: str
    required: bool = True
    api_keys: Mapping[str, str] = field(default_factory=dict)
    reviewer: Reviewer | None = None
    allow_anonymous: bool = False
    authn_ttl: float = AUTHN_TTL
    authz_ttl: float = AUTHZ_TTL
    denied_ttl: float = DENIED_TTL

    def __post_init__(self) -> None:
        self._keys = [(name, key.encode()) for name, key in self.api_keys.items()]
        self._users: TTLCache[str, UserInfo] = TTLCache(CACHE_ENTRIES, self.authn_ttl)
        self._unknown: TTLCache[str, bool] = TTLCache(CACHE_ENTRIES, self.denied_ttl)
        self._allowed: TTLCache[UserInfo, bool] = TTLCache(CACHE_ENTRIES, self.authz_ttl)
        self._denied: TTLCache[UserInfo, str] = TTLCache(CACHE_ENTRIES, self.denied_ttl)
        self._claims: TTLCache[UserInfo, bool] = TTLCache(CACHE_ENTRIES, self.authz_ttl)
        self._claims_denied: TTLCache[UserInfo, str] = TTLCache(CACHE_ENTRIES, self.denied_ttl)
        self._reviews = asyncio.Semaphore(MAX_CONCURRENT_REVIEWS)

    @property
    def schemes(self) -> list[str]:
        """The schemes this agent accepts, for its card: ``kubernetes``, ``apiKey``."""
        if not self.required:
            return []
        return (["kubernetes"] if self.reviewer is not None else []) + (
            ["apiKey"] if self._keys else [])

    def _api_key_name(self, token: str) -> str | None:
        presented = token.encode()
        found = None
        for name, key in self._keys:  # every key compared, in constant time each
            if hmac.compare_digest(presented, key):
                found = name
        return found

    async def identify(self, headers: Mapping[str, str]) -> Caller | Refusal:
        """The caller of a request with ``headers``, or why it is refused."""
        if not self.required or self.allow_anonymous:
            return ANONYMOUS  # allow_anonymous: nothing to check a token against, loopback only
        token = bearer_token(headers)
        if token is None:
            return Refusal(401, f"agent {self.namespace}/{self.agent} needs credentials: send "
                                "'Authorization: Bearer <token>' with a Kubernetes token (e.g. "
                                "kubectl create token) or one of the agent's API keys")
        if len(token) > MAX_TOKEN_BYTES:
            return Refusal(401, f"the bearer token is longer than {MAX_TOKEN_BYTES} bytes")
        claims_step = WORKFLOW_HEADER in headers
        key_name = self._api_key_name(token)
        if key_name is not None:
            if claims_step:
                return Refusal(403, f"the {WORKFLOW_HEADER} header says this request is a "
                                    "workflow step, and only the workflow engine sends it: an API "
                                    "key cannot")
            return Caller(identity=f"apikey:{key_name}", kind="apikey", groups=())
        if self.reviewer is None:
            return Refusal(401, "the bearer token is not one of this agent's API keys (this "
                                "runtime has no Kubernetes API to check tokens with)")
        try:
            user = await self._authenticate(token)
            if user is None:
                return Refusal(401, "the bearer token was not accepted: it is not a valid "
                                    "Kubernetes token (expired, revoked or for another audience) "
                                    "nor one of the agent's API keys")
            reason = await self._authorize(user)
            if reason is None and claims_step:
                reason = await self._authorize_step_claim(user)
        except ReviewUnavailable as error:
            return Refusal(503, f"cannot check the caller's credentials right now: {error}")
        if reason is not None:
            return Refusal(403, reason)
        return caller_of(user)

    async def _authenticate(self, token: str) -> UserInfo | None:
        digest = _digest(token)
        user = self._users.get(digest)
        if user is not None:
            return user
        if digest in self._unknown:
            return None
        assert self.reviewer is not None
        async with self._reviews:
            user = await self.reviewer.authenticate(token)
        if user is None:
            self._unknown[digest] = True
        else:
            self._users[digest] = user
        return user

    async def _authorize(self, user: UserInfo) -> str | None:
        """None when ``user`` may invoke the agent, else the 403 message."""
        assert self.reviewer is not None
        reviewer = self.reviewer
        return await self._decide(
            user, self._allowed, self._denied,
            lambda: reviewer.may_invoke(user, self.namespace, self.agent),
            lambda why: (f'{user.username} may not invoke agent {self.namespace}/{self.agent}: '
                         f'RBAC grants no verb "{INVOKE_VERB}" on resource '
                         f'"{AGENTS_RESOURCE}.{GROUP}" (name "{self.agent}") in namespace '
                         f'{self.namespace}' + (f" ({why})" if why else "")
                         + "; bind a Role with that rule to the caller"))

    async def _authorize_step_claim(self, user: UserInfo) -> str | None:
        """None when ``user`` may say a request is a workflow step, else the 403 message."""
        assert self.reviewer is not None
        reviewer = self.reviewer
        verb, resource, subresource = STEP_CLAIM
        return await self._decide(
            user, self._claims, self._claims_denied,
            lambda: reviewer.may_claim_steps(user, self.namespace),
            lambda why: (f"the {WORKFLOW_HEADER} header says this request is a workflow step, "
                         f'and {user.username} may not run workflows: RBAC grants no verb '
                         f'"{verb}" on "{resource}/{subresource}" in namespace {self.namespace}'
                         + (f" ({why})" if why else "") + "; only the workflow engine sends it"))

    async def _decide(self, user: UserInfo, allowed: TTLCache[UserInfo, bool],
                      denied: TTLCache[UserInfo, str],
                      review: Callable[[], Awaitable[tuple[bool, str]]],
                      refusal: Callable[[str], str]) -> str | None:
        """One cached SubjectAccessReview decision: None when allowed, else the 403 message
        (both remembered, for their own lifetimes; reviews in flight bounded)."""
        if user in allowed:
            return None
        known = denied.get(user)
        if known is not None:
            return known
        async with self._reviews:
            ok, why = await review()
        if ok:
            allowed[user] = True
            return None
        message = refusal(why)
        denied[user] = message
        return message


def claimed_audiences(token: str) -> list[str]:
    """The ``aud`` claim of a JWT, read without verifying it (empty for anything else)."""
    import base64

    parts = token.split(".")
    if len(parts) != 3:
        return []
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return []
    audience = payload.get("aud") if isinstance(payload, dict) else None
    if isinstance(audience, str):
        return [audience]
    return [a for a in audience if isinstance(a, str)] if isinstance(audience, list) else []


class KubernetesReviewer:
    """TokenReview and SubjectAccessReview through a lightkube client (the agent's own
    ServiceAccount, which the chart's ``kagent-agent-auth`` ClusterRole lets create both).

    A token is first checked for the agents' own audience (the projected tokens agents call
    each other with), then for the API server's (kubeconfig tokens, the controller's)."""

    def __init__(self, client: Any, audiences: Sequence[str] = (AGENT_TOKEN_AUDIENCE,)) -> None:
        self.client = client
        self.audiences = list(audiences)

    async def authenticate(self, token: str) -> UserInfo | None:
        """One review in the usual case: a JWT that names one of our audiences is checked for
        it, any other token for the API server's (the claim only picks the order; the review
        itself verifies everything)."""
        ours = bool(set(claimed_audiences(token)) & set(self.audiences))
        for audiences in ((self.audiences, None) if ours else (None, self.audiences)):
            user = await self._review(token, audiences)
            if user is not None:
                return user
        return None

    async def _review(self, token: str, audiences: list[str] | None) -> UserInfo | None:
        from lightkube.models.authentication_v1 import TokenReviewSpec
        from lightkube.resources.authentication_v1 import TokenReview

        try:
            answer = await self.client.create(
                TokenReview(spec=TokenReviewSpec(token=token, audiences=audiences)))
        except Exception as error:  # noqa: BLE001 - any failure: cannot say who it is
            raise ReviewUnavailable(f"TokenReview failed ({type(error).__name__})") from None
        status = answer.status
        if status is None or not status.authenticated or status.user is None:
            return None
        user = status.user
        return UserInfo(
            username=user.username or "", uid=user.uid or "",
            groups=tuple(user.groups or ()),
            extra=tuple(sorted((k, tuple(v)) for k, v in (user.extra or {}).items())),
        )

    async def may_invoke(self, user: UserInfo, namespace: str, agent: str) -> tuple[bool, str]:
        return await self._may(user, namespace=namespace, verb=INVOKE_VERB, group=GROUP,
                               resource=AGENTS_RESOURCE, name=agent)

    async def may_claim_steps(self, user: UserInfo, namespace: str) -> tuple[bool, str]:
        verb, resource, subresource = STEP_CLAIM
        return await self._may(user, namespace=namespace, verb=verb, group=GROUP,
                               resource=resource, subresource=subresource)

    async def _may(self, user: UserInfo, **attributes: str) -> tuple[bool, str]:
        """A SubjectAccessReview of ``user`` for the resource ``attributes``."""
        from lightkube.models.authorization_v1 import ResourceAttributes, SubjectAccessReviewSpec
        from lightkube.resources.authorization_v1 import SubjectAccessReview

        review = SubjectAccessReview(spec=SubjectAccessReviewSpec(
            user=user.username, uid=user.uid or None, groups=list(user.groups) or None,
            extra={k: list(v) for k, v in user.extra} or None,
            resourceAttributes=ResourceAttributes(**attributes),
        ))
        try:
            answer = await self.client.create(review)
        except Exception as error:  # noqa: BLE001
            raise ReviewUnavailable(f"SubjectAccessReview failed ({type(error).__name__})") from None
        status = answer.status
        if status is None:
            return False, ""
        return bool(status.allowed), status.reason or ""


def _error_body(refusal: Refusal) -> bytes:
    """One body both kinds of client read: OpenAI clients take ``error.message``, JSON-RPC
    (A2A) clients ``error.code`` and ``error.message``."""
    return json.dumps({
        "jsonrpc": "2.0", "id": None,
        "error": {"code": -32000 - refusal.status, "message": refusal.message,
                  "type": refusal.kind},
    }).encode()


class AuthMiddleware:
    """ASGI middleware: every request but the open paths gets a caller or a refusal.

    The caller is on ``request.state.caller`` and, for everything the request runs (a2a-sdk's
    producer tasks included), in :func:`kagent.runtime.caller.current_caller`."""

    def __init__(self, app: ASGIApp, authenticator: Authenticator) -> None:
        self.app = app
        self.authenticator = authenticator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers") or []}
        outcome = await self.authenticator.identify(headers)
        if isinstance(outcome, Refusal):
            await _refuse(outcome, send)
            return
        scope.setdefault("state", {})["caller"] = outcome
        token = set_caller(outcome)
        try:
            await self.app(scope, receive, send)
        finally:
            reset_caller(token)


async def _refuse(refusal: Refusal, send: Send) -> None:
    body = _error_body(refusal)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if refusal.status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="kagent"'))
    await send({"type": "http.response.start", "status": refusal.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def cache_seconds(environ: Mapping[str, str] | None = None) -> float:
    """The authorization cache lifetime (``KAGENT_AUTHZ_CACHE_SECONDS``, default 60)."""
    env = os.environ if environ is None else environ
    try:
        return max(0.0, float(env.get("KAGENT_AUTHZ_CACHE_SECONDS", AUTHZ_TTL)))
    except ValueError:
        return AUTHZ_TTL


class AuthConfigError(ValueError):
    """The Agent's auth settings cannot work here; the message says what to change."""


SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


def in_pod(environ: Mapping[str, str] | None = None) -> bool:
    """Whether this process runs in a Kubernetes pod with API credentials mounted."""
    env = os.environ if environ is None else environ
    return "KUBERNETES_SERVICE_HOST" in env and (SERVICE_ACCOUNT_DIR / "token").exists()


def default_host(environ: Mapping[str, str] | None = None) -> str:
    """Every interface in a pod (the Service reaches it there); loopback anywhere else, so a
    runtime on a laptop is not served to the network by accident."""
    return "0.0.0.0" if in_pod(environ) else "127.0.0.1"


def kubernetes_reviewer(kubeconfig: Path | None = None) -> KubernetesReviewer | None:
    """A reviewer logged in with ``kubeconfig``, else the pod's ServiceAccount; None outside a
    pod when no kubeconfig is given (tokens cannot be checked there)."""
    from lightkube import AsyncClient, KubeConfig

    if kubeconfig is not None:
        config = KubeConfig.from_file(kubeconfig)
    elif in_pod():
        config = KubeConfig.from_service_account(SERVICE_ACCOUNT_DIR)
    else:
        return None
    return KubernetesReviewer(AsyncClient(config=config, timeout=10.0))


def authenticator_for(config: RuntimeConfig, reviewer: Reviewer | None, *, loopback: bool,
                      environ: Mapping[str, str] | None = None) -> Authenticator:
    """The authenticator for the Agent in ``config``.

    Without a reviewer (no Kubernetes API: a runtime on a laptop) only API keys can be
    checked; with none configured, callers are let in only while the runtime serves loopback."""
    spec = config.agent.spec.auth
    namespace, name = config.namespace, config.name
    if spec is not None and spec.mode == "none":
        logger.warning("agent %s/%s: spec.auth.mode is none: answering every caller without "
                       "authentication", namespace, name)
        return Authenticator(namespace, name, required=False)
    keys: dict[str, str] = {}
    for i, key in enumerate(spec.api_keys or [] if spec else []):
        value = config.secrets.get(key.secret_key_ref).strip()
        if len(value) < MIN_API_KEY_LENGTH:
            raise AuthConfigError(
                f"spec.auth.apiKeys[{i}] ({key.name}): the key in Secret "
                f'"{key.secret_key_ref.name}" is shorter than {MIN_API_KEY_LENGTH} characters')
        keys[key.name] = value
    anonymous = reviewer is None and not keys
    if anonymous and not loopback:
        raise AuthConfigError(
            f"agent {namespace}/{name} would serve the network with nobody to check callers: "
            "run it in a pod, pass --kubeconfig so Kubernetes tokens can be checked, give it "
            "spec.auth.apiKeys, or listen on 127.0.0.1")
    if anonymous:
        logger.warning("agent %s/%s: no Kubernetes API and no API keys to check callers with; "
                       "answering local callers on loopback only", namespace, name)
    return Authenticator(namespace, name, api_keys=keys, reviewer=reviewer,
                         allow_anonymous=anonymous, authz_ttl=cache_seconds(environ))


def card_security(schemes: Sequence[str]) -> dict[str, Any]:
    """The agent card's ``security_schemes`` and ``security_requirements`` (any one scheme)."""
    from a2a.types import HTTPAuthSecurityScheme, SecurityRequirement, SecurityScheme, StringList

    described = {
        "kubernetes": "A Kubernetes bearer token (a ServiceAccount token, kubectl create token, "
                      "or your kubeconfig's token); RBAC must grant verb invoke on "
                      "agents.kagent.dev for this agent",
        "apiKey": "An API key the agent's owner issued, sent as a bearer token",
    }
    return {
        "security_schemes": {
            scheme: SecurityScheme(http_auth_security_scheme=HTTPAuthSecurityScheme(
                scheme="Bearer", description=described[scheme],
                bearer_format="JWT" if scheme == "kubernetes" else ""))
            for scheme in schemes
        },
        "security_requirements": [SecurityRequirement(schemes={scheme: StringList()})
                                  for scheme in schemes],
    }
