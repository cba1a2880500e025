"""CEL conditions and sandboxed templates."""

from __future__ import annotations

import pytest

from kagent.workflow.expressions import ExpressionError, compile_condition, evaluate_condition, render_template

VARS = {"input": {"topic": "agents", "n": 3}, "steps": {"analyze-market": {"output": "APPROVED: ok"}}}


def test_conditions() -> None:
    assert evaluate_condition('steps.analyze-market.output.contains("APPROVED")', VARS)
    assert evaluate_condition("input.n > 2 && input.topic == 'agents'", VARS)
    assert not evaluate_condition("input.n > 5", VARS)


def test_condition_errors() -> None:
    with pytest.raises(ExpressionError, match="invalid CEL"):
        compile_condition("input.n >")
    with pytest.raises(ExpressionError, match="true or false"):
        evaluate_condition("input.n + 1", VARS)
    with pytest.raises(ExpressionError):
        evaluate_condition("input.missing > 1", VARS)


def test_templates() -> None:
    text = "Topic {{ input.topic }}; market said {{ steps.analyze-market.output }}"
    assert render_template(text, VARS) == "Topic agents; market said APPROVED: ok"


def test_template_errors_and_sandbox() -> None:
    with pytest.raises(ExpressionError, match="invalid template"):
        render_template("{{ input.topic ", VARS)
    with pytest.raises(ExpressionError, match="input.nope has no value"):
        render_template("{{ input.nope }}", VARS)
    with pytest.raises(ExpressionError):
        render_template("{{ ''.__class__.__mro__[1].__subclasses__() }}", VARS)
