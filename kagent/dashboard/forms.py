"""Starting a run from the browser: the Workflow's input parameters checked against what the
form sent (pure), with errors that name the field."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from kagent.api.parameters import Parameter, parameters_json_schema

MAX_RUN_NAME = 63


class InputError(ValueError):
    """The form's values do not fit the Workflow's inputs; ``errors`` maps field → message."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


def check_run_input(parameters: list[dict[str, Any]], values: Any) -> dict[str, Any]:
    """The run's ``spec.input``: the values for known parameters, typed as declared.

    Empty strings from optional fields are left out (the engine then uses the default); unknown
    names, wrong types, values outside an enum and missing required values raise InputError."""
    import jsonschema

    if not isinstance(values, dict):
        raise InputError({"input": "must be an object of parameter values"})
    try:
        declared = [Parameter.model_validate(p) for p in parameters]
    except ValidationError as error:
        raise InputError({"workflow": f"its input schema is not valid: {error}"}) from None
    by_name = {p.name: p for p in declared}
    errors: dict[str, str] = {}
    for name in values:
        if name not in by_name:
            errors[str(name)] = f"the workflow has no input named {name!r}"
    cleaned = {k: v for k, v in values.items()
               if k in by_name and not (v == "" and not by_name[k].required)}
    schema = parameters_json_schema(declared)
    for error in jsonschema.Draft202012Validator(schema).iter_errors(cleaned):
        if error.validator == "required":
            missing = error.message.split("'")[1] if "'" in error.message else "input"
            errors[missing] = "required"
        else:
            field = str(error.path[0]) if error.path else "input"
            errors[field] = error.message
    for name, value in cleaned.items():
        if by_name[name].required and value in ("", None):
            errors[name] = "required"
    if errors:
        raise InputError(errors)
    return cleaned


def check_run_name(name: Any) -> str | None:
    """An optional run name, checked as Kubernetes would (a DNS label here, for a clear error)."""
    import re

    if name in (None, ""):
        return None
    if not isinstance(name, str) or len(name) > MAX_RUN_NAME or not re.fullmatch(
            r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name):
        raise InputError({"name": "lower-case letters, digits and '-', at most 63, "
                                  "starting and ending with a letter or digit"})
    return name
