"""`kagent get`, `kagent describe` and `kagent logs` as a user runs them (separate processes)
against a real control plane with the Kagent controller reconciling the seed's resources."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from typing import Any

import pytest
import yaml

from tests.helpers import create_seed_secrets, seed_documents, wait_for

pytestmark = pytest.mark.integration

AGENT = "customer-support-agent"


def kagent(plane: Any, *args: str, columns: str | None = "250") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(plane.kubeconfig)}
    env.pop("COLUMNS", None)
    if columns:
        env["COLUMNS"] = columns
    return subprocess.run([sys.executable, "-m", "kagent", *args], capture_output=True,
                          text=True, timeout=120, check=False, env=env)


def setup(plane: Any, namespace: str) -> None:
    create_seed_secrets(plane, namespace)
    docs = copy.deepcopy(seed_documents())
    for doc in docs:
        doc["metadata"]["namespace"] = namespace
    docs[0]["spec"].pop("scaling")  # no KEDA in this cluster: a plain Deployment
    plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))


def _agent_ready(plane: Any, namespace: str) -> bool:
    result = kagent(plane, "get", "agents", AGENT, "-n", namespace, "-o", "json")
    if result.returncode != 0:
        return False
    status = json.loads(result.stdout).get("status") or {}
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in status.get("conditions") or [])


def test_get_describe_and_logs(kagent_controller: Any, namespace: str) -> None:
    plane = kagent_controller.plane
    setup(plane, namespace)
    wait_for(lambda: _agent_ready(plane, namespace), what="the seed agent to be Ready")

    agents = kagent(plane, "get", "agents", "-n", namespace)
    assert agents.returncode == 0, agents.stderr
    assert agents.stderr == ""  # the table is the whole report, on stdout
    header, row = agents.stdout.splitlines()[:2]
    assert header.split() == ["NAME", "PROVIDER", "MODEL", "READY", "REPLICAS", "AUTH", "AGE"]
    assert row.split()[:6] == [AGENT, "openai", "gpt-4-turbo", "True", "1/1", "rbac"]

    tools = kagent(plane, "get", "tools", "-n", namespace)
    assert tools.returncode == 0, tools.stderr
    assert "search-knowledge-base" in tools.stdout and "retrieval" in tools.stdout
    assert "create-ticket" in tools.stdout and "api" in tools.stdout
    memories = kagent(plane, "get", "mem", "-n", namespace)
    assert "support-memory" in memories.stdout and "redis" in memories.stdout
    workflows = kagent(plane, "get", "workflows", "-n", namespace)
    assert "research-report" in workflows.stdout and "STEPS" in workflows.stdout
    runs = kagent(plane, "get", "runs", "-n", namespace)
    assert runs.returncode == 0, runs.stderr
    assert "research-report-ai-agents" in runs.stdout and "PHASE" in runs.stdout

    # Into a pipe with no COLUMNS, a row wider than 80 columns stays whole, as kubectl's do.
    everywhere = kagent(plane, "get", "agents", "-A", columns=None)
    assert everywhere.returncode == 0
    (row,) = [line for line in everywhere.stdout.splitlines() if namespace in line]
    assert len(row) > 80
    assert row.split()[:6] == [namespace, AGENT, "openai", "gpt-4-turbo", "True", "1/1"]

    as_yaml = yaml.safe_load(kagent(plane, "get", "tool", "create-ticket", "-n", namespace,
                                    "-o", "yaml").stdout)
    assert as_yaml["kind"] == "Tool" and as_yaml["spec"]["type"] == "api"
    listed = json.loads(kagent(plane, "get", "tools", "-n", namespace, "-o", "json").stdout)
    assert listed["kind"] == "List" and len(listed["items"]) == 2

    described = kagent(plane, "describe", "agent", AGENT, "-n", namespace)
    assert described.returncode == 0, described.stderr
    assert described.stderr == ""
    text = described.stdout
    for expected in ("Spec:", "gpt-4-turbo", "Conditions:", "Accepted", "Ready", "Children:",
                     "Deployment", "Service", "ConfigMap", "NetworkPolicy", "ingress rule",
                     "1/1 ready", "Events:", "RolledOut"):
        assert expected in text, f"{expected!r} missing from:\n{text}"

    run = kagent(plane, "describe", "run", "research-report-ai-agents", "-n", namespace)
    assert run.returncode == 0, run.stderr
    assert "Kind:       WorkflowRun" in run.stdout and "Steps:" in run.stdout

    tool = kagent(plane, "describe", "tool", "create-ticket", "-n", namespace)
    assert tool.returncode == 0 and "Accepted" in tool.stdout and "Children:" not in tool.stdout

    # Pods on the fake node have no kubelet to serve logs: the command finds the pod through
    # the Agent's label, asks the API server for its agent container's log, and reports the
    # API server's answer (its attempt to reach the node) with exit code 1.
    logs = kagent(plane, "logs", AGENT, "-n", namespace)
    assert logs.returncode == 1
    assert f"logs of pod '{AGENT}-" in logs.stderr
    assert "/agent" in logs.stderr  # the agent container was asked for
    assert logs.stdout == ""

    # invoke without --url goes through the API server's service proxy with the kubeconfig's
    # credentials; the API server accepts it (no 401/403) but cannot dial a pod on the fake
    # node, so the answer is a clean error naming the agent, with exit code 1.
    invoked = kagent(plane, "invoke", AGENT, "-n", namespace, "-m", "hello", "--timeout", "20")
    assert invoked.returncode == 1
    assert f"agent {AGENT!r}" in invoked.stderr
    assert "not allowed" not in invoked.stderr
    assert invoked.stdout == ""

    # `workflow run` reports the run it created on stdout (a script captures the name), the hint
    # on how to follow it on stderr; `cancel` reports on stdout too.
    started = kagent(plane, "workflow", "run", "research-report", "-n", namespace, "--name",
                     "streams", "-i", "topic=pipes")
    assert started.returncode == 0, started.stderr
    assert started.stdout == "workflowrun/streams created\n"
    assert f"kagent workflow watch streams -n {namespace}" in started.stderr
    cancelled = kagent(plane, "workflow", "cancel", "streams", "-n", namespace)
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout == "workflowrun/streams cancel requested\n"
    assert cancelled.stderr == ""


def test_errors_have_exit_codes_and_hints(kagent_controller: Any, namespace: str) -> None:
    plane = kagent_controller.plane
    missing = kagent(plane, "get", "agents", "nope", "-n", namespace)
    assert missing.returncode == 3
    assert "not found" in missing.stderr and "kagent get" in missing.stderr
    assert kagent(plane, "describe", "workflow", "nope", "-n", namespace).returncode == 3
    assert kagent(plane, "logs", "nope", "-n", namespace).returncode == 3
    assert kagent(plane, "invoke", "nope", "-n", namespace, "-m", "hi").returncode == 3
    empty = kagent(plane, "get", "agents", "-n", namespace)
    # As kubectl's "No resources found": a diagnostic, so a script reading stdout sees no rows.
    assert empty.returncode == 0 and "No Agent found" in empty.stderr and empty.stdout == ""
    unknown = kagent(plane, "get", "gadgets")
    assert unknown.returncode == 2 and unknown.stdout == "" and "gadgets" in unknown.stderr
    unreachable = subprocess.run(
        [sys.executable, "-m", "kagent", "get", "agents", "--kubeconfig", "/nonexistent/config"],
        capture_output=True, text=True, timeout=60, check=False)
    assert unreachable.returncode == 1 and "kubeconfig" in unreachable.stderr
