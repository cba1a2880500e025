"""A scripted stand-in for LLM providers, speaking their real wire formats.

No LLM provider is reachable from a test run, so this is the one stand-in kagent's tests allow —
and it ships so users can test their own agents the same way. It answers the OpenAI Chat
Completions/Embeddings, Anthropic Messages and Bedrock Converse APIs (plain, streaming and tool
calls) closely enough that the official SDKs and pydantic-ai work against it unchanged; the
replies come from a YAML script of rules (see :mod:`kagent.mockllm.script`).
"""

from .app import create_app
from .conversation import ChatRequest, Message, ToolCall, ToolResult
from .embeddings import embed_text
from .script import (
    EmbeddingsConfig,
    ErrorSpec,
    Reply,
    Rule,
    Script,
    ScriptError,
    ScriptSource,
    ToolCallSpec,
    UsageSpec,
    load_script,
    merge_scripts,
    parse_script,
    parse_script_text,
)
from .server import MockLLM, serve
from .state import MockState, RecordedCall

__all__ = [
    "ChatRequest",
    "EmbeddingsConfig",
    "ErrorSpec",
    "Message",
    "MockLLM",
    "MockState",
    "RecordedCall",
    "Reply",
    "Rule",
    "Script",
    "ScriptError",
    "ScriptSource",
    "ToolCall",
    "ToolCallSpec",
    "ToolResult",
    "UsageSpec",
    "create_app",
    "embed_text",
    "load_script",
    "merge_scripts",
    "parse_script",
    "parse_script_text",
    "serve",
]
