"""What every tool type shares: the name the model sees, argument checking, secret redaction,
and the metrics wrapper that turns failures into answers the model can read."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import jsonschema
import pydantic_core
from pydantic_ai import RunContext
from pydantic_ai.exceptions import (
    AgentRunError,
    ApprovalRequired,
    CallDeferred,
    ModelRetry,
    SkipToolExecution,
    SkipToolValidation,
    ToolFailed,
    UserError,
)
from pydantic_ai.tools import ToolDefinition
from pydantic_ai.toolsets import AbstractToolset, ToolsetTool, WrapperToolset

from kagent.api.parameters import parameters_json_schema
from kagent.api.tool import ToolSpec
from kagent.runtime.context import RuntimeContext
from kagent.runtime.metrics import TOOL_CALLS, TOOL_DURATION

logger = logging.getLogger("kagent.runtime.tools")

MAX_TOOL_NAME = 64
DEFAULT_MAX_RETRIES = 3
"""How often the model may correct a call (bad arguments) before the run gives up."""
REDACTED = "[REDACTED]"
_PASS_THROUGH = (ModelRetry, ToolFailed, CallDeferred, ApprovalRequired, SkipToolExecution,
                 SkipToolValidation, AgentRunError, UserError)
"""pydantic-ai's own control flow: these reach the agent loop unchanged."""

ARGS_VALIDATOR = pydantic_core.SchemaValidator(
    pydantic_core.core_schema.dict_schema(
        pydantic_core.core_schema.str_schema(), pydantic_core.core_schema.any_schema()
    )
)
"""Arguments must be a JSON object; the tool's own JSON Schema is checked in call_tool so a
mismatch becomes a readable retry prompt."""


def model_tool_name(name: str) -> str:
    """A resource name as a model-visible tool name: ``[A-Za-z0-9_-]``, at most 64 characters."""
    cleaned = re.sub(r"[^A-Za-z0-9_-]", "_", name)[:MAX_TOOL_NAME]
    return cleaned or "tool"


