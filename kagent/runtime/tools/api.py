"""Tool type ``api``: one HTTP call built from the model's arguments."""

from __future__ import annotations

import base64
import json
import re
from typing import Any
from urllib.parse import quote

import httpx
from opentelemetry import propagate
from pydantic_ai.exceptions import ModelRetry, ToolFailed

from kagent.api.base import parse_duration
from kagent.api.tool import ApiTool, Tool
from kagent.runtime.context import RuntimeContext
from kagent.runtime.tools.base import (
    Redactor,
    SingleToolToolset,
    check_output,
    input_schema,
    metered,
    model_tool_name,
    truncate,
)

USER_AGENT = "kagent-tool"
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
ERROR_EXCERPT = 500
RESULT_LIMIT = 64 * 1024
RESPONSE_LIMIT = 4 * 1024 * 1024
"""Bytes of an answer read at most; a bigger answer fails the call instead of filling memory."""
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_-]*)\}")


def auth_headers(api: ApiTool, secret: str | None) -> dict[str, str]:
    """The headers that carry the credential; empty for ``none`` or no auth block."""
    auth = api.auth
    if auth is None or auth.type == "none":
        return {}
    if secret is None:
        raise ToolFailed(f"auth type {auth.type} needs a secretRef")
    if auth.type == "bearer":
        return {"Authorization": f"Bearer {secret}"}
    if auth.type == "basic":
        if ":" not in secret:
            raise ToolFailed("basic auth needs the Secret to hold user:password")
        return {"Authorization": "Basic " + base64.b64encode(secret.encode()).decode()}
    assert auth.header is not None, "the API requires header for auth type header"
    return {auth.header: secret}


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def declared_arguments(schema: dict[str, Any]) -> frozenset[str] | None:
    """The argument names a tool's schema declares; None when it admits any."""
    if schema.get("additionalProperties") not in (None, False):
        return None
    return frozenset(schema.get("properties") or {})


def _path_value(name: str, value: Any) -> str:
    text = _query_value(value)
    if text in (".", "..") or not text:
        raise ModelRetry(f"{name} goes into the URL's path and may not be empty, '.' or '..'")
    return quote(text, safe="")


def build_api_request(api: ApiTool, arguments: dict[str, Any], secret: str | None = None,
                      declared: frozenset[str] | None = None) -> httpx.Request:
    """The HTTP request for one call.

    ``{name}`` placeholders in the endpoint take the argument of that name (URL-encoded, and
    never a '.' or '..' that would climb the path); the other arguments go to the query string
    for GET and DELETE, or to a JSON object body for POST, PUT and PATCH. Arguments that are
    null are left out. A model may not add arguments the tool does not declare, nor replace a
    query parameter the endpoint fixes.
    """
    remaining = {k: v for k, v in arguments.items() if v is not None}
    if declared is not None:
        unknown = sorted(set(remaining) - declared)
        if unknown:
            raise ModelRetry(f"unknown argument(s) {', '.join(unknown)}; the tool takes "
                             f"{', '.join(sorted(declared)) or 'none'}")
    missing = [n for n in _PLACEHOLDER.findall(api.endpoint) if n not in remaining]
    if missing:
        raise ModelRetry(f"missing value for {', '.join(missing)} (needed in the URL)")
    used = set(_PLACEHOLDER.findall(api.endpoint))
    url = _PLACEHOLDER.sub(lambda m: _path_value(m.group(1), remaining[m.group(1)]), api.endpoint)
    rest = {k: v for k, v in remaining.items() if k not in used}
    fixed = sorted(set(rest) & set(httpx.URL(url).params.keys()))
    if fixed and api.method not in BODY_METHODS:
        raise ModelRetry(f"{', '.join(fixed)} is fixed by the tool's endpoint and cannot be given")
    headers = {"User-Agent": USER_AGENT, "Accept": "application/json, */*;q=0.5"}
    headers.update(api.headers or {})
    headers.update(auth_headers(api, secret))
    propagate.inject(headers)
    timeout = httpx.Timeout(parse_duration(api.timeout).total_seconds())
    extensions = {"timeout": timeout.as_dict()}
    if api.method in BODY_METHODS:
        return httpx.Request(api.method, url, headers=headers, json=rest, extensions=extensions)
    params: list[tuple[str, str]] = []
    for name, value in rest.items():
        for item in value if isinstance(value, list) else [value]:
            params.append((name, _query_value(item)))
    target = httpx.URL(url)
    if params:  # merged, so a query already in the endpoint is kept
        target = target.copy_merge_params(params)
    return httpx.Request(api.method, target, headers=headers, extensions=extensions)


def parse_api_response(response: httpx.Response, output: dict[str, Any] | None,
                       redactor: Redactor) -> Any:
    """The result the model gets: JSON when the body is JSON, else text; errors as failures."""
    if not response.is_success:
        excerpt = redactor.text(truncate(response.text.strip(), ERROR_EXCERPT))
        reason = response.reason_phrase or ""
        raise ToolFailed(
            f"the API answered HTTP {response.status_code} {reason}".rstrip()
            + (f": {excerpt}" if excerpt else "")
        )
    content_type = response.headers.get("content-type", "")
    text = response.text
    value: Any
    is_json = False
    if text.strip() and ("json" in content_type or text.lstrip()[:1] in ("{", "[")):
        try:
            value = response.json()
            is_json = True
        except ValueError:
            value = text
    else:
        value = text
    if output is not None:
        if not is_json:
            raise ToolFailed(
                "the API's answer is not JSON, but the tool's output schema expects JSON: "
                + redactor.text(truncate(text, ERROR_EXCERPT))
            )
        check_output(output, value)
    if isinstance(value, str):
        value = truncate(value, RESULT_LIMIT) if value else f"HTTP {response.status_code} (no body)"
    return redactor.value(value)


async def read_limited(http: httpx.AsyncClient, request: httpx.Request,
                       limit: int = RESPONSE_LIMIT) -> httpx.Response:
    """Send ``request`` and read at most ``limit`` bytes of the answer."""
    response = await http.send(request, stream=True)
    try:
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > limit:
                raise ToolFailed(f"the API's answer is larger than {limit // 1024} KiB; ask for less")
    finally:
        await response.aclose()
    return httpx.Response(response.status_code, headers=response.headers, content=bytes(body),
                          request=request, extensions={"reason_phrase": response.reason_phrase.encode()})


def build_api_toolset(tool: Tool, ctx: RuntimeContext) -> SingleToolToolset:
    spec = tool.spec
    api = spec.api
    assert api is not None, "a Tool of type api has an api block"
    name = model_tool_name(tool.metadata.name or "api")
    redactor = Redactor(ctx)
    timeout_text = api.timeout
    declared = declared_arguments(input_schema(spec))

    async def call(arguments: dict[str, Any]) -> Any:
        secret = None
        if api.auth is not None and api.auth.type != "none" and api.auth.secret_ref is not None:
            secret = ctx.secrets.get(api.auth.secret_ref)
            redactor.add(secret, base64.b64encode(secret.encode()).decode())
        request = build_api_request(api, arguments, secret, declared)
        try:
            response = await read_limited(ctx.http, request)
        except httpx.TimeoutException:
            raise ToolFailed(f"the API did not answer within {timeout_text}") from None
        except httpx.HTTPError as exc:
            raise ToolFailed(
                redactor.text(f"could not reach the API ({type(exc).__name__}: {exc})")
            ) from None
        return parse_api_response(response, spec.output, redactor)

    toolset = SingleToolToolset(
        name=name, description=spec.description, schema=input_schema(spec), handler=call
    )
    return metered(toolset, ctx, redactor)
