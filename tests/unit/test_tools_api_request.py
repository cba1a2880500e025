"""Request building and answer handling of the api tool, and the shared argument checks."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from pydantic_ai.exceptions import ModelRetry, ToolFailed

from kagent.api.tool import ApiTool
from kagent.runtime.tools.api import build_api_request, parse_api_response
from kagent.runtime.tools.base import Redactor, check_arguments, input_schema, model_tool_name


def api(**fields: Any) -> ApiTool:
    return ApiTool.model_validate({"endpoint": "https://svc.example/v1/items/{id}", **fields})


def test_path_placeholders_are_encoded_and_the_rest_go_to_the_query() -> None:
    request = build_api_request(
        api(), {"id": "a/b c", "tags": ["x", "y"], "exact": True, "limit": 5, "skip": None}
    )
    assert request.method == "GET"
    assert request.url.raw_path == b"/v1/items/a%2Fb%20c?tags=x&tags=y&exact=true&limit=5"
    assert request.content == b""


def test_existing_query_in_the_endpoint_is_kept() -> None:
    request = build_api_request(api(endpoint="https://svc.example/search?lang=en"), {"q": "k8s"})
    assert dict(request.url.params) == {"lang": "en", "q": "k8s"}


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH"])
def test_body_methods_send_the_remaining_arguments_as_json(method: str) -> None:
    request = build_api_request(api(method=method), {"id": 7, "name": "n", "meta": {"a": [1]}})
    assert request.url.path == "/v1/items/7"
    assert request.url.query == b""
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == {"name": "n", "meta": {"a": [1]}}


def test_delete_uses_the_query_string() -> None:
    request = build_api_request(api(method="DELETE"), {"id": 1, "force": False})
    assert request.url.raw_path == b"/v1/items/1?force=false"


def test_missing_path_argument_asks_the_model_again() -> None:
    with pytest.raises(ModelRetry, match="missing value for id"):
        build_api_request(api(), {})


def test_headers_timeout_and_auth_kinds() -> None:
    ref = {"name": "s", "key": "k"}
    bearer = build_api_request(api(headers={"X-A": "1"}, timeout="1m30s",
                                   auth={"type": "bearer", "secretRef": ref}), {"id": 1}, "tok")
    assert bearer.headers["authorization"] == "Bearer tok"
    assert bearer.headers["x-a"] == "1"
    assert bearer.extensions["timeout"] == {"connect": 90.0, "read": 90.0, "write": 90.0,
                                            "pool": 90.0}
    basic = build_api_request(api(auth={"type": "basic", "secretRef": ref}), {"id": 1}, "u:p")
    assert basic.headers["authorization"] == "Basic " + base64.b64encode(b"u:p").decode()
    header = build_api_request(api(auth={"type": "header", "header": "X-API-Key",
                                         "secretRef": ref}), {"id": 1}, "key123")
    assert header.headers["x-api-key"] == "key123"
    assert "authorization" not in header.headers
    none = build_api_request(api(auth={"type": "none"}), {"id": 1})
    assert "authorization" not in none.headers
    with pytest.raises(ToolFailed, match="user:password"):
        build_api_request(api(auth={"type": "basic", "secretRef": ref}), {"id": 1}, "nocolon")


def test_trace_context_is_injected_from_the_current_span() -> None:
    assert "traceparent" not in build_api_request(api(), {"id": 1}).headers
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("call") as span:
        request = build_api_request(api(), {"id": 1})
    context = span.get_span_context()
    assert request.headers["traceparent"].startswith(
        f"00-{context.trace_id:032x}-{context.span_id:016x}-"
    )


def response(status: int, body: Any, content_type: str = "application/json") -> httpx.Response:
    content = json.dumps(body).encode() if not isinstance(body, (str, bytes)) else body
    return httpx.Response(status, content=content, headers={"content-type": content_type},
                          request=httpx.Request("GET", "https://svc.example/"))


def test_error_answers_name_the_status_and_redact_secrets() -> None:
    redactor = Redactor()
    redactor.add("tok-12345")
    with pytest.raises(ToolFailed) as failed:
        parse_api_response(response(401, "bad token tok-12345 " + "x" * 2000, "text/plain"),
                           None, redactor)
    message = failed.value.message
    assert message.startswith("the API answered HTTP 401 Unauthorized: bad token [REDACTED]")
    assert "tok-12345" not in message
    assert len(message) < 700


def test_json_text_and_output_schema() -> None:
    redactor = Redactor()
    assert parse_api_response(response(200, {"a": 1}), None, redactor) == {"a": 1}
    assert parse_api_response(response(200, "plain", "text/plain"), None, redactor) == "plain"
    assert parse_api_response(response(204, b"", "text/plain"), None, redactor) == \
        "HTTP 204 (no body)"
    schema = {"type": "object", "required": ["a"], "properties": {"a": {"type": "integer"}}}
    assert parse_api_response(response(200, {"a": 1}), schema, redactor) == {"a": 1}
    with pytest.raises(ToolFailed, match="a: 'x' is not of type 'integer'"):
        parse_api_response(response(200, {"a": "x"}), schema, redactor)
    with pytest.raises(ToolFailed, match="not JSON"):
        parse_api_response(response(200, "plain", "text/plain"), schema, redactor)


def test_argument_checks_coerce_scalars_fill_defaults_and_explain_errors() -> None:
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer"}, "on": {"type": "boolean"},
                       "unit": {"type": "string", "enum": ["a", "b"], "default": "a"}},
        "required": ["n"],
    }
    assert check_arguments(schema, {"n": "3", "on": "false"}) == {"n": 3, "on": False,
                                                                  "unit": "a"}
    with pytest.raises(ModelRetry) as retry:
        check_arguments(schema, {"n": "three", "unit": "c"})
    assert "n: 'three' is not of type 'integer'" in retry.value.message
    assert "unit: 'c' is not one of ['a', 'b']" in retry.value.message


def test_tool_names_and_input_schemas() -> None:
    assert model_tool_name("search.docs-v2") == "search_docs-v2"
    assert len(model_tool_name("a" * 100)) == 64
    from kagent.api.tool import ToolSpec

    spec = ToolSpec.model_validate({"type": "api", "description": "d",
                                    "inputSchema": {"properties": {"q": {"type": "string"}}},
                                    "api": {"endpoint": "http://x"}})
    assert input_schema(spec) == {"type": "object", "properties": {"q": {"type": "string"}}}


@pytest.mark.parametrize("value", ["..", ".", ""])
def test_a_path_argument_cannot_climb_the_path(value: str) -> None:
    with pytest.raises(ModelRetry, match="may not be empty, '.' or '..'"):
        build_api_request(api(), {"id": value})
    # Slashes and dots inside a value are encoded, never read as path segments.
    request = build_api_request(api(), {"id": "../../admin"})
    assert request.url.raw_path == b"/v1/items/..%2F..%2Fadmin"


def test_the_model_cannot_add_arguments_or_replace_fixed_query_parameters() -> None:
    declared = frozenset({"id", "q"})
    with pytest.raises(ModelRetry, match="unknown argument.*admin"):
        build_api_request(api(), {"id": 1, "admin": True}, declared=declared)
    fixed = api(endpoint="https://svc.example/search?limit=10&lang=en")
    with pytest.raises(ModelRetry, match="limit is fixed"):
        build_api_request(fixed, {"q": "k8s", "limit": 1000}, declared=frozenset({"q", "limit"}))
    assert dict(build_api_request(fixed, {"q": "k8s"}, declared=declared).url.params) == {
        "limit": "10", "lang": "en", "q": "k8s"}


def test_declared_arguments_come_from_the_schema() -> None:
    from kagent.runtime.tools.api import declared_arguments

    assert declared_arguments({"properties": {"a": {}, "b": {}}}) == {"a", "b"}
    assert declared_arguments({"properties": {"a": {}}, "additionalProperties": True}) is None


async def test_answers_are_read_up_to_a_limit() -> None:
    from kagent.runtime.tools.api import read_limited

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"x" * (2 * 1024 * 1024 if request.url.path == "/big" else 10))

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        small = await read_limited(http, httpx.Request("GET", "https://svc.example/small"), limit=1024)
        assert small.content == b"x" * 10 and small.status_code == 200
        with pytest.raises(ToolFailed, match="larger than 1 KiB"):
            await read_limited(http, httpx.Request("GET", "https://svc.example/big"), limit=1024)
