"""The Bedrock Converse wire format, exercised through boto3's ``bedrock-runtime`` client."""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator
from typing import Any

import boto3
import botocore.exceptions
import pytest
from botocore.config import Config
from botocore.eventstream import ChecksumMismatch, EventStreamBuffer

from kagent.mockllm import MockLLM
from kagent.mockllm.eventstream import encode_event

TOOL_CONFIG: Any = {
    "tools": [
        {
            "toolSpec": {
                "name": "get_weather",
                "description": "Current weather for a city",
                "inputSchema": {
                    "json": {"type": "object", "properties": {"city": {"type": "string"}}}
                },
            }
        }
    ]
}

SCRIPT = {
    "rules": [
        {
            "name": "answer",
            "has_tool_result": "get_weather",
            "content": "Weather report: {{tool_result}}",
        },
        {
            "name": "call",
            "contains": "weather",
            "tools_offered": "get_weather",
            "tool_calls": [{"name": "get_weather", "arguments": {"city": "Lisbon"}}],
        },
        {"name": "nova", "model": "amazon.nova-*", "content": "Nova says: {{last_user}}"},
    ]
}

ARN = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-sonnet-4-5-v1:0"


@pytest.fixture(scope="module")
def llm() -> Iterator[MockLLM]:
    with MockLLM(SCRIPT) as server:
        yield server


@pytest.fixture
def client(llm: MockLLM) -> Any:
    llm.set_script(SCRIPT)
    llm.reset()
    return boto3.client(
        "bedrock-runtime",
        endpoint_url=llm.url,
        region_name="us-east-1",
        aws_access_key_id="AKIDMOCK",
        aws_secret_access_key="not-sent-anywhere",
        config=Config(retries={"total_max_attempts": 1}),
    )


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": [{"text": text}]}


def test_converse_with_url_encoded_model_id(client: Any, llm: MockLLM) -> None:
    response = client.converse(
        modelId="amazon.nova-pro-v1:0",
        system=[{"text": "be brief"}],
        messages=[user("hi nova")],
        inferenceConfig={"maxTokens": 100},
    )
    assert response["output"]["message"] == {
        "role": "assistant",
        "content": [{"text": "Nova says: hi nova"}],
    }
    assert response["stopReason"] == "end_turn"
    assert (
        response["usage"]["totalTokens"]
        == response["usage"]["inputTokens"] + response["usage"]["outputTokens"]
    )
    client.converse(modelId=ARN, messages=[user("through an inference profile")])
    first, second = llm.calls
    assert (first.model, first.system, first.rule) == ("amazon.nova-pro-v1:0", "be brief", "nova")
    assert second.model == ARN and second.rule == "default"
    assert first.auth_scheme == "sigv4" and first.api_key == "AKIDMOCK"
    assert first.body["inferenceConfig"] == {"maxTokens": 100}


def test_converse_stream_text(client: Any) -> None:
    response = client.converse_stream(
        modelId="amazon.nova-lite-v1:0", messages=[user("one two three four")]
    )
    events = list(response["stream"])
    kinds = [next(iter(e)) for e in events]
    assert kinds[0] == "messageStart" and kinds[-2:] == ["messageStop", "metadata"]
    text = "".join(
        e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e
    )
    assert text == "Nova says: one two three four"
    assert kinds.count("contentBlockDelta") >= 4
    assert events[-2]["messageStop"]["stopReason"] == "end_turn"
    assert events[-1]["metadata"]["usage"]["outputTokens"] == 8


def _tool_round_trip(client: Any, stream: bool) -> tuple[dict[str, Any], str]:
    messages = [user("What's the weather like?")]
    kwargs = {"modelId": "anthropic.claude-3-haiku-20240307-v1:0", "toolConfig": TOOL_CONFIG}
    if stream:
        tool_use: dict[str, Any] = {}
        arguments = ""
        stop = None
        for event in client.converse_stream(messages=messages, **kwargs)["stream"]:
            if "contentBlockStart" in event:
                tool_use = dict(event["contentBlockStart"]["start"]["toolUse"])
            elif "contentBlockDelta" in event and "toolUse" in event["contentBlockDelta"]["delta"]:
                arguments += event["contentBlockDelta"]["delta"]["toolUse"]["input"]
            elif "messageStop" in event:
                stop = event["messageStop"]["stopReason"]
        tool_use["input"] = json.loads(arguments)
    else:
        response = client.converse(messages=messages, **kwargs)
        stop = response["stopReason"]
        (block,) = response["output"]["message"]["content"]
        tool_use = block["toolUse"]
    assert stop == "tool_use"
    messages.append({"role": "assistant", "content": [{"toolUse": tool_use}]})
    result = {
        "toolUseId": tool_use["toolUseId"],
        "content": [{"json": {"temp_c": 24, "sky": "clear"}}],
    }
    messages.append({"role": "user", "content": [{"toolResult": result}]})
    second = client.converse(messages=messages, **kwargs)
    return tool_use, second["output"]["message"]["content"][0]["text"]


@pytest.mark.parametrize("stream", [False, True])
def test_tool_use_round_trip(client: Any, llm: MockLLM, stream: bool) -> None:
    tool_use, answer = _tool_round_trip(client, stream)
    assert tool_use["name"] == "get_weather" and tool_use["toolUseId"].startswith("tooluse_")
    assert tool_use["input"] == {"city": "Lisbon"}
    assert answer == 'Weather report: {"temp_c": 24, "sky": "clear"}'
    assert [c.rule for c in llm.calls] == ["call", "answer"]
    assert llm.calls[0].tools == ["get_weather"]


@pytest.mark.parametrize(
    ("status", "code", "http_status"),
    [
        (429, "ThrottlingException", 429),
        (400, "ValidationException", 400),
        (401, "UnrecognizedClientException", 403),  # AWS reports bad credentials as 403
        (500, "InternalServerException", 500),
    ],
)
def test_errors_are_botocore_client_errors(
    client: Any, llm: MockLLM, status: int, code: str, http_status: int
) -> None:
    llm.set_script(
        {"rules": [{"error": {"status": status, "message": "scripted bedrock failure"}}]}
    )
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        client.converse(modelId="m", messages=[user("hi")])
    error = caught.value.response
    assert error["Error"] == {"Code": code, "Message": "scripted bedrock failure"}
    assert error["ResponseMetadata"]["HTTPStatusCode"] == http_status
    if status == 429:
        assert isinstance(caught.value, client.exceptions.ThrottlingException)
    with pytest.raises(botocore.exceptions.ClientError, match=code):
        client.converse_stream(modelId="m", messages=[user("hi")])


def test_event_stream_frames_are_byte_exact() -> None:
    frame = encode_event("messageStop", {"stopReason": "end_turn"})
    total, headers_length, prelude_crc = struct.unpack(">III", frame[:12])
    assert total == len(frame)
    assert prelude_crc == zlib.crc32(frame[:8])
    assert struct.unpack(">I", frame[-4:])[0] == zlib.crc32(frame[:-4])
    buffer = EventStreamBuffer()
    buffer.add_data(frame)
    (message,) = list(buffer)
    assert message.headers == {
        ":event-type": "messageStop",
        ":content-type": "application/json",
        ":message-type": "event",
    }
    assert json.loads(message.payload) == {"stopReason": "end_turn"}
    assert headers_length == len(frame) - 16 - len(message.payload)

    corrupted = EventStreamBuffer()
    corrupted.add_data(frame[:-1] + bytes([frame[-1] ^ 0xFF]))
    with pytest.raises(ChecksumMismatch):
        list(corrupted)
