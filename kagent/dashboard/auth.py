"""Who is looking: sign-in and sessions.

``kubeconfig`` mode serves one person on their own machine. The dashboard prints a URL holding a
random access key (as Jupyter does); opening it sets a session cookie, and nothing answers
without that cookie — so another local user or a web page in the browser cannot use the
kubeconfig's rights through the dashboard.

``token`` mode serves many people in a cluster. Each signs in with their own Kubernetes bearer
token (pasted on the sign-in page, or sent by an authenticating proxy in front as
``Authorization: Bearer``); the API server checks it (SelfSubjectReview) and the dashboard keeps
it server-side for the session, behind an HttpOnly, SameSite=Strict cookie.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Literal

from lightkube.config.kubeconfig import SingleConfig

from kagent.dashboard.access import (
    MAX_TOKEN_BYTES,
    Clients,
    Viewer,
    new_client,
    token_viewer,
    who_am_i,
)

Mode = Literal["kubeconfig", "token"]
COOKIE = "kagent_dashboard"
SESSION_SECONDS = 12 * 3600
MAX_SESSIONS = 10_000
BEARER_CACHE_SECONDS = 60.0


class SignInError(ValueError):
    """The credentials were refused; the message says what to do."""


@dataclass
class Sessions:
    """Sessions by random id: bounded in number and age."""

    limit: int = MAX_SESSIONS
    seconds: float = SESSION_SECONDS
    _entries: OrderedDict[str, tuple[float, Viewer]] = field(default_factory=OrderedDict)

    def create(self, viewer: Viewer) -> str:
        session = secrets.token_urlsafe(32)
        self._entries[session] = (time.monotonic() + self.seconds, viewer)
        while len(self._entries) > self.limit:
            self._entries.popitem(last=False)
        return session

    def get(self, session: str | None) -> Viewer | None:
        if not session:
            return None
        entry = self._entries.get(session)
        if entry is None:
            return None
        if entry[0] < time.monotonic():
            del self._entries[session]
            return None
        return entry[1]

    def drop(self, session: str | None) -> None:
        if session:
            self._entries.pop(session, None)


@dataclass
class Authenticator:
    mode: Mode
    viewer: Viewer | None = None
    """kubeconfig mode: the one viewer."""
    cluster: SingleConfig | None = None
    """token mode: the API server to check tokens against (no credentials of its own)."""
    access_key: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    sessions: Sessions = field(default_factory=Sessions)
    _bearers: OrderedDict[str, tuple[float, Viewer]] = field(default_factory=OrderedDict)

    def sign_in_with_key(self, key: str | None) -> str | None:
        """A session for whoever holds the printed key (kubeconfig mode)."""
        if self.mode != "kubeconfig" or self.viewer is None or not key:
            return None
        if not secrets.compare_digest(key.encode(), self.access_key.encode()):
            return None
        return self.sessions.create(self.viewer)

    async def check_token(self, token: str) -> Viewer:
        """The viewer a bearer token belongs to, as the API server sees it; SignInError if it
        refuses the token."""
        if self.mode != "token" or self.cluster is None:
            raise SignInError("this dashboard runs with a kubeconfig; open the URL it printed")
        token = token.strip()
        if not token or len(token) > MAX_TOKEN_BYTES or any(c.isspace() for c in token):
            raise SignInError("paste a Kubernetes bearer token (one line, no spaces)")
        candidate = token_viewer(self.cluster, token)
        client = new_client(candidate)
        try:
            user = await who_am_i(client)
        finally:
            await client.close()
        if user is None:
            raise SignInError("the Kubernetes API server refused this token (401): it is "
                              "expired, revoked or not a token of this cluster")
        return token_viewer(self.cluster, token, user or "token user")

    async def sign_in_with_token(self, token: str) -> tuple[str, Viewer]:
        viewer = await self.check_token(token)
        return self.sessions.create(viewer), viewer

    async def bearer_viewer(self, token: str) -> Viewer | None:
        """A viewer from an ``Authorization: Bearer`` header (an authenticating proxy in front),
        checked with the API server at most once a minute per token."""
        digest = hashlib.sha256(token.encode()).hexdigest()
        cached = self._bearers.get(digest)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        try:
            viewer = await self.check_token(token)
        except SignInError:
            return None
        self._bearers[digest] = (time.monotonic() + BEARER_CACHE_SECONDS, viewer)
        while len(self._bearers) > MAX_SESSIONS:
            self._bearers.popitem(last=False)
        return viewer


__all__ = ["COOKIE", "Authenticator", "Clients", "Mode", "SignInError"]