def input_schema(spec: ToolSpec, default: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON Schema of the tool's arguments: ``parameters``, ``inputSchema`` or ``default``."""
    if spec.parameters is not None:
        return parameters_json_schema(spec.parameters)
    if spec.input_schema is not None:
        schema = dict(spec.input_schema)
        schema.setdefault("type", "object")
        schema.setdefault("properties", {})
        return schema
    return default or {"type": "object", "properties": {}}


def main_string_argument(schema: dict[str, Any], preferred: str) -> str:
    """The argument that carries the tool's main text: ``preferred`` if the schema has it, else
    the first required string parameter, else the first string parameter."""
    properties = schema.get("properties") or {}
    if preferred in properties:
        return preferred
    strings = [n for n, p in properties.items() if (p or {}).get("type") == "string"]
    required = [n for n in schema.get("required") or [] if n in strings]
    if required:
        return required[0]
    if strings:
        return strings[0]
    return preferred


def check_arguments(schema: dict[str, Any], arguments: dict[str, Any]) -> dict[str, Any]:
    """Validate against the schema; a mismatch asks the model to try again with the details.

    Defaults from the schema are filled in for arguments the model left out.
    """
    filled = _coerce_scalars(schema, arguments)
    validator_class = jsonschema.validators.validator_for(schema, jsonschema.Draft202012Validator)
    errors = sorted(validator_class(schema).iter_errors(filled), key=lambda e: list(e.path))
    if errors:
        problems = "; ".join(_describe(error) for error in errors[:10])
        raise ModelRetry(f"invalid arguments: {problems}")
    for name, prop in (schema.get("properties") or {}).items():
        if name not in filled and isinstance(prop, dict) and "default" in prop:
            filled[name] = prop["default"]
    return filled


def _coerce_scalars(schema: dict[str, Any], arguments: dict[str, Any]) -> dict[str, Any]:
    """Numbers and booleans the model sent as strings ("3", "true") become what the schema
    declares, as pydantic-ai's own function tools accept them; anything else is left for the
    validator to report."""
    out = dict(arguments)
    for name, prop in (schema.get("properties") or {}).items():
        value = out.get(name)
        if not isinstance(value, str) or not isinstance(prop, dict):
            continue
        kind = prop.get("type")
        text = value.strip()
        try:
            if kind == "integer" and re.fullmatch(r"[+-]?[0-9]+", text):
                out[name] = int(text)
            elif kind == "number" and text:
                number = float(text)
                out[name] = int(number) if number.is_integer() and "." not in text else number
            elif kind == "boolean" and text.lower() in ("true", "false"):
                out[name] = text.lower() == "true"
        except ValueError:
            pass
    return out


def check_output(schema: dict[str, Any], value: Any) -> None:
    """Validate a result against the Tool's ``output`` schema; a mismatch is a tool failure."""
    validator_class = jsonschema.validators.validator_for(schema, jsonschema.Draft202012Validator)
    errors = sorted(validator_class(schema).iter_errors(value), key=lambda e: list(e.path))
    if errors:
        problems = "; ".join(_describe(error) for error in errors[:5])
        raise ToolFailed(f"the result does not match the tool's output schema: {problems}")


def _describe(error: jsonschema.ValidationError) -> str:
    where = "/".join(str(p) for p in error.absolute_path)
    message = error.message if len(error.message) <= 300 else error.message[:300] + "…"
    return f"{where}: {message}" if where else message


def truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f"… [{len(text) - limit} more characters]"


@dataclass
class Redactor:
    """Replaces secret values in anything a tool returns, raises or logs.

    It knows the values this tool itself read (and their encoded forms, such as the base64 of
    basic credentials) plus everything the runtime's secret resolver handed out.
    """

    ctx: RuntimeContext | None = None
    values: set[str] = field(default_factory=set)

    def add(self, *values: str | None) -> None:
        for value in values:
            if value and len(value) >= 4:
                self.values.add(value)

    def text(self, text: str) -> str:
        for value in sorted(self.values, key=len, reverse=True):
            text = text.replace(value, REDACTED)
        shared = getattr(self.ctx.secrets, "redact", None) if self.ctx is not None else None
        return shared(text) if callable(shared) else text

    def value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.text(str(k)): self.value(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.value(v) for v in value]
        return value


Handler = Callable[[dict[str, Any]], Awaitable[Any]]


class SingleToolToolset(AbstractToolset[Any]):
    """One tool (api, retrieval, code, agent): a name, a description, an argument schema and an
    async handler that gets the checked arguments."""

    def __init__(self, *, name: str, description: str | None, schema: dict[str, Any],
                 handler: Handler, toolset_id: str | None = None,
                 max_retries: int | None = DEFAULT_MAX_RETRIES) -> None:
        self.name = name
        self.description = description
        self.schema = schema
        self.handler = handler
        self._id = toolset_id or f"kagent-tool-{name}"
        self.max_retries = max_retries

    @property
    def id(self) -> str | None:
        return self._id

    async def get_tools(self, ctx: RunContext[Any]) -> dict[str, ToolsetTool[Any]]:
        definition = ToolDefinition(
            name=self.name, description=self.description, parameters_json_schema=self.schema
        )
        retries = self.max_retries if self.max_retries is not None else ctx.max_retries
        return {
            self.name: ToolsetTool(
                toolset=self, tool_def=definition, max_retries=retries,
                args_validator=ARGS_VALIDATOR,
            )
        }

    async def call_tool(self, name: str, tool_args: dict[str, Any], ctx: RunContext[Any],
                        tool: ToolsetTool[Any]) -> Any:
        arguments = check_arguments(self.schema, tool_args)
        return await self.handler(arguments)


@dataclass
class MeteredToolset(WrapperToolset[Any]):
    """Counts every call by tool and outcome, times it, and turns unexpected exceptions into a
    failure the model sees (with secrets redacted) instead of an aborted run."""

    agent_name: str = ""
    redactor: Redactor | None = None

    async def call_tool(self, name: str, tool_args: dict[str, Any], ctx: RunContext[Any],
                        tool: ToolsetTool[Any]) -> Any:
        started = time.perf_counter()
        outcome = "error"
        try:
            result = await self.wrapped.call_tool(name, tool_args, ctx, tool)
            outcome = "success"
        except (ModelRetry, ToolFailed) as exc:
            message = self._redact(exc.message)
            logger.info("tool %s: %s", name, message)
            if message != exc.message:
                raise type(exc)(message) from None
            raise
        except _PASS_THROUGH:
            raise
        except Exception as exc:  # noqa: BLE001 - every other failure is reported to the model
            message = self._redact(f"{type(exc).__name__}: {exc}")
            logger.warning("tool %s failed: %s", name, message)
            raise ToolFailed(truncate(message, 2000)) from None
        finally:
            TOOL_CALLS.labels(agent=self.agent_name, tool=name, outcome=outcome).inc()
            TOOL_DURATION.labels(agent=self.agent_name, tool=name).observe(
                time.perf_counter() - started
            )
        return self.redactor.value(result) if self.redactor is not None else result

    def _redact(self, text: str) -> str:
        return self.redactor.text(text) if self.redactor is not None else text


def metered(toolset: AbstractToolset[Any], ctx: RuntimeContext,
            redactor: Redactor | None = None) -> MeteredToolset:
    return MeteredToolset(toolset, agent_name=ctx.agent_name, redactor=redactor or Redactor(ctx))
