"""Tool type ``retrieval``: embed the model's query, search the vector store, return the
closest passages with their sources and scores, closest first."""

from __future__ import annotations

from typing import Any

from pydantic_ai.exceptions import ModelRetry

from kagent.api.tool import Tool
from kagent.runtime.context import RuntimeContext
from kagent.runtime.tools.base import (
    Redactor,
    SingleToolToolset,
    input_schema,
    main_string_argument,
    metered,
    model_tool_name,
    truncate,
)
from kagent.runtime.tools.embeddings import embed
from kagent.runtime.tools.vectorstore import Passage, VectorStore, open_vector_store

PASSAGE_LIMIT = 4000
DEFAULT_SCHEMA = {
    "type": "object",
    "properties": {
        "query": {"type": "string", "description": "What to search for, in natural language."}
    },
    "required": ["query"],
}


def passage_result(rank: int, passage: Passage) -> dict[str, Any]:
    extra = {k: v for k, v in passage.metadata.items() if k != "source"}
    result: dict[str, Any] = {
        "rank": rank,
        "score": round(passage.score, 4),
        "source": passage.source,
        "text": truncate(passage.text, PASSAGE_LIMIT),
    }
    if extra:
        result["metadata"] = extra
    return result


def build_retrieval_toolset(tool: Tool, ctx: RuntimeContext) -> Any:
    spec = tool.spec
    retrieval = spec.retrieval
    assert retrieval is not None, "a Tool of type retrieval has a retrieval block"
    schema = input_schema(spec, DEFAULT_SCHEMA)
    query_argument = main_string_argument(schema, "query")
    dimensions = retrieval.embedding.dimensions if retrieval.embedding else None
    store: VectorStore | None = None

    async def call(arguments: dict[str, Any]) -> Any:
        nonlocal store
        query = arguments.get(query_argument)
        if not isinstance(query, str) or not query.strip():
            raise ModelRetry(f"give the text to search for in '{query_argument}'")
        [vector] = await embed([query], retrieval.embedding, ctx)
        if store is None:
            store = open_vector_store(retrieval.vector_store, dimensions, ctx)
        passages = sorted(await store.search(vector, retrieval.top_k), key=lambda p: -p.score)
        if not passages:
            return "No passages found."
        return [passage_result(i + 1, p) for i, p in enumerate(passages)]

    toolset = SingleToolToolset(
        name=model_tool_name(tool.metadata.name or "retrieval"),
        description=spec.description, schema=schema, handler=call,
    )
    return metered(toolset, ctx, Redactor(ctx))
