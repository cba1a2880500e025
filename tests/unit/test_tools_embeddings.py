"""embed() against the scripted model server's real /v1/embeddings endpoint, and Titan on
Bedrock through boto3 against a stand-in of the InvokeModel API."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from kagent.api.model import EmbeddingSpec
from kagent.runtime.context import RuntimeContext
from kagent.runtime.secrets import SecretResolver
from kagent.runtime.tools.embeddings import (
    EmbeddingError,
    embed,
    embeddings_request_body,
    embeddings_url,
)
from kagent.mockllm import MockLLM, embed_text
from kagent.local.services import AsgiServer


@pytest.fixture(scope="module")
def llm() -> Iterator[MockLLM]:
    with MockLLM({"embeddings": {"dimensions": 64}}) as server:
        yield server


@pytest.fixture
async def ctx() -> AsyncIterator[RuntimeContext]:
    secrets = SecretResolver([{"metadata": {"name": "emb"}, "stringData": {"key": "sk-emb-1"}}],
                             environ={})
    context = RuntimeContext(agent_name="a", namespace="n", secrets=secrets)
    yield context
    await context.http.aclose()


def close(got: list[list[float]], want: list[list[float]]) -> bool:
    return len(got) == len(want) and all(g == pytest.approx(w, abs=1e-6)
                                         for g, w in zip(got, want, strict=True))


def spec(llm: MockLLM, **fields: Any) -> EmbeddingSpec:
    return EmbeddingSpec.model_validate({
        "provider": "vllm", "model": "bge-small", "endpoint": llm.openai_base_url,
        "apiKeySecretRef": {"name": "emb", "key": "key"}, **fields,
    })


async def test_openai_compatible_embeddings(llm: MockLLM, ctx: RuntimeContext) -> None:
    llm.reset()
    texts = ["pgvector stores embeddings", "cats sleep a lot"]
    vectors = await embed(texts, spec(llm), ctx)
    assert close(vectors, [embed_text(t, 64) for t in texts])
    [call] = llm.calls
    assert call.endpoint == "embeddings" and call.model == "bge-small"
    assert call.inputs == texts
    assert (call.auth_scheme, call.api_key) == ("bearer", "sk-emb-1")
    assert "dimensions" not in call.body  # not sent to generic OpenAI-compatible servers


async def test_dimensions_are_requested_from_openai_and_checked(llm: MockLLM,
                                                                ctx: RuntimeContext) -> None:
    llm.reset()
    vectors = await embed(["x"], spec(llm, provider="openai", dimensions=32), ctx)
    assert len(vectors[0]) == 32
    assert llm.calls[0].body["dimensions"] == 32
    with pytest.raises(EmbeddingError, match="returned 64 dimensions, but embedding.dimensions "
                                             "is 32"):
        await embed(["x"], spec(llm, dimensions=32), ctx)


async def test_http_errors_are_explained(ctx: RuntimeContext) -> None:
    bad = EmbeddingSpec(provider="vllm", endpoint="http://127.0.0.1:9/v1")
    with pytest.raises(EmbeddingError, match="could not reach the embedding API"):
        await embed(["x"], bad, ctx)


def test_request_body() -> None:
    body = embeddings_request_body(["a"], EmbeddingSpec(dimensions=8))
    assert body == {"model": "text-embedding-3-small", "input": ["a"], "encoding_format": "float",
                    "dimensions": 8}


async def test_bedrock_titan(monkeypatch: pytest.MonkeyPatch, ctx: RuntimeContext) -> None:
    seen: list[dict[str, Any]] = []

    async def invoke(request: Request) -> JSONResponse:
        body = json.loads(await request.body())
        seen.append({"model": request.path_params["model"], "body": body,
                     "auth": request.headers.get("authorization", "")})
        return JSONResponse({"embedding": embed_text(body["inputText"], body["dimensions"]),
                             "inputTextTokenCount": 3})

    app = Starlette(routes=[Route("/model/{model}/invoke", invoke, methods=["POST"])])
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDTEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with AsgiServer(app) as server:
        vectors = await embed(["one text", "another"], EmbeddingSpec(
            provider="bedrock", endpoint=server.url, dimensions=256), ctx)
    assert close(vectors, [embed_text("one text", 256), embed_text("another", 256)])
    assert {s["model"] for s in seen} == {"amazon.titan-embed-text-v2:0"}
    assert sorted(s["body"]["inputText"] for s in seen) == ["another", "one text"]
    assert all(s["auth"].startswith("AWS4-HMAC-SHA256 Credential=AKIDTEST/") for s in seen)


def test_url_is_the_endpoint_else_the_sdks_base_url_variable_else_openai() -> None:
    spec = EmbeddingSpec.model_validate({"provider": "openai", "model": "m"})
    assert embeddings_url(spec, {}) == "https://api.openai.com/v1/embeddings"
    assert embeddings_url(spec, {"OPENAI_BASE_URL": "http://gw:8/v1/"}) == "http://gw:8/v1/embeddings"
    own = EmbeddingSpec.model_validate({"provider": "vllm", "model": "m",
                                        "endpoint": "http://tei:80/v1/embeddings"})
    assert embeddings_url(own, {"OPENAI_BASE_URL": "http://gw:8/v1"}) == "http://tei:80/v1/embeddings"
