"""`kagent invoke`, `kagent chat` and `kagent run` as a user runs them: separate processes
against a real agent runtime process whose model is the scripted server."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from kagent.local.services import free_port
from kagent.mockllm import MockLLM
from kagent.testing.runtime import RuntimeProcess, write_manifests
from tests.runtime_manifests import agent, model, secret, unique

pytestmark = pytest.mark.integration

SCRIPT = {
    "rules": [
        {"contains": "my name is", "content": "Nice to meet you, I will remember that!"},
        {"contains": "what is my name", "content": "You told me your name earlier."},
    ],
    "default": {"content": "echo: {{last_user}}"},
}


@pytest.fixture(scope="module")
def llm() -> Iterator[MockLLM]:
    with MockLLM(SCRIPT) as server:
        yield server


def _documents(llm: MockLLM) -> list[dict]:
    return [agent(unique("cli"), model("openai", llm.url), systemPrompt="You are a test agent."),
            secret()]


@pytest.fixture(scope="module")
def runtime(llm: MockLLM) -> Iterator[RuntimeProcess]:
    with RuntimeProcess(_documents(llm)) as process:
        yield process


def kagent(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kagent", *args], capture_output=True, text=True,
                          timeout=120, check=False, env={**os.environ, **(env or {})})


def _user_texts(llm: MockLLM) -> list[str]:
    return [m["text"] for m in llm.calls[-1].messages if m["role"] == "user"]


def test_invoke_prints_the_answer(runtime: RuntimeProcess, llm: MockLLM) -> None:
    result = kagent("invoke", runtime.name, "-m", "hello there", "--url", runtime.url)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "echo: hello there\n"
    assert result.stderr == ""


def test_invoke_with_a_conversation_uses_memory(runtime: RuntimeProcess, llm: MockLLM) -> None:
    first = kagent("invoke", runtime.name, "-m", "Hi, my name is Ada", "--conversation", "c-1",
                   "--url", runtime.url)
    assert first.returncode == 0, first.stderr
    second = kagent("invoke", "-m", "So what is my name?", "-c", "c-1", "--url", runtime.url)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "You told me your name earlier."
    assert _user_texts(llm) == ["Hi, my name is Ada", "So what is my name?"]


def test_invoke_errors_have_exit_codes(runtime: RuntimeProcess) -> None:
    wrong = kagent("invoke", "no-such-agent", "-m", "hi", "--url", runtime.url)
    assert wrong.returncode == 3
    assert "kagent get agents" in wrong.stderr
    down = kagent("invoke", "x", "-m", "hi", "--url", f"http://127.0.0.1:{free_port()}")
    assert down.returncode == 1
    assert "cannot reach" in down.stderr
    usage = kagent("invoke", runtime.name, "--url", runtime.url)
    assert usage.returncode == 2


def _spawn(*args: str) -> pexpect.spawn:
    env = {**os.environ, "COLUMNS": "200", "TERM": "xterm"}
    return pexpect.spawn(sys.executable, ["-m", "kagent", *args], env=env, encoding="utf-8",
                         timeout=60, dimensions=(50, 200))


def _converse(child: pexpect.spawn, llm: MockLLM) -> None:
    child.expect("Type /exit to leave")
    child.expect("you>")
    child.sendline("Hi, my name is Grace")
    child.expect("Nice to meet you, I will remember that!")
    child.expect("you>")
    child.sendline("what is my name?")
    child.expect("You told me your name earlier.")
    # The second request carried the first turn: the session kept one conversation id.
    assert _user_texts(llm) == ["Hi, my name is Grace", "what is my name?"]
    child.expect("you>")
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_chat_streams_a_multi_turn_conversation(runtime: RuntimeProcess, llm: MockLLM) -> None:
    child = _spawn("chat", runtime.name, "--url", runtime.url)
    try:
        _converse(child, llm)
    finally:
        child.close(force=True)
    assert llm.calls[-1].stream, "chat must ask for a streamed answer"


def test_run_serves_manifests_locally_and_chats(tmp_path: Path, llm: MockLLM) -> None:
    manifest = write_manifests(_documents(llm), tmp_path / "agent.yaml")
    child = _spawn("run", "-f", str(manifest), "--port", str(free_port()))
    try:
        _converse(child, llm)
    finally:
        child.close(force=True)


def test_chat_with_piped_input_writes_only_the_answers_to_stdout(runtime: RuntimeProcess,
                                                                  llm: MockLLM) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "kagent", "chat", runtime.name, "--url", runtime.url],
        input="Hi, my name is Ada\nwhat is my name?\n/exit\n", capture_output=True, text=True,
        timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["Nice to meet you, I will remember that!",
                                          "You told me your name earlier."]
    # The banner, the prompts and the speaker labels are for the person at the terminal.
    assert "Type /exit to leave" in result.stderr
    assert result.stderr.count("you>") == 3 and f"{runtime.name}>" in result.stderr


def test_run_reports_bad_manifests(tmp_path: Path) -> None:
    missing = kagent("run", "-f", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_run_serve_only_serves(tmp_path: Path, llm: MockLLM) -> None:
    import httpx

    manifest = write_manifests(_documents(llm), tmp_path / "agent.yaml")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "kagent", "run", "-f", str(manifest),
                               "--serve", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, "kagent run --serve exited"
            try:
                if httpx.get(f"{url}/readyz", timeout=1, trust_env=False).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "kagent run --serve did not become ready"
            time.sleep(0.1)
        answer = kagent("invoke", "-m", "ping", "--url", url)
        assert answer.returncode == 0, answer.stderr
        assert answer.stdout.strip() == "echo: ping"
    finally:
        server.terminate()
        server.wait(timeout=20)
