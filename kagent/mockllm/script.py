"""The mock model's script: an ordered list of rules, validated with pydantic.

A script is plain YAML (or a dict) so that a test, a user's CI job and the ``kagent mock-llm``
command all describe a conversation the same way. Rules are flat — match keys and reply keys side
by side — because that is what people write by hand; unknown keys are rejected so a typo such as
``contain:`` fails loudly instead of silently matching everything.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

Provider = Literal["openai", "anthropic", "bedrock"]

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][\w-]*(?:\.[\w-]+)?)\s*\}\}")
"""``{{name}}`` or ``{{name.key}}`` — the only template syntax; nothing is ever evaluated."""

PLACEHOLDER_NAMES = frozenset(
    {"last_user", "tool_result", "tool_name", "system", "model", "provider", "turn", "match"}
)


class ScriptError(ValueError):
    """A script that cannot be loaded; the message names the rule and field at fault."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_ANY_BRACES = re.compile(r"\{\{(.*?)\}\}")


def _check_placeholders(text: str) -> str:
    for found in _ANY_BRACES.finditer(text):
        if not PLACEHOLDER.fullmatch(found.group(0)):
            raise ValueError(
                f"{found.group(0)} is not a placeholder; use {{{{name}}}} or {{{{name.key}}}}"
            )
        head = found.group(1).strip().split(".", 1)[0]
        if head not in PLACEHOLDER_NAMES:
            allowed = ", ".join(sorted(PLACEHOLDER_NAMES))
            raise ValueError(f"unknown placeholder {found.group(0)} (known: {allowed})")
    return text


def _check_placeholders_deep(value: Any) -> None:
    if isinstance(value, str):
        _check_placeholders(value)
    elif isinstance(value, Mapping):
        for item in value.values():
            _check_placeholders_deep(item)
    elif isinstance(value, list):
        for item in value:
            _check_placeholders_deep(item)


class ToolCallSpec(_Strict):
    """A tool call the model asks for; string values in ``arguments`` may use placeholders."""

    name: str = Field(min_length=1)
    arguments: dict[str, Any] = Field(default_factory=dict)
    id: str | None = None

    @field_validator("arguments")
    @classmethod
    def _placeholders(cls, value: dict[str, Any]) -> dict[str, Any]:
        _check_placeholders_deep(value)
        return value


class UsageSpec(_Strict):
    input_tokens: int = Field(ge=0)
    output_tokens: int = Field(ge=0)


class ErrorSpec(_Strict):
    """An HTTP error answered in the provider's own error body shape.

    ``type`` overrides the provider error type picked from the status (e.g. ``insufficient_quota``
    for OpenAI, ``overloaded_error`` for Anthropic, ``ModelNotReadyException`` for Bedrock).
    ``retry_after`` (seconds) is sent as ``retry-after``/``retry-after-ms`` so SDK retries are fast.
    """

    status: int = Field(ge=400, le=599)
    message: str = "mock error"
    type: str | None = None
    retry_after: float | None = Field(default=None, ge=0)


class Reply(_Strict):
    """What the model answers: text, tool calls (or both), or an error."""

    content: str | None = None
    tool_calls: list[ToolCallSpec] | None = None
    error: ErrorSpec | None = None
    usage: UsageSpec | None = None
    delay: float = Field(default=0.0, ge=0)
    chunk_delay: float = Field(default=0.0, ge=0, le=10)
    """Seconds between streamed chunks, for a stream slow enough to watch arrive."""

    @field_validator("content")
    @classmethod
    def _content_placeholders(cls, value: str | None) -> str | None:
        return _check_placeholders(value) if value is not None else value

    @model_validator(mode="after")
    def _one_kind_of_answer(self) -> Reply:
        if self.error is not None and (self.content is not None or self.tool_calls):
            raise ValueError("a reply with 'error' cannot also have 'content' or 'tool_calls'")
        if self.error is None and self.content is None and not self.tool_calls:
            raise ValueError("a reply needs 'content', 'tool_calls' or 'error'")
        return self


class Rule(Reply):
    """Match conditions (all that are given must hold) plus the reply.

    ``times`` limits how often the rule may answer; once used up it is skipped, which lets a
    script say "fail twice, then succeed".
    """

    name: str | None = None
    model: str | None = None
    provider: Provider | None = None
    contains: str | None = None
    regex: str | None = None
    system_contains: str | None = None
    has_tool_result: bool | str | None = None
    tools_offered: str | list[str] | None = None
    turn: int | None = Field(default=None, ge=1)
    times: int | None = Field(default=None, ge=1)

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid regular expression: {exc}") from exc
        return value

    @property
    def offered(self) -> list[str]:
        if self.tools_offered is None:
            return []
        return [self.tools_offered] if isinstance(self.tools_offered, str) else self.tools_offered


