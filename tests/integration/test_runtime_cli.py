"""``kagent runtime`` as a process, the way an agent pod runs it: manifests from a file,
secrets as environment variables, metrics on their own port, plain errors for bad config."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from kagent.api.base import SecretKeySelector
from kagent.api.secrets import secret_env_name
from kagent.mockllm import MockLLM
from kagent.testing.runtime import RuntimeProcess, write_manifests
from kagent.local.services import free_port
from tests.runtime_manifests import API_KEY, agent, model, unique


@pytest.fixture(scope="module")
def llm() -> Iterator[MockLLM]:
    with MockLLM({"default": {"content": "pod says {{last_user}}"}}) as server:
        yield server


def test_pod_style_run_with_env_secrets_and_a_metrics_port(llm: MockLLM) -> None:
    name = unique("pod")
    key_env = secret_env_name(SecretKeySelector(name="model-key", key="api-key"))
    metrics_port = free_port()
    documents = [agent(name, model("openai", llm.url))]  # no Secret manifest: env only
    with RuntimeProcess(documents, environ={key_env: API_KEY, "KAGENT_NAMESPACE": "prod"},
                        metrics_port=metrics_port) as runtime:
        with openai.OpenAI(base_url=runtime.openai_base_url, api_key="x") as client:
            answer = client.chat.completions.create(
                model=name, messages=[{"role": "user", "content": "hello"}],
                extra_headers={"X-Conversation-Id": str(uuid.uuid4())})
        assert answer.choices[0].message.content == "pod says hello"
        assert llm.calls[-1].api_key == API_KEY
        metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
        assert f'agent_requests_total{{agent="{name}",outcome="success",protocol="openai"}} 1.0' \
            in metrics
        assert httpx.get(f"{runtime.url}/metrics").status_code == 404
        card = httpx.get(f"{runtime.url}/.well-known/agent-card.json").json()
        assert card["name"] == name
    assert API_KEY not in runtime.logs()


def run_cli(tmp_path: Path, documents: list[dict]) -> subprocess.CompletedProcess[str]:
    manifest = write_manifests(documents, tmp_path / "agent.yaml")
    return subprocess.run(
        [sys.executable, "-m", "kagent", "runtime", "-f", str(manifest), "--port",
         str(free_port()), "--host", "127.0.0.1"],
        capture_output=True, text=True, timeout=60, check=False,
    )


def test_missing_tool_fails_fast_with_the_fix(tmp_path: Path, llm: MockLLM) -> None:
    done = run_cli(tmp_path, [agent("a", model("openai", llm.url), tools=[{"name": "ticket"}])])
    assert done.returncode == 2
    assert 'uses Tool "ticket"' in done.stderr and "pass its manifest with -f" in done.stderr


def test_missing_secret_fails_fast_naming_the_variable(tmp_path: Path, llm: MockLLM) -> None:
    done = run_cli(tmp_path, [agent("a", model("openai", llm.url))])
    assert done.returncode == 2
    variable = secret_env_name(SecretKeySelector(name="model-key", key="api-key"))
    assert 'Secret "model-key"' in done.stderr and variable in done.stderr
