"""The server's mutable state: the current script, counters and the record of every call.

The server runs on its own thread (or process) while tests read the records, so everything goes
through one lock, and readers get copies.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from .conversation import ChatRequest
from .matching import Answer, render, rule_matches
from .script import Script, ScriptSource, load_script

SECRET_HEADERS = frozenset(
    {
        "authorization",
        "x-api-key",
        "api-key",
        "cookie",
        "x-amz-security-token",
        "proxy-authorization",
    }
)
_SIGV4_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/")


@dataclass(frozen=True)
class Auth:
    """How the client authenticated.

    ``api_key`` is the bearer token or ``x-api-key`` value, or the access key *id* of a SigV4
    signature (the secret never travels). It is kept out of ``repr`` and logs so a test failure
    message cannot leak a real key.
    """

    scheme: str | None = None
    api_key: str | None = field(default=None, repr=False)


def auth_from_headers(headers: Mapping[str, str]) -> Auth:
    lowered = {k.lower(): v for k, v in headers.items()}
    if key := lowered.get("x-api-key") or lowered.get("api-key"):
        return Auth("x-api-key", key)
    value = lowered.get("authorization", "")
    if value.lower().startswith("bearer "):
        return Auth("bearer", value[7:].strip())
    if value.startswith("AWS4-HMAC-SHA256"):
        found = _SIGV4_CREDENTIAL.search(value)
        return Auth("sigv4", found.group(1) if found else None)
    return Auth(value.split(" ", 1)[0].lower() or None, None) if value else Auth()


def public_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items() if k.lower() not in SECRET_HEADERS}


@dataclass(frozen=True)
class RecordedCall:
    """One request the mock answered, for assertions in tests."""

    index: int
    provider: str
    endpoint: str  # "chat" or "embeddings"
    model: str
    stream: bool
    system: str
    messages: list[dict[str, Any]]
    tools: list[str]
    rule: str | None
    reply: dict[str, Any]
    auth_scheme: str | None
    headers: dict[str, str]
    body: dict[str, Any]
    inputs: list[str] = field(default_factory=list)
    timestamp: float = field(default_factory=time.time)
    api_key: str | None = field(default=None, repr=False)

    @property
    def last_user(self) -> str:
        for message in reversed(self.messages):
            if message["role"] == "user" and message["text"]:
                return str(message["text"])
        return ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class MockState:
    """Script + counters + call log, shared by the app's handlers and the test's thread."""

    def __init__(self, script: ScriptSource = None) -> None:
        self._lock = threading.Lock()
        self._script = load_script(script)
        self._calls: list[RecordedCall] = []
        self._rule_hits: Counter[str] = Counter()
        self._model_calls: Counter[str] = Counter()

    @property
    def script(self) -> Script:
        with self._lock:
            return self._script

    def replace_script(self, script: ScriptSource) -> Script:
        """Swap the script; counters restart because ``times``/``turn`` refer to the old rules."""
        loaded = load_script(script)
        with self._lock:
            self._script = loaded
            self._rule_hits.clear()
            self._model_calls.clear()
        return loaded

    def reset(self) -> None:
        with self._lock:
            self._calls.clear()
            self._rule_hits.clear()
            self._model_calls.clear()

    def answer(
        self, request: ChatRequest, auth: Auth, headers: Mapping[str, str], id_prefix: str
    ) -> Answer:
        """Pick the first matching rule that has uses left, render it and record the call."""
        with self._lock:
            script = self._script
            self._model_calls[request.model] += 1
            turn = self._model_calls[request.model]
            answer: Answer | None = None
            for index, rule in enumerate(script.rules):
                rule_id = script.rule_id(index)
                if rule.times is not None and self._rule_hits[rule_id] >= rule.times:
                    continue
                matched = rule_matches(rule, request, turn)
                if matched is False:
                    continue
                match = matched if isinstance(matched, re.Match) else None
                answer = render(rule, rule_id, request, turn, id_prefix, match)
                break
            if answer is None:
                answer = render(script.default, "default", request, turn, id_prefix)
            self._rule_hits[answer.rule] += 1
            self._calls.append(
                RecordedCall(
                    index=len(self._calls),
                    provider=request.provider,
                    endpoint="chat",
                    model=request.model,
                    stream=request.stream,
                    system=request.system,
                    messages=request.messages_as_dicts(),
                    tools=list(request.tools),
                    rule=answer.rule,
                    reply=answer.summary(),
                    auth_scheme=auth.scheme,
                    headers=public_headers(headers),
                    body=request.body,
                    api_key=auth.api_key,
                )
            )
            return answer

    def record_embeddings(
        self,
        model: str,
        inputs: list[str],
        auth: Auth,
        headers: Mapping[str, str],
        body: dict[str, Any],
    ) -> int:
        """Record an embeddings call; returns the dimensions the script asks for."""
        with self._lock:
            self._model_calls[model] += 1
            self._calls.append(
                RecordedCall(
                    index=len(self._calls),
                    provider="openai",
                    endpoint="embeddings",
                    model=model,
                    stream=False,
                    system="",
                    messages=[],
                    tools=[],
                    rule=None,
                    reply={},
                    auth_scheme=auth.scheme,
                    headers=public_headers(headers),
                    body=body,
                    inputs=inputs,
                    api_key=auth.api_key,
                )
            )
            return self._script.embeddings.dimensions

    @property
    def calls(self) -> list[RecordedCall]:
        with self._lock:
            return list(self._calls)

    def rule_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._rule_hits)

    def model_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._model_calls)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "calls": [c.to_json() for c in self._calls],
                "rule_counts": dict(self._rule_hits),
                "model_counts": dict(self._model_calls),
            }
