"""Rule matching and reply rendering — pure functions over a :class:`ChatRequest`.

Kept free of state and I/O so the semantics (first match wins, all given conditions must hold,
placeholders are plain lookups) can be read and tested in one place.
"""

from __future__ import annotations

import fnmatch
import json
import math
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .conversation import ChatRequest, ToolCall
from .script import PLACEHOLDER, ErrorSpec, Reply, Rule


@dataclass(frozen=True)
class Answer:
    """A rendered reply, ready for any wire format."""

    rule: str
    content: str | None
    tool_calls: tuple[ToolCall, ...]
    error: ErrorSpec | None
    input_tokens: int
    output_tokens: int
    delay: float
    chunk_delay: float = 0.0

    def summary(self) -> dict[str, Any]:
        if self.error is not None:
            return {"error": self.error.model_dump(exclude_none=True)}
        return {
            "content": self.content,
            "tool_calls": [
                {"id": c.id, "name": c.name, "arguments": c.arguments} for c in self.tool_calls
            ],
            "usage": {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens},
        }


def estimate_tokens(text: str) -> int:
    """About four characters per token, the usual rule of thumb; never zero."""
    return max(1, math.ceil(len(text) / 4))


def model_matches(pattern: str, model: str) -> bool:
    return pattern == model or fnmatch.fnmatchcase(model, pattern)


def rule_matches(rule: Rule, request: ChatRequest, turn: int) -> re.Match[str] | bool:
    """True (or the regex match, for templating) when every condition the rule gives holds."""
    if rule.provider is not None and rule.provider != request.provider:
        return False
    if rule.model is not None and not model_matches(rule.model, request.model):
        return False
    if rule.turn is not None and rule.turn != turn:
        return False
    if rule.contains is not None and rule.contains.lower() not in request.last_user.lower():
        return False
    if rule.system_contains is not None:
        if rule.system_contains.lower() not in request.system.lower():
            return False
    if any(name not in request.tools for name in rule.offered):
        return False
    if rule.has_tool_result is not None:
        results = request.trailing_tool_results
        if rule.has_tool_result is False and results:
            return False
        if rule.has_tool_result is True and not results:
            return False
        if isinstance(rule.has_tool_result, str):
            if not any(r.name == rule.has_tool_result for r in results):
                return False
    if rule.regex is not None:
        return re.search(rule.regex, request.last_user) or False
    return True


def _context(
    request: ChatRequest, rule: Rule | None, turn: int, match: re.Match[str] | None
) -> dict[str, Any]:
    results = request.trailing_tool_results
    if rule is not None and isinstance(rule.has_tool_result, str):
        results = tuple(r for r in results if r.name == rule.has_tool_result)
    groups: dict[str, str] = {}
    if match is not None:
        groups = {str(i): g or "" for i, g in enumerate([match.group(0), *match.groups()])}
        groups.update({k: v or "" for k, v in match.groupdict().items()})
    return {
        "last_user": request.last_user,
        "tool_result": "\n".join(r.content for r in results),
        "tool_name": (results[-1].name or "") if results else "",
        "system": request.system,
        "model": request.model,
        "provider": request.provider,
        "turn": str(turn),
        "match": groups,
    }


def substitute(text: str, context: Mapping[str, Any]) -> str:
    """Replace ``{{name}}`` / ``{{name.key}}`` by lookups; unknown keys become empty strings."""

    def lookup(found: re.Match[str]) -> str:
        head, _, key = found.group(1).partition(".")
        value = context.get(head, "")
        if isinstance(value, Mapping):
            value = value.get(key or "0", "")
        return str(value)

    return PLACEHOLDER.sub(lookup, text)


def _substitute_deep(value: Any, context: Mapping[str, Any]) -> Any:
    if isinstance(value, str):
        return substitute(value, context)
    if isinstance(value, Mapping):
        return {k: _substitute_deep(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute_deep(v, context) for v in value]
    return value


def render(
    reply: Reply,
    rule_id: str,
    request: ChatRequest,
    turn: int,
    id_prefix: str,
    match: re.Match[str] | None = None,
) -> Answer:
    """Fill placeholders, give tool calls ids and work out token usage."""
    context = _context(request, reply if isinstance(reply, Rule) else None, turn, match)
    content = substitute(reply.content, context) if reply.content is not None else None
    calls = tuple(
        ToolCall(
            id=spec.id or f"{id_prefix}{uuid.uuid4().hex[:24]}",
            name=spec.name,
            arguments=_substitute_deep(spec.arguments, context),
        )
        for spec in reply.tool_calls or ()
    )
    if reply.usage is not None:
        input_tokens, output_tokens = reply.usage.input_tokens, reply.usage.output_tokens
    else:
        produced = (content or "") + "".join(json.dumps(c.arguments) for c in calls)
        input_tokens = estimate_tokens(request.input_text())
        output_tokens = estimate_tokens(produced) if reply.error is None else 0
    return Answer(
        rule=rule_id,
        content=content,
        tool_calls=calls,
        error=reply.error,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        delay=reply.delay,
        chunk_delay=reply.chunk_delay,
    )
