"""The Kagent API (group kagent.dev, version v1alpha1): the single source of truth for the
CRDs, the controller, the webhook and the runtime."""

from kagent.api.agent import Agent, AgentSpec, AgentStatus
from kagent.api.budget import Budget, BudgetSpec
from kagent.api.base import API_VERSION, GROUP, VERSION, Condition, Resource, parse_duration
from kagent.api.memory import Memory, MemorySpec
from kagent.api.tool import Tool, ToolSpec
from kagent.api.workflow import Workflow, WorkflowRun, WorkflowRunSpec, WorkflowSpec

KINDS: tuple[type[Resource], ...] = (Agent, Tool, Memory, Workflow, WorkflowRun, Budget)
KIND_BY_NAME: dict[str, type[Resource]] = {k.kind_name: k for k in KINDS}

__all__ = [
    "API_VERSION",
    "GROUP",
    "KINDS",
    "KIND_BY_NAME",
    "VERSION",
    "Agent",
    "AgentSpec",
    "AgentStatus",
    "Budget",
    "BudgetSpec",
    "Condition",
    "Memory",
    "MemorySpec",
    "Resource",
    "Tool",
    "ToolSpec",
    "Workflow",
    "WorkflowRun",
    "WorkflowRunSpec",
    "WorkflowSpec",
    "parse_duration",
]
