"""Tool type ``code``: run the model's Python in the sandbox (see :mod:`.sandbox`).

A sandbox that cannot have its isolation refuses to run: the model is told the code did not run
and why, and the agent's log says so at error level on every refused call."""

from __future__ import annotations

import json
import logging
from typing import Any

from opentelemetry import propagate
from pydantic_ai.exceptions import ModelRetry, ToolFailed

from kagent.api.tool import CodeTool, Tool
from kagent.runtime.context import RuntimeContext
from kagent.runtime.tools.base import (
    Redactor,
    SingleToolToolset,
    check_output,
    input_schema,
    main_string_argument,
    metered,
    model_tool_name,
)
from kagent.runtime.tools.sandbox import (
    MAX_PROGRAM_BYTES,
    Sandbox,
    SandboxBusy,
    SandboxLimits,
    SandboxUnavailable,
)

logger = logging.getLogger("kagent.runtime.tools.code")

DEFAULT_SCHEMA = {
    "type": "object",
    "properties": {
        "code": {
            "type": "string",
            "description": "A complete Python 3 program (standard library only). print() what "
            "you need to see; only stdout and stderr come back. No network, no subprocesses; files "
            "only in the current directory, which starts empty.",
        }
    },
    "required": ["code"],
}


def build_code_toolset(tool: Tool, ctx: RuntimeContext) -> Any:
    spec = tool.spec
    code_spec = spec.code or CodeTool()
    sandbox = Sandbox(SandboxLimits.from_spec(code_spec), isolation=code_spec.isolation,
                      max_concurrent=code_spec.max_concurrent_runs)
    schema = input_schema(spec, DEFAULT_SCHEMA)
    code_argument = main_string_argument(schema, "code")
    name = model_tool_name(tool.metadata.name or "code")
    warned: set[str] = set()

    async def call(arguments: dict[str, Any]) -> Any:
        code = arguments.get(code_argument)
        if not isinstance(code, str) or not code.strip():
            raise ModelRetry(f"give the Python program to run in '{code_argument}'")
        if len(code.encode()) > MAX_PROGRAM_BYTES:
            raise ModelRetry(f"the program is too long: at most {MAX_PROGRAM_BYTES // 1024} KiB")
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        # The W3C trace context reaches the program the way OpenTelemetry's environment-variable
        # propagation expects it.
        env = {key.upper(): value for key, value in carrier.items()}
        other = {k: v for k, v in arguments.items() if k != code_argument}
        files = {"arguments.json": json.dumps(other)} if other else None
        try:
            result = await sandbox.run(code, env=env, files=files)
        except SandboxUnavailable as refused:
            logger.error("code tool %s refused to run a program: %s (see the Code sandbox "
                         "section of docs/security.md)", name, refused)
            raise ToolFailed(f"{refused}. This is a problem of the agent's deployment, not of "
                             f"the program: do not retry.") from None
        except SandboxBusy as busy:
            logger.warning("code tool %s: %s", name, busy)
            raise ToolFailed(str(busy)) from None
        except ValueError as error:
            raise ModelRetry(str(error)) from None
        if result.missing and not warned.issuperset(result.missing):
            warned.update(result.missing)
            logger.warning("code tool %s runs with weaker isolation (isolation: best-effort); "
                           "missing: %s", name,
                           "; ".join(f"{k}: {v}" for k, v in result.missing.items()))
        logger.debug("code tool %s: exit %s, limit %s, layers %s", name, result.exit_code,
                     result.limit, result.layers)
        if not result.ok:
            raise ToolFailed(result.report())
        if spec.output is not None:
            try:
                value = json.loads(result.stdout)
            except ValueError:
                raise ToolFailed(
                    "the program's output is not JSON, but the tool's output schema expects "
                    "JSON:\n" + result.report()
                ) from None
            check_output(spec.output, value)
            return value
        return result.report()

    toolset = SingleToolToolset(name=name, description=spec.description, schema=schema,
                                handler=call)
    return metered(toolset, ctx, Redactor(ctx))
