"""Running the mock: the in-process ``MockLLM`` lifecycle and ``serve()`` as a separate process."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from kagent.mockllm import MockLLM, ScriptError

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "mockllm" / "weather.yaml"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_mockllm_lifecycle_and_addresses() -> None:
    llm = MockLLM(EXAMPLE)
    with pytest.raises(RuntimeError, match="not started"):
        _ = llm.url
    with llm:
        assert llm.url == f"http://127.0.0.1:{llm.port}"
        assert llm.openai_base_url == f"{llm.url}/v1"
        assert httpx.get(f"{llm.url}/_mock/health").json() == {"ok": True}
        port = llm.port
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/_mock/health")


def test_set_script_rejects_bad_scripts_and_keeps_the_old_one() -> None:
    with MockLLM({"rules": [{"content": "old"}]}) as llm:
        with pytest.raises(ScriptError, match=r"rules\[0\]\.times"):
            llm.set_script({"rules": [{"content": "new", "times": 0}]})
        client = openai.OpenAI(base_url=llm.openai_base_url, api_key="x", max_retries=0)
        reply = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "q"}]
        )
        assert reply.choices[0].message.content == "old"


def test_serve_runs_the_example_script_in_another_process() -> None:
    port = free_port()
    code = (
        "import sys; from kagent.mockllm import serve; serve(sys.argv[1], int(sys.argv[2]))"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code, str(EXAMPLE), str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"{base}/_mock/health")
                break
            except httpx.ConnectError:
                assert process.poll() is None, (
                    process.stdout.read().decode() if process.stdout else ""
                )
                assert time.monotonic() < deadline, "serve() did not come up"
                time.sleep(0.1)
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="sk-from-secret", max_retries=1)
        # The example's "flaky" rule answers one 429 (retry-after 50 ms), then the echo default.
        reply = client.chat.completions.create(
            model="any", messages=[{"role": "user", "content": "flaky hello"}]
        )
        assert reply.choices[0].message.content == "Hello! I am a scripted model."
        snapshot = httpx.get(f"{base}/_mock/calls").json()
        assert [c["rule"] for c in snapshot["calls"]] == ["flaky", "greeting"]
        assert snapshot["calls"][0]["api_key"] == "sk-from-secret"
    finally:
        process.terminate()
        output = process.communicate(timeout=10)[0].decode()
    assert "sk-from-secret" not in output  # keys are recorded, never logged


def test_serve_fails_fast_on_a_bad_script(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - name: typo\n    contians: x\n    content: y\n")
    code = "import sys; from kagent.mockllm import serve; serve(sys.argv[1], 0)"
    result = subprocess.run(
        [sys.executable, "-c", code, str(bad)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "rules[0] (name 'typo').contians: Extra inputs are not permitted" in result.stderr
