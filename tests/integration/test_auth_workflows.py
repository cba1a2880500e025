"""Our own callers authenticate too, end to end: the controller (with its webhook) renders each
agent's RBAC, the workflow engine calls agents as the controller's ServiceAccount, an agent calls
the agent it uses as a tool with its own audience-bound ServiceAccount token, and every agent
checks its callers with TokenReview and SubjectAccessReview against the real API server.
Removing the controller's ``invoke`` right makes a run fail, naming the agent and the permission.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kagent.local.controller import CONTROLLER_INVOKE_BINDING, ControllerProcess, controller_identity_yaml
from kagent.local.controlplane import ControlPlane, install_crds
from kagent.mockllm import MockLLM
from kagent.testing.runtime import RuntimeProcess
from tests.runtime_manifests import agent, model, secret

pytestmark = pytest.mark.integration

NAMESPACE = "auth-e2e"
SCRIPT = {
    "rules": [
        {"name": "boss-asks", "system_contains": "ROLE boss", "has_tool_result": False,
         "tool_calls": [{"name": "helper", "arguments": {"message": "sub-{{last_user}}"}}]},
        {"name": "boss-answers", "system_contains": "ROLE boss", "has_tool_result": "helper",
         "content": "boss got {{tool_result}}"},
        {"name": "helper", "system_contains": "ROLE helper", "content": "helped[{{last_user}}]"},
        {"name": "fresh", "system_contains": "ROLE fresh", "content": "fresh[{{last_user}}]"},
    ],
}
AGENTS = {"boss": [{"name": "helper", "kind": "Agent"}], "helper": None, "fresh": None}


def wait_for(check: Any, timeout: float = 90, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def llm() -> Iterator[MockLLM]:
    with MockLLM(SCRIPT) as server:
        yield server


@pytest.fixture(scope="module")
def plane() -> Iterator[ControlPlane]:
    with ControlPlane() as cp:
        install_crds(cp)
        cp.create_namespace(NAMESPACE)
        yield cp


@pytest.fixture(scope="module")
def runtimes(plane: ControlPlane, llm: MockLLM, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[dict[str, Any]]:
    """The agents as processes that check their callers against the control plane; the boss
    calls the helper with the token in its (minted, audience-bound) token file."""
    tokens = tmp_path_factory.mktemp("tokens")
    processes = {name: RuntimeProcess([
        {**agent(name, model("openai", llm.url), systemPrompt=f"ROLE {name}",
                 **({"tools": tools} if tools else {}))}, secret()],
        environ={"KAGENT_NAMESPACE": NAMESPACE, "KAGENT_KUBECONFIG": str(plane.kubeconfig),
                 "KAGENT_AUTHZ_CACHE_SECONDS": "1",
                 "KAGENT_AGENT_TOKEN_FILE": str(tokens / f"{name}.token")})
        for name, tools in AGENTS.items()}
    processes["boss"].environ["KAGENT_AGENT_URL_TEMPLATE"] = processes["helper"].url
    try:
        for process in processes.values():
            process.start()
        yield {"processes": processes, "tokens": tokens}
    finally:
        for process in processes.values():
            process.cleanup()


@pytest.fixture(scope="module")
def controller(plane: ControlPlane, runtimes: dict[str, Any]) -> Iterator[ControllerProcess]:
    urls = {name: p.url for name, p in runtimes["processes"].items()}
    process = ControllerProcess(plane, identity="auth-0", lease_seconds=3,
                                env={"KAGENT_WORKFLOW_AGENT_URLS": json.dumps(urls)}).start()
    wait_for(process.is_leader, what="leadership")
    yield process
    process.stop()


@pytest.fixture(scope="module")
def agents(plane: ControlPlane, controller: ControllerProcess, runtimes: dict[str, Any]) -> None:
    """The Agents in the cluster (through the webhook); the controller renders their
    ServiceAccounts and RBAC; the boss's token is minted as the kubelet would project it."""
    docs = [{"apiVersion": "kagent.dev/v1alpha1", "kind": "Agent",
             "metadata": {"name": name, "namespace": NAMESPACE},
             "spec": {"model": {"provider": "openai", "name": "gpt-4o-mini"},
                      "systemPrompt": f"ROLE {name}", **({"tools": tools} if tools else {})}}
            for name, tools in AGENTS.items()]
    plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
    wait_for(lambda: plane.kubectl("get", "rolebinding", "boss", "-n", NAMESPACE,
                                   check=False).returncode == 0, what="the boss's RoleBinding")
    token = plane.kubectl("create", "token", "boss", "-n", NAMESPACE, "--audience=kagent.dev",
                          "--duration=1h").stdout.strip()
    Path(runtimes["tokens"] / "boss.token").write_text(token)


