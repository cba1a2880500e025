"""Parameter lists: the input schema of a Tool and of a Workflow, in one shape."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from kagent.api.base import AnyValue, IdentifierName, KagentModel, cel

ParameterType = Literal["string", "integer", "number", "boolean", "array", "object"]

PARAMETER_LIST = {
    "x-kubernetes-list-type": "map",
    "x-kubernetes-list-map-keys": ["name"],
}


class Parameter(KagentModel):
    """One named input."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "!has(self.enum) || self.type in ['string', 'integer', 'number']",
                    "enum is only allowed for string, integer and number parameters",
                    ".enum",
                ),
            ]
        }
    }

    name: IdentifierName
    """Parameter name, as the model and templates refer to it."""
    type: ParameterType = "string"
    """JSON type of the value: string, integer, number, boolean, array or object."""
    description: Annotated[str, Field(max_length=4096)] | None = None
    """What the value means; the model reads this when it fills the parameter."""
    required: bool = False
    """Whether the value must be given."""
    enum: Annotated[list[str], Field(min_length=1, max_length=256)] | None = None
    """The only values allowed."""
    default: AnyValue = None
    """Value used when none is given."""


def parameters_json_schema(parameters: list[Parameter]) -> dict[str, Any]:
    """The JSON Schema of an object holding these parameters (what a model's tool call sees)."""
    properties: dict[str, Any] = {}
    for parameter in parameters:
        prop: dict[str, Any] = {"type": parameter.type}
        if parameter.description:
            prop["description"] = parameter.description
        if parameter.enum is not None:
            prop["enum"] = [_enum_value(parameter.type, v) for v in parameter.enum]
        if parameter.default is not None:
            prop["default"] = parameter.default
        properties[parameter.name] = prop
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    required = [p.name for p in parameters if p.required]
    if required:
        schema["required"] = required
    return schema


def _enum_value(parameter_type: str, raw: str) -> Any:
    if parameter_type == "integer":
        return int(raw)
    if parameter_type == "number":
        return float(raw)
    return raw