class EmbeddingsConfig(_Strict):
    dimensions: int = Field(default=256, ge=2, le=16000)


DEFAULT_REPLY = Reply(content="{{last_user}}")


class Script(_Strict):
    """A whole script. ``default`` answers when no rule matches (an echo unless set)."""

    rules: list[Rule] = Field(default_factory=list)
    default: Reply = DEFAULT_REPLY
    embeddings: EmbeddingsConfig = Field(default_factory=EmbeddingsConfig)
    models: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> Script:
        seen: set[str] = set()
        for rule in self.rules:
            if rule.name is not None:
                if rule.name in seen:
                    raise ValueError(f"two rules are named {rule.name!r}; names must be unique")
                seen.add(rule.name)
        return self

    def rule_id(self, index: int) -> str:
        """The name counters and call records use: the rule's ``name`` or ``rules[i]``."""
        return self.rules[index].name or f"rules[{index}]"

    def model_names(self) -> list[str]:
        """Models to list on ``/v1/models``: ``models`` if given, else exact names in rules."""
        if self.models:
            return list(self.models)
        names = [r.model for r in self.rules if r.model and not any(c in r.model for c in "*?[")]
        return list(dict.fromkeys(names)) or ["mock-model"]


ScriptSource = Script | Mapping[str, Any] | str | Path | None


def _location(loc: tuple[int | str, ...], data: Any) -> str:
    """Turn a pydantic error location into ``rules[2] (name 'x').tool_calls[0].name``."""
    out = ""
    node = data
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
        try:
            node = node[part] if node is not None else None
        except (KeyError, IndexError, TypeError):
            node = None
        if out.startswith("rules[") and out.count(".") == 0 and isinstance(node, Mapping):
            if node.get("name"):
                out += f" (name {node['name']!r})"
    return out or "script"


def _format_error(exc: ValidationError, data: Any, origin: str) -> str:
    lines = [f"invalid mock LLM script ({origin}):"]
    for error in exc.errors():
        loc = tuple(
            p for p in error["loc"] if not (isinstance(p, str) and p.startswith("function-"))
        )
        message = error["msg"].removeprefix("Value error, ")
        lines.append(f"  {_location(loc, data)}: {message}")
    return "\n".join(lines)


def parse_script(data: Mapping[str, Any] | None, origin: str = "dict") -> Script:
    """Validate a script given as a mapping; raises :class:`ScriptError` naming the bad field."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ScriptError(f"invalid mock LLM script ({origin}): the top level must be a mapping")
    try:
        return Script.model_validate(dict(data))
    except ValidationError as exc:
        raise ScriptError(_format_error(exc, data, origin)) from None


def parse_script_text(text: str, origin: str = "text") -> Script:
    """Parse YAML (JSON is YAML too) text into a :class:`Script`."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ScriptError(f"invalid mock LLM script ({origin}): not YAML: {exc}") from None
    return parse_script(data, origin)


def load_script(source: ScriptSource) -> Script:
    """Load a script from a :class:`Script`, a mapping, or a path to a YAML file."""
    if source is None:
        return Script()
    if isinstance(source, Script):
        return source
    if isinstance(source, Mapping):
        return parse_script(source)
    path = Path(source)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ScriptError(f"cannot read mock LLM script {str(path)!r}: {exc.strerror}") from None
    return parse_script_text(text, origin=str(path))


def merge_scripts(scripts: list[Script]) -> Script:
    """One script from several (one per example, say): rules in order, the last ``default``
    and ``embeddings`` a script sets, every listed model. Rule names must stay unique."""
    defaults = [s.default for s in scripts if "default" in s.model_fields_set]
    embeddings = [s.embeddings for s in scripts if "embeddings" in s.model_fields_set]
    return Script(
        rules=[rule for script in scripts for rule in script.rules],
        default=defaults[-1] if defaults else DEFAULT_REPLY,
        embeddings=embeddings[-1] if embeddings else EmbeddingsConfig(),
        models=list(dict.fromkeys(m for s in scripts for m in s.models)),
    )
