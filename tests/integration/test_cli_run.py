"""`kagent run` as the README shows it: offline with `kagent mock-llm`, two agents in one file,
`--agent` picking one — the example in examples/local-run, run by the real commands."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kagent.local.services import free_port
from tests.helpers import EXAMPLES, wait_for

pytestmark = pytest.mark.integration

EXAMPLE = EXAMPLES / "local-run"
EXAMPLE_PORT = "127.0.0.1:8099"


@pytest.fixture(scope="module")
def mock_llm_port() -> Iterator[int]:
    """`kagent mock-llm --script examples/local-run/mockllm.yaml`, as the example starts it."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "kagent", "mock-llm", "--script", str(EXAMPLE / "mockllm.yaml"),
         "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: _healthy(port), what="the scripted model")
        yield port
    finally:
        process.terminate()
        process.wait(timeout=30)


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/_mock/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _agents_file(tmp_path: Path, port: int) -> Path:
    """The example's file, unchanged but for the scripted model's port (8099 may be taken)."""
    text = (EXAMPLE / "agents.yaml").read_text()
    assert EXAMPLE_PORT in text
    path = tmp_path / "agents.yaml"
    path.write_text(text.replace(EXAMPLE_PORT, f"127.0.0.1:{port}"))
    return path


def _run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "KAGENT_AGENT_NAME"}
    return subprocess.run([sys.executable, "-m", "kagent", "run", "--port", str(free_port()),
                           *args], input=stdin, capture_output=True, text=True, timeout=120,
                          check=False, env=env)


def test_run_picks_one_of_several_agents_with_the_agent_flag(mock_llm_port: int,
                                                             tmp_path: Path) -> None:
    agents = _agents_file(tmp_path, mock_llm_port)
    translated = _run("-f", str(agents), "--agent", "translator", stdin="good morning\n/exit\n")
    assert translated.returncode == 0, translated.stderr
    assert translated.stdout == "En français : good morning\n"  # the answers, nothing else
    greeted = _run("-f", str(agents), "-a", "greeter", stdin="hello\n")
    assert greeted.returncode == 0, greeted.stderr
    assert greeted.stdout == "Welcome! You said: hello\n"


def test_several_agents_without_the_flag_say_how_to_pick(mock_llm_port: int,
                                                         tmp_path: Path) -> None:
    agents = _agents_file(tmp_path, mock_llm_port)
    unpicked = _run("-f", str(agents), stdin="hello\n")
    assert unpicked.returncode == 2
    assert "greeter, translator" in unpicked.stderr and "--agent NAME" in unpicked.stderr
    unknown = _run("-f", str(agents), "--agent", "nobody", stdin="hello\n")
    assert unknown.returncode == 2
    assert 'no Agent named "nobody"' in unknown.stderr
