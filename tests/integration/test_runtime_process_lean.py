"""``kagent runtime`` as a pod runs it, on the lean hot path: uvloop and httptools loaded, and no
log line per request from the libraries it uses (the model client's "HTTP Request" lines,
a2a-sdk's task notes), while real answers still come back over both protocols."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from kagent.mockllm import MockLLM
from kagent.testing.runtime import RuntimeProcess
from tests.runtime_manifests import agent, unique


@pytest.fixture(scope="module")
def llm() -> Iterator[MockLLM]:
    with MockLLM({"default": {"content": "lean says {{last_user}}"}}) as server:
        yield server


def test_requests_leave_no_library_log_lines(llm: MockLLM) -> None:
    name = unique("lean")
    model = {"provider": "vllm", "name": "m", "endpoint": f"{llm.url}/v1"}
    with RuntimeProcess([agent(name, model)]) as runtime:
        assert runtime._process is not None
        maps = Path(f"/proc/{runtime._process.pid}/maps").read_text()
        assert "uvloop" in maps and "httptools" in maps
        with openai.OpenAI(base_url=runtime.openai_base_url, api_key="x") as client:
            for text in ("one", "two"):
                answer = client.chat.completions.create(
                    model=name, messages=[{"role": "user", "content": text}],
                    extra_headers={"X-Conversation-Id": "c1"})
                assert answer.choices[0].message.content == f"lean says {text}"
        reply = httpx.post(f"{runtime.url}/", headers={"A2A-Version": "1.0"}, timeout=30, json={
            "jsonrpc": "2.0", "id": 1, "method": "SendMessage",
            "params": {"message": {"messageId": str(uuid.uuid4()), "contextId": "c2",
                                   "role": "ROLE_USER", "parts": [{"text": "three"}]}},
        }).json()
        assert reply["result"]["task"]["status"]["state"] == "TASK_STATE_COMPLETED"
        logs = runtime.logs()
    assert f"agent {name} serving" in logs  # the runtime's own lines stay
    assert "HTTP Request" not in logs
    assert " INFO a2a" not in logs
