"""Turning text into vectors, for retrieval tools and long-term memory.

``openai`` and ``vllm`` speak the OpenAI ``/v1/embeddings`` API (vLLM, KubeAI, Ollama, TEI and
most gateways do too). ``bedrock`` calls Amazon Titan text embeddings through boto3, with the
pod's AWS credentials.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping
from typing import Any

import httpx

from kagent.api.model import EmbeddingSpec
from kagent.runtime.context import RuntimeContext

OPENAI_ENDPOINT = "https://api.openai.com/v1"
BATCH_SIZE = 128
DEFAULT_BEDROCK_MODEL = "amazon.titan-embed-text-v2:0"


class EmbeddingError(RuntimeError):
    """The embedding API refused or answered something unusable; the message says which."""


async def embed(texts: list[str], spec: EmbeddingSpec | None,
                ctx: RuntimeContext) -> list[list[float]]:
    """One vector per text, in order."""
    if not texts:
        return []
    spec = spec or EmbeddingSpec()
    if spec.provider == "bedrock":
        vectors = await _embed_bedrock(texts, spec)
    else:
        vectors = []
        for start in range(0, len(texts), BATCH_SIZE):
            vectors += await _embed_openai(texts[start:start + BATCH_SIZE], spec, ctx)
    if spec.dimensions is not None:
        for vector in vectors:
            if len(vector) != spec.dimensions:
                raise EmbeddingError(
                    f"embedding model {spec.model} returned {len(vector)} dimensions, "
                    f"but embedding.dimensions is {spec.dimensions}"
                )
    return vectors


def embeddings_url(spec: EmbeddingSpec, environ: Mapping[str, str] | None = None) -> str:
    """``endpoint``, else — as the OpenAI SDK does for the chat model — ``OPENAI_BASE_URL``,
    else OpenAI's own API."""
    env = os.environ if environ is None else environ
    base = (spec.endpoint or env.get("OPENAI_BASE_URL") or OPENAI_ENDPOINT).rstrip("/")
    return base if base.endswith("/embeddings") else f"{base}/embeddings"


def embeddings_request_body(texts: list[str], spec: EmbeddingSpec) -> dict[str, Any]:
    body: dict[str, Any] = {"model": spec.model, "input": texts, "encoding_format": "float"}
    # OpenAI's text-embedding-3 models shorten vectors on request; many OpenAI-compatible servers
    # reject the field, so for them the size is only checked on the answer.
    if spec.dimensions is not None and spec.provider == "openai":
        body["dimensions"] = spec.dimensions
    return body


async def _embed_openai(texts: list[str], spec: EmbeddingSpec,
                        ctx: RuntimeContext) -> list[list[float]]:
    headers = {"Content-Type": "application/json"}
    key = ctx.secrets.get_optional(spec.api_key_secret_ref)
    if key:
        headers["Authorization"] = f"Bearer {key}"
    url = embeddings_url(spec)
    try:
        response = await ctx.http.post(url, json=embeddings_request_body(texts, spec),
                                       headers=headers)
    except httpx.HTTPError as exc:
        raise EmbeddingError(f"could not reach the embedding API at {url}: {exc}") from None
    if not response.is_success:
        excerpt = response.text[:300]
        if key:
            excerpt = excerpt.replace(key, "[REDACTED]")
        raise EmbeddingError(
            f"the embedding API at {url} answered HTTP {response.status_code}: {excerpt}"
        )
    try:
        data = sorted(response.json()["data"], key=lambda item: item.get("index", 0))
        vectors = [[float(x) for x in item["embedding"]] for item in data]
    except (ValueError, KeyError, TypeError) as exc:
        raise EmbeddingError(
            f"the embedding API at {url} answered an unexpected body: {exc}"
        ) from None
    if len(vectors) != len(texts):
        raise EmbeddingError(f"asked for {len(texts)} embeddings, got {len(vectors)}")
    return vectors


async def _embed_bedrock(texts: list[str], spec: EmbeddingSpec) -> list[list[float]]:
    import boto3

    # The API's default model name is OpenAI's; on bedrock it means "the default Titan model".
    model = DEFAULT_BEDROCK_MODEL if spec.model == EmbeddingSpec().model else spec.model
    if not model.startswith("amazon.titan-embed"):
        raise EmbeddingError(
            f"embedding model {model} is not supported on bedrock: use an Amazon Titan text "
            "embeddings model such as " + DEFAULT_BEDROCK_MODEL
        )
    client = boto3.client("bedrock-runtime", endpoint_url=spec.endpoint or None)

    def one(text: str) -> list[float]:
        body: dict[str, Any] = {"inputText": text}
        if spec.dimensions is not None:
            body["dimensions"] = spec.dimensions
        answer = client.invoke_model(
            modelId=model, body=json.dumps(body), contentType="application/json",
            accept="application/json",
        )
        return [float(x) for x in json.loads(answer["body"].read())["embedding"]]

    # Titan embeds one text per call; boto3 is blocking, so the calls run in threads.
    return list(await asyncio.gather(*(asyncio.to_thread(one, t) for t in texts)))
