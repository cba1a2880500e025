"""Tool: something an agent can do — call an API, search documents, run code, ask a human,
use a remote MCP server's tools, or ask another agent."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from kagent.api.base import (
    ACCEPTED_COLUMN,
    AGE_COLUMN,
    Condition,
    Duration,
    FreeForm,
    KagentModel,
    ObjectName,
    PrinterColumn,
    Resource,
    SecretKeySelector,
    cel,
)
from kagent.api.model import EmbeddingSpec
from kagent.api.parameters import PARAMETER_LIST, Parameter
from kagent.api.vectorstore import VectorStore

ToolType = Literal["api", "retrieval", "code", "human", "mcp", "agent"]
TOOL_TYPES: tuple[str, ...] = ("api", "retrieval", "code", "human", "mcp", "agent")


class ApiAuth(KagentModel):
    """How the API call authenticates."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "self.type == 'none' || has(self.secretRef)",
                    "secretRef is required unless auth type is none",
                    ".secretRef",
                ),
                cel(
                    "self.type != 'header' || has(self.header)",
                    "header is required when auth type is header",
                    ".header",
                ),
            ]
        }
    }

    type: Literal["none", "bearer", "basic", "header"] = "bearer"
    """none; bearer (Authorization: Bearer <secret>); basic (the secret holds user:password);
    header (the secret is sent in the header named by header)."""
    secret_ref: SecretKeySelector | None = None
    """Secret key holding the token, user:password, or header value."""
    header: Annotated[str, Field(max_length=256)] | None = None
    """Header name for type header, e.g. X-API-Key."""


class ApiTool(KagentModel):
    """An HTTP call built from the tool's parameters."""

    endpoint: Annotated[str, Field(min_length=1, max_length=2048, pattern=r"^https?://")]
    """URL to call. Parameters named in {braces} in the URL are filled in; the rest go in the
    query string (GET, DELETE) or the JSON body (POST, PUT, PATCH)."""
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "GET"
    """HTTP method."""
    headers: dict[str, str] | None = None
    """Extra request headers (not for secrets: use auth)."""
    auth: ApiAuth | None = None
    """How the call authenticates."""
    timeout: Duration = "30s"
    """How long to wait for the answer."""


class RetrievalTool(KagentModel):
    """Search a vector store and return the closest passages with their sources."""

    vector_store: VectorStore
    """Where the documents are."""
    top_k: Annotated[int, Field(ge=1, le=100)] = 5
    """How many passages to return."""
    embedding: EmbeddingSpec | None = None
    """How the query is embedded; must match how the documents were embedded."""


class CodeTool(KagentModel):
    """Run model-written code in a sandbox: its own user, PID, mount and network namespaces,
    Landlock and seccomp, CPU, memory and wall-clock limits, no network, no files outside a
    size-capped scratch directory. Where the agent pod cannot provide every layer the tool
    refuses to run, unless isolation is best-effort."""

    language: Literal["python"] = "python"
    """Language of the code."""
    timeout: Duration = "30s"
    """Wall-clock limit for one run."""
    memory: Annotated[str, Field(pattern=r"^[0-9]+(Ki|Mi|Gi)$")] = "256Mi"
    """Memory limit for one run, e.g. 256Mi."""
    cpu_time: Duration = "10s"
    """CPU-time limit for one run."""
    scratch_size: Annotated[str, Field(pattern=r"^[0-9]+(Ki|Mi|Gi)$")] = "64Mi"
    """Size of the run's scratch file system (in memory: it counts against the pod's memory)."""
    max_concurrent_runs: Annotated[int, Field(ge=1, le=64)] = 4
    """Runs of this tool at once in one agent pod; more wait (up to timeout), then fail."""
    isolation: Literal["strict", "best-effort"] = "strict"
    """strict: run only inside every isolation layer, refuse otherwise. best-effort: run with
    whichever layers the pod allows (weaker; the webhook warns)."""


class HumanTool(KagentModel):
    """Pause the task until a person answers (A2A input-required)."""

    prompt: Annotated[str, Field(max_length=4096)] | None = None
    """What the person is asked; the model's question is appended."""
    timeout: Duration = "1h"
    """How long to wait for the answer before the task fails."""


