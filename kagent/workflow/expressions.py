"""Conditions (CEL) and text templates (sandboxed Jinja) used by Workflows.

CEL is what Kubernetes users already write in validation rules; it cannot loop forever or touch
anything outside the values it is given. Templates are rendered in Jinja's sandbox with strict
undefined values, so a typo is an error rather than an empty string.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import celpy
from jinja2 import StrictUndefined, TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment


class ExpressionError(ValueError):
    """A condition or template that does not parse or cannot be evaluated."""


_CEL = celpy.Environment()
_JINJA = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False)

# Step names may contain '-', which Jinja and CEL read as minus: `steps.analyze-market.output`
# is rewritten to `steps["analyze-market"].output` before parsing.
_HYPHENATED_STEP = re.compile(r"\bsteps\.([a-z0-9]+(?:-[a-z0-9]+)+)")


def _quote_step_names(text: str) -> str:
    return _HYPHENATED_STEP.sub(lambda m: f'steps["{m.group(1)}"]', text)


@lru_cache(maxsize=1024)
def compile_condition(expression: str) -> Any:
    """Parse a CEL condition once; raises ExpressionError with the parser's pointer."""
    try:
        return _CEL.program(_CEL.compile(_quote_step_names(expression)))
    except Exception as error:  # celpy raises several parse error types
        raise ExpressionError(f"invalid CEL expression: {error}") from None


def evaluate_condition(expression: str, variables: dict[str, Any]) -> bool:
    """Evaluate a CEL condition over plain JSON-like values; it must yield a boolean."""
    program = compile_condition(expression)
    try:
        result = program.evaluate({k: celpy.json_to_cel(v) for k, v in variables.items()})
    except Exception as error:
        raise ExpressionError(f"evaluating {expression!r} failed: {error}") from None
    if isinstance(result, celpy.CELEvalError):
        raise ExpressionError(f"evaluating {expression!r} failed: {result}")
    if not isinstance(result, (bool, celpy.celtypes.BoolType)):
        raise ExpressionError(f"{expression!r} must give true or false, not {result!r}")
    return bool(result)


@lru_cache(maxsize=1024)
def compile_template(text: str) -> Any:
    try:
        return _JINJA.from_string(_quote_step_names(text))
    except TemplateSyntaxError as error:
        raise ExpressionError(f"invalid template (line {error.lineno}): {error.message}") from None


def render_template(text: str, variables: dict[str, Any]) -> str:
    try:
        return compile_template(text).render(**variables)
    except ExpressionError:
        raise
    except Exception as error:
        raise ExpressionError(f"rendering template failed: {error}") from None
