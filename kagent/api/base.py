"""Building blocks shared by every kind: the model base class, references, conditions, durations.

The Python types in this package are the single source of truth for the API. The CRD manifests are
generated from them (see :mod:`kagent.api.crd`), and the controller, webhook and runtime read
resources through them. Attribute docstrings become the field descriptions users see in
``kubectl explain``, so write them for users.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema
from pydantic.alias_generators import to_camel

GROUP = "kagent.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

Duration = Annotated[str, Field(pattern=DURATION_PATTERN, max_length=32)]
"""A duration written like Kubernetes does: ``500ms``, ``30s``, ``5m``, ``1h30m``."""

DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
ObjectName = Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)]
StepName = Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL_PATTERN)]
IdentifierName = Annotated[
    str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z_][A-Za-z0-9_-]*$")
]

FreeForm = Annotated[
    dict[str, Any],
    WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True}),
]
"""An object whose shape Kubernetes does not check (JSON Schemas, pod fragments, inputs)."""

AnyValue = Annotated[Any, WithJsonSchema({"x-kubernetes-preserve-unknown-fields": True})]

IntOrString = Annotated[int | str, WithJsonSchema({"x-kubernetes-int-or-string": True})]


def parse_duration(text: str) -> timedelta:
    """Parse ``1h30m``-style durations; raises ValueError naming the bad text."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"invalid duration {text!r}: use forms like 500ms, 30s, 5m, 1h30m")
    seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))
    return timedelta(seconds=seconds)


def cel(rule: str, message: str, field_path: str | None = None) -> dict[str, str]:
    """One CEL ``x-kubernetes-validations`` entry; the message must name the field at fault."""
    entry = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    return entry


class KagentModel(BaseModel):
    """Base for every API object: camelCase on the wire, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_attribute_docstrings=True,
        validate_default=False,
    )

    def to_wire(self) -> dict[str, Any]:
        """The object as Kubernetes stores it: camelCase keys, unset fields left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class LocalObjectReference(KagentModel):
    """A reference to another object in the same namespace."""

    name: ObjectName
    """Name of the referenced object."""


class SecretKeySelector(KagentModel):
    """A key of a Secret in the same namespace."""

    name: ObjectName
    """Name of the Secret."""
    key: Annotated[str, Field(min_length=1, max_length=253)]
    """Key inside the Secret's data."""


class ConfigMapKeySelector(KagentModel):
    """A key of a ConfigMap in the same namespace."""

    name: ObjectName
    """Name of the ConfigMap."""
    key: Annotated[str, Field(min_length=1, max_length=253)]
    """Key inside the ConfigMap's data."""


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(KagentModel):
    """An observation of one aspect of the object's state, in the Kubernetes convention."""

    type: str
    """Type of the condition, for example Accepted or Ready."""
    status: ConditionStatus
    """True, False or Unknown."""
    reason: str | None = None
    """One CamelCase word saying why the condition is in its state."""
    message: str | None = None
    """A sentence for humans with the details."""
    last_transition_time: str | None = None
    """When the status last changed (RFC 3339)."""
    observed_generation: int | None = None
    """The .metadata.generation the condition was computed from."""


class ObjectMeta(BaseModel):
    """The standard Kubernetes object metadata (only the fields Kagent reads are typed)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    name: str | None = None
    namespace: str | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    uid: str | None = None
    generation: int | None = None
    resource_version: str | None = None
    creation_timestamp: str | None = None
    deletion_timestamp: str | None = None


class PrinterColumn(BaseModel):
    """An ``additionalPrinterColumns`` entry of a CRD."""

    model_config = ConfigDict(frozen=True)  # hashable: part of the dashboard's informer keys

    name: str
    json_path: str
    type: Literal["string", "integer", "number", "boolean", "date"] = "string"
    description: str = ""
    priority: int = 0


class Resource(KagentModel):
    """A top-level kind. Subclasses declare ``spec`` and ``status`` and their CRD facts."""

    kind_name: ClassVar[str]
    plural: ClassVar[str]
    short_names: ClassVar[tuple[str, ...]] = ()
    printer_columns: ClassVar[tuple[PrinterColumn, ...]] = ()
    root_validations: ClassVar[tuple[dict[str, str], ...]] = ()
    scale_subresource: ClassVar[dict[str, str] | None] = None
    """The CRD's scale subresource (spec/status replicas and selector paths), if it has one."""

    api_version: Literal["kagent.dev/v1alpha1"] = API_VERSION
    """Always kagent.dev/v1alpha1."""
    kind: str
    """The kind of the object."""
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    """Standard object metadata."""

    @classmethod
    def singular(cls) -> str:
        return cls.kind_name.lower()


READY_COLUMN = PrinterColumn(
    name="Ready",
    json_path='.status.conditions[?(@.type=="Ready")].status',
    description="Whether the current generation is rolled out and available",
)
ACCEPTED_COLUMN = PrinterColumn(
    name="Accepted",
    json_path='.status.conditions[?(@.type=="Accepted")].status',
    description="Whether every reference resolves",
)
AGE_COLUMN = PrinterColumn(name="Age", json_path=".metadata.creationTimestamp", type="date")