class HeaderFromSecret(KagentModel):
    """A request header whose value comes from a Secret."""

    name: Annotated[str, Field(min_length=1, max_length=256)]
    """Header name."""
    secret_key_ref: SecretKeySelector
    """Secret key holding the header's value."""


class McpTool(KagentModel):
    """A remote MCP server whose tools the agent may use."""

    url: Annotated[str, Field(min_length=1, max_length=2048, pattern=r"^https?://")]
    """URL of the MCP endpoint, e.g. http://github-mcp:8080/mcp."""
    transport: Literal["streamable-http", "sse"] = "streamable-http"
    """MCP transport."""
    headers_from: list[HeaderFromSecret] | None = None
    """Headers sent with every request, from Secrets (e.g. an Authorization token)."""
    tool_names: list[Annotated[str, Field(min_length=1, max_length=128)]] | None = None
    """Only these of the server's tools are offered to the model; empty means all."""
    timeout: Duration = "30s"
    """How long one tool call may take."""


class AgentTool(KagentModel):
    """Another Agent, called over A2A."""

    name: ObjectName
    """Name of the Agent in the same namespace."""


_TYPE_BLOCK_RULES = [
    cel(
        f"self.type == '{kind}' ? has(self.{kind}) : !has(self.{kind})",
        f"spec.{kind} is required when type is {kind}, and not allowed otherwise",
        f".{kind}",
    )
    for kind in TOOL_TYPES
]


class ToolSpec(KagentModel):
    """Desired state of a Tool."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                *_TYPE_BLOCK_RULES,
                cel(
                    "!(has(self.parameters) && has(self.inputSchema))",
                    "give either parameters or inputSchema, not both",
                    ".inputSchema",
                ),
                cel(
                    "self.type in ['mcp', 'agent'] || (has(self.description) && "
                    "self.description != '')",
                    "description is required: it is what the model reads to choose the tool",
                    ".description",
                ),
            ]
        }
    }

    type: ToolType
    """What kind of tool: api, retrieval, code, human, mcp or agent."""
    description: Annotated[str, Field(max_length=4096)] | None = None
    """What the tool does; the model reads this to decide when to use it."""
    parameters: Annotated[list[Parameter], Field(max_length=64, json_schema_extra=PARAMETER_LIST)] | None = None
    """Input parameters (name, type, required, enum, description)."""
    input_schema: FreeForm | None = None
    """Input as a JSON Schema object, instead of parameters."""
    output: FreeForm | None = None
    """JSON Schema of the result; results that do not match are reported as tool errors."""
    api: ApiTool | None = None
    """For type api."""
    retrieval: RetrievalTool | None = None
    """For type retrieval."""
    code: CodeTool | None = None
    """For type code."""
    human: HumanTool | None = None
    """For type human."""
    mcp: McpTool | None = None
    """For type mcp."""
    agent: AgentTool | None = None
    """For type agent."""


class DiscoveredTool(KagentModel):
    """A tool found on an MCP server."""

    name: str
    """Tool name on the server."""
    description: str | None = None
    """The server's description of the tool."""


class ToolStatus(KagentModel):
    """Observed state of a Tool."""

    observed_generation: int | None = None
    """The .metadata.generation this status describes."""
    conditions: list[Condition] | None = None
    """Accepted: the Tool's references resolve (and, for mcp, the server answered). For code,
    Isolated: True when programs run only inside every isolation layer (isolation strict)."""
    discovered_tools: list[DiscoveredTool] | None = None
    """For mcp: the tools the server offers that this Tool passes on."""
    last_discovery_time: str | None = None
    """For mcp: when the server's tools were last listed."""


class Tool(Resource):
    """A tool agents can use."""

    kind_name: ClassVar[str] = "Tool"
    plural: ClassVar[str] = "tools"
    short_names: ClassVar[tuple[str, ...]] = ("tl",)
    printer_columns: ClassVar[tuple[PrinterColumn, ...]] = (
        PrinterColumn(name="Type", json_path=".spec.type"),
        ACCEPTED_COLUMN,
        AGE_COLUMN,
    )

    kind: Literal["Tool"] = "Tool"
    """Always Tool."""
    spec: ToolSpec
    """Desired tool."""
    status: ToolStatus | None = None
    """Observed state, written by the controller."""
