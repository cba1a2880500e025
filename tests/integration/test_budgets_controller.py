"""Budgets on a real control plane: the controller renders the Budgets covering an Agent into its
runtime config, reads the shared Redis counters into the Budget's status, posts a Warning Event
at the warning share and at the limit, and `kagent usage` (a separate process, as a user runs
it) reports exactly the tokens the scripted model counted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml

from kagent.local.services import AsgiServer, RedisServer, free_port
from kagent.mockllm import MockLLM
from kagent.runtime.app import create_app
from kagent.runtime.config import build_runtime_config
from kagent.runtime.server import build_runtime
from tests.helpers import wait_for
from tests.runtime_manifests import API, API_KEY, unique

pytestmark = pytest.mark.integration

SCRIPT = {"rules": [], "default": {"content": "fine",
                                   "usage": {"input_tokens": 100, "output_tokens": 50}}}


@pytest.fixture(scope="module")
def llm() -> Iterator[MockLLM]:
    with MockLLM(SCRIPT) as server:
        yield server


def kagent(plane: Any, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(plane.kubeconfig), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "kagent", *args], capture_output=True,
                          text=True, timeout=120, check=False, env=env)


def _events(plane: Any, namespace: str, name: str) -> list[dict[str, Any]]:
    out = plane.kubectl("get", "events", "-n", namespace, "--field-selector",
                        f"involvedObject.name={name}", "-o", "json").stdout
    return json.loads(out)["items"]


def _budget_status(plane: Any, namespace: str, name: str) -> dict[str, Any]:
    out = plane.kubectl("get", "budget", name, "-n", namespace, "-o", "json").stdout
    return json.loads(out).get("status") or {}


def test_budget_status_warning_event_and_usage_report(kagent_controller: Any, namespace: str,
                                                      redis_server: RedisServer,
                                                      llm: MockLLM) -> None:
    plane = kagent_controller.plane
    llm.reset()
    name, budget_name = unique("spender"), unique("daily")
    agent = {"apiVersion": API, "kind": "Agent",
             "metadata": {"name": name, "namespace": namespace, "labels": {"team": "a"}},
             "spec": {"model": {"provider": "openai", "name": "gpt-4o",
                                "endpoint": f"{llm.url}/v1",
                                "apiKeySecretRef": {"name": "model-key", "key": "api-key"}}}}
    budget = {"apiVersion": API, "kind": "Budget",
              "metadata": {"name": budget_name, "namespace": namespace},
              "spec": {"limits": [{"window": "day", "tokens": 1000}], "warningPercent": 50,
                       "agentSelector": {"matchLabels": {"team": "a"}},
                       "counter": {"type": "redis", "url": redis_server.url}}}
    other = {**budget, "metadata": {"name": unique("other-team"), "namespace": namespace},
             "spec": {**budget["spec"], "agentSelector": {"matchLabels": {"team": "b"}}}}
    key = {"apiVersion": "v1", "kind": "Secret",
           "metadata": {"name": "model-key", "namespace": namespace},
           "stringData": {"api-key": API_KEY}}
    plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([key, budget, other, agent]))

    # The controller renders the covering Budget (and not the other team's) into the config.
    def rendered() -> str | None:
        found = plane.kubectl("get", "configmap", name, "-n", namespace, "-o", "json",
                              check=False)
        if found.returncode != 0:
            return None
        config = json.loads(found.stdout)["data"]["agent.yaml"]
        return config if "kind: Budget" in config else None

    config = wait_for(rendered, what="the Budget in the agent's rendered config")
    kinds = [(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(config)]
    assert ("Budget", budget_name) in kinds and ("Budget", other["metadata"]["name"]) not in kinds

    # The agent's runtime, from exactly that config (as its pod would run it).
    documents = [*yaml.safe_load_all(config), key]
    runtime = build_runtime(build_runtime_config(documents, environ={}), environ={})
    server = AsgiServer(create_app(runtime), lifespan="on").start(timeout=30)
    try:
        def ask() -> int:
            return httpx.post(f"{server.url}/v1/chat/completions", timeout=30, json={
                "model": name, "messages": [{"role": "user", "content": "hi"}]}).status_code

        assert [ask() for _ in range(4)] == [200] * 4  # 600 of 1,000 tokens: past 50%
        wait_for(lambda: any(e["reason"] == "WarningReached" and e["type"] == "Warning"
                             for e in _events(plane, namespace, budget_name)),
                 what="the Budget's warning Event")
        statuses = [ask() for _ in range(4)]
        assert statuses == [200, 200, 200, 429]  # 1,050 tokens counted, then refused
        spent = sum(c.reply["usage"]["input_tokens"] + c.reply["usage"]["output_tokens"]
                    for c in llm.calls)
        assert spent == 1050

        def reported() -> dict[str, Any] | None:
            status = _budget_status(plane, namespace, budget_name)
            windows = status.get("windows") or []
            return status if windows and windows[0]["tokens"] == spent else None

        status = wait_for(reported, what="the Budget's status to show the counters")
        window = status["windows"][0]
        assert window["window"] == "day" and window["requests"] == 7
        assert window["usedPercent"] == 105
        within = next(c for c in status["conditions"] if c["type"] == "WithinBudget")
        assert (within["status"], within["reason"]) == ("False", "LimitReached")
        wait_for(lambda: any(e["reason"] == "LimitReached"
                             for e in _events(plane, namespace, budget_name)),
                 what="the Budget's limit Event")

        # kagent usage: the same totals the scripted model counted.
        report = kagent(plane, "usage", "-n", namespace, "--by", "agent", "--since", "2h")
        assert report.returncode == 0, report.stderr
        rows = {line.split()[0]: line.split() for line in report.stdout.splitlines()[1:]}
        assert rows[name][1:5] == ["7", "700", "350", "1,050"]
        assert rows["TOTAL"][4] == f"{spent:,}"
        # gpt-4o at the default price: 700 x $2.50 + 350 x $10 per million = $0.00525
        assert rows[name][5] == "$0.005250"
        by_model = kagent(plane, "usage", "-n", namespace, "--by", "model")
        assert "openai/gpt-4o" in by_model.stdout
        # A ledger that cannot be read is an error, never a report of zero spend.
        unread = kagent(plane, "usage", "-n", namespace, "--counter-url",
                        f"redis://127.0.0.1:{free_port()}")
        assert unread.returncode == 1 and "could be read" in unread.stderr, unread.stderr
        listed = kagent(plane, "get", "budgets", "-n", namespace)
        assert listed.returncode == 0, listed.stderr
        assert f"{budget_name}" in listed.stdout and "day 105%" in listed.stdout
    finally:
        server.stop()