def run_workflow(plane: ControlPlane, name: str, agent_name: str, text: str) -> dict[str, Any]:
    docs = [
        {"apiVersion": "kagent.dev/v1alpha1", "kind": "Workflow",
         "metadata": {"name": name, "namespace": NAMESPACE},
         "spec": {"input": [{"name": "text", "type": "string", "required": True}],
                  "steps": [{"name": "only", "agent": agent_name, "input": "{{ input.text }}"}]}},
        {"apiVersion": "kagent.dev/v1alpha1", "kind": "WorkflowRun",
         "metadata": {"name": name, "namespace": NAMESPACE},
         "spec": {"workflowRef": {"name": name}, "input": {"text": text}}},
    ]
    plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))

    def finished() -> dict[str, Any] | None:
        run = json.loads(plane.kubectl("get", "workflowrun", name, "-n", NAMESPACE, "-o",
                                       "json").stdout)
        return run if (run.get("status") or {}).get("phase") in ("Succeeded", "Failed") else None

    return wait_for(finished, what=f"run {name}")


def test_rendered_rbac_is_exactly_what_the_agents_need(plane: ControlPlane, agents: None) -> None:
    role = json.loads(plane.kubectl("get", "role", "boss", "-n", NAMESPACE, "-o", "json").stdout)
    assert role["rules"] == [{"apiGroups": ["kagent.dev"], "resources": ["agents"],
                              "verbs": ["invoke"], "resourceNames": ["helper"]}]
    can = plane.kubectl("auth", "can-i", "invoke", "agents.kagent.dev/helper", "-n", NAMESPACE,
                        f"--as=system:serviceaccount:{NAMESPACE}:boss", check=False)
    assert can.stdout.strip() == "yes"
    cannot = plane.kubectl("auth", "can-i", "invoke", "agents.kagent.dev/fresh", "-n", NAMESPACE,
                           f"--as=system:serviceaccount:{NAMESPACE}:boss", check=False)
    assert cannot.stdout.strip() == "no"
    binding = json.loads(plane.kubectl("get", "clusterrolebinding",
                                       f"kagent-agent-auth:{NAMESPACE}:helper", "-o",
                                       "json").stdout)
    assert binding["roleRef"]["name"] == "kagent-agent-auth"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "helper",
                                    "namespace": NAMESPACE}]


def test_a_workflow_run_and_an_agent_as_tool_call_succeed_with_authentication_on(
        plane: ControlPlane, agents: None, llm: MockLLM) -> None:
    run = run_workflow(plane, "delegate", "boss", "task")
    assert run["status"]["phase"] == "Succeeded", run["status"]
    # the boss called the helper as a tool, with its own token, and got its answer
    steps = {step["name"]: step for step in run["status"]["steps"]}
    assert steps["only"]["output"] == "boss got helped[sub-task]"


def test_without_the_controllers_invoke_right_a_run_fails_naming_agent_and_permission(
        plane: ControlPlane, agents: None) -> None:
    plane.kubectl("delete", "clusterrolebinding", CONTROLLER_INVOKE_BINDING)
    try:
        run = run_workflow(plane, "refused", "fresh", "hello")
        assert run["status"]["phase"] == "Failed"
        text = json.dumps(run["status"])
        assert "agent fresh refused the call (403 forbidden)" in text, text
        assert 'may not invoke agent auth-e2e/fresh' in text
        assert 'verb \\"invoke\\" on resource \\"agents.kagent.dev\\"' in text
    finally:
        plane.apply_yaml(controller_identity_yaml())


def test_opting_out_is_warned_at_admission_and_keys_need_authentication(
        plane: ControlPlane, controller: ControllerProcess) -> None:
    doc = {"apiVersion": "kagent.dev/v1alpha1", "kind": "Agent",
           "metadata": {"name": "open-door", "namespace": NAMESPACE},
           "spec": {"model": {"provider": "openai", "name": "gpt-4o-mini"},
                    "auth": {"mode": "none"}}}
    applied = plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))
    assert "spec.auth.mode: none lets anyone who can reach the agent call it" in applied.stderr
    shown = plane.kubectl("get", "agent", "open-door", "-n", NAMESPACE, "-o", "wide").stdout
    assert "AUTH" in shown.splitlines()[0] and "none" in shown.splitlines()[1]
    doc["metadata"]["name"] = "open-keys"
    doc["spec"]["auth"]["apiKeys"] = [{"name": "ci", "secretKeyRef": {"name": "k", "key": "ci"}}]
    refused = plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc), check=False)
    assert refused.returncode != 0
    assert "spec.auth.apiKeys" in refused.stderr and "apiKeys need mode required" in refused.stderr
