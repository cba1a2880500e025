"""Who may call an agent, checked against the real API server: TokenReview and
SubjectAccessReview (verb ``invoke`` on ``agents.kagent.dev``), API keys, the explicit opt-out,
and the open probes — driven by the official openai and a2a-sdk clients."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from a2a.client import ClientConfig, ClientFactory
from a2a.client.errors import A2AClientError
from a2a.types import Message, Part, Role, SendMessageRequest

from kagent.mockllm import MockLLM
from tests.runtime_manifests import agent, model, secret, unique

pytestmark = pytest.mark.usefixtures("crds")

API_KEY = "ak-" + "0123456789abcdef" * 2


@pytest.fixture(scope="module")
def crds(control_plane: Any) -> None:
    """Kagent's CRDs, so kubectl can write Roles for agents.kagent.dev."""
    from kagent.local.controlplane import install_crds

    install_crds(control_plane)


@pytest.fixture(scope="module")
def llm() -> Iterator[MockLLM]:
    with MockLLM({"default": {"content": "hello {{last_user}}"}}) as server:
        yield server


def token(control_plane: Any, namespace: str, account: str, *args: str) -> str:
    return control_plane.kubectl("create", "token", account, "-n", namespace, "--duration=1h",
                                 *args).stdout.strip()


def grant_invoke(control_plane: Any, namespace: str, account: str, agent_name: str) -> None:
    control_plane.kubectl("create", "role", f"invoke-{agent_name}", "-n", namespace,
                          "--verb=invoke", "--resource=agents.kagent.dev",
                          f"--resource-name={agent_name}")
    control_plane.kubectl("create", "rolebinding", f"invoke-{agent_name}-{account}", "-n",
                          namespace, f"--role=invoke-{agent_name}",
                          f"--serviceaccount={namespace}:{account}")


@pytest.fixture
def accounts(control_plane: Any, namespace: str) -> dict[str, str]:
    for name in ("caller", "stranger"):
        control_plane.kubectl("create", "serviceaccount", name, "-n", namespace)
    return {"caller": f"system:serviceaccount:{namespace}:caller"}


def start(agent_runtime: Any, control_plane: Any, llm: MockLLM, namespace: str,
          name: str, **spec: Any) -> Any:
    document = agent(name, model("openai", llm.url), **spec)
    document["metadata"]["namespace"] = namespace
    keys = {"ci": API_KEY}
    return agent_runtime([document, secret(), secret("agent-keys", **keys)],
                         kubeconfig=control_plane.kubeconfig,
                         environ={"KAGENT_AUTHZ_CACHE_SECONDS": "1"})


def chat(runtime: Any, bearer: str | None, text: str = "hi") -> str:
    client = openai.OpenAI(base_url=runtime.openai_base_url, api_key=bearer or "unused",
                           max_retries=0)
    answer = client.chat.completions.create(
        model=runtime.name, messages=[{"role": "user", "content": text}],
        extra_headers=None if bearer else {"Authorization": openai.Omit()})
    return answer.choices[0].message.content or ""


async def a2a_send(runtime: Any, headers: dict[str, str], text: str = "hi") -> Any:
    async with httpx.AsyncClient(timeout=30, headers=headers) as http:
        client = await ClientFactory(ClientConfig(streaming=False, httpx_client=http)
                                     ).create_from_url(runtime.url)
        request = SendMessageRequest(message=Message(role=Role.ROLE_USER, message_id=str(uuid.uuid4()),
                                                     parts=[Part(text=text)]))
        return [event async for event in client.send_message(request)]


def test_no_token_is_401_a_token_without_invoke_403_with_invoke_the_answer(
        control_plane: Any, namespace: str, accounts: dict[str, str], llm: MockLLM,
        agent_runtime: Any) -> None:
    name = unique("authn")
    runtime = start(agent_runtime, control_plane, llm, namespace, name)
    grant_invoke(control_plane, namespace, "caller", name)

    with pytest.raises(openai.AuthenticationError) as missing:
        chat(runtime, None)
    assert missing.value.status_code == 401
    assert f"agent {namespace}/{name} needs credentials" in missing.value.message

    with pytest.raises(openai.PermissionDeniedError) as refused:
        chat(runtime, token(control_plane, namespace, "stranger"))
    assert refused.value.status_code == 403
    assert (f"system:serviceaccount:{namespace}:stranger may not invoke agent {namespace}/{name}"
            in refused.value.message)
    assert 'verb "invoke"' in refused.value.message

    assert chat(runtime, token(control_plane, namespace, "caller"), "ping") == "hello ping"

    with pytest.raises(openai.AuthenticationError) as forged:
        chat(runtime, "not-a-token-" + "x" * 40)
    assert "not accepted" in forged.value.message


def test_the_official_a2a_client_is_refused_then_answered(
        control_plane: Any, namespace: str, accounts: dict[str, str], llm: MockLLM,
        agent_runtime: Any) -> None:
    import asyncio

    name = unique("a2a-auth")
    runtime = start(agent_runtime, control_plane, llm, namespace, name)
    grant_invoke(control_plane, namespace, "caller", name)

    with pytest.raises(A2AClientError, match="401"):
        asyncio.run(a2a_send(runtime, {}))
    with pytest.raises(A2AClientError, match="403"):
        asyncio.run(a2a_send(runtime, {"Authorization": "Bearer " + token(
            control_plane, namespace, "stranger")}))
    # the token agents call each other with: bound to the kagent.dev audience
    bound = token(control_plane, namespace, "caller", "--audience=kagent.dev")
    events = asyncio.run(a2a_send(runtime, {"Authorization": f"Bearer {bound}"}, "there"))
    task = events[-1].task
    assert task.artifacts[0].parts[0].text == "hello there"
    # a token for some other audience is neither the API server's nor ours
    other = token(control_plane, namespace, "caller", "--audience=https://elsewhere.example")
    with pytest.raises(A2AClientError, match="401"):
        asyncio.run(a2a_send(runtime, {"Authorization": f"Bearer {other}"}))


def test_probes_metrics_and_the_card_are_open_and_the_card_names_the_schemes(
        control_plane: Any, namespace: str, llm: MockLLM, agent_runtime: Any) -> None:
    name = unique("open")
    runtime = start(agent_runtime, control_plane, llm, namespace, name, auth={
        "apiKeys": [{"name": "ci", "secretKeyRef": {"name": "agent-keys", "key": "ci"}}]})
    for path in ("/healthz", "/readyz", "/metrics"):
        assert httpx.get(runtime.url + path, timeout=10).status_code == 200, path
    card = httpx.get(runtime.url + "/.well-known/agent-card.json", timeout=10).json()
    schemes = card["securitySchemes"]
    assert set(schemes) == {"kubernetes", "apiKey"}
    assert schemes["kubernetes"]["httpAuthSecurityScheme"]["scheme"] == "Bearer"
    assert {next(iter(r["schemes"])) for r in card["securityRequirements"]} == {"kubernetes",
                                                                               "apiKey"}
    assert httpx.get(runtime.url + "/v1/models", timeout=10).status_code == 401


def test_an_api_key_named_by_the_agent_is_accepted_and_a_wrong_one_is_not(
        control_plane: Any, namespace: str, llm: MockLLM, agent_runtime: Any) -> None:
    name = unique("keys")
    runtime = start(agent_runtime, control_plane, llm, namespace, name, auth={
        "apiKeys": [{"name": "ci", "secretKeyRef": {"name": "agent-keys", "key": "ci"}}]})
    assert chat(runtime, API_KEY, "key") == "hello key"
    with pytest.raises(openai.AuthenticationError):
        chat(runtime, API_KEY[:-1] + "X")


def test_auth_mode_none_answers_anyone(control_plane: Any, namespace: str, llm: MockLLM,
                                       agent_runtime: Any) -> None:
    runtime = start(agent_runtime, control_plane, llm, namespace, unique("open"),
                    auth={"mode": "none"})
    assert chat(runtime, None, "anyone") == "hello anyone"
    card = httpx.get(runtime.url + "/.well-known/agent-card.json", timeout=10).json()
    assert not card.get("securitySchemes")


def test_a_revoked_binding_stops_working_once_the_decision_cache_expires(
        control_plane: Any, namespace: str, accounts: dict[str, str], llm: MockLLM,
        agent_runtime: Any) -> None:
    name = unique("revoke")
    runtime = start(agent_runtime, control_plane, llm, namespace, name)
    grant_invoke(control_plane, namespace, "caller", name)
    bearer = token(control_plane, namespace, "caller")
    assert chat(runtime, bearer, "one") == "hello one"
    control_plane.kubectl("delete", "rolebinding", f"invoke-{name}-caller", "-n", namespace)
    deadline = time.monotonic() + 30
    while True:  # the authorization cache lives 1 s here (KAGENT_AUTHZ_CACHE_SECONDS)
        try:
            chat(runtime, bearer, "two")
        except openai.PermissionDeniedError as refused:
            assert "may not invoke" in refused.message
            break
        assert time.monotonic() < deadline, "the revoked binding still works after 30 s"
        time.sleep(0.5)


def test_outside_a_pod_the_runtime_listens_on_loopback_and_will_not_serve_the_network_blind(
        llm: MockLLM, tmp_path: Any) -> None:
    import os
    import subprocess
    import sys

    import yaml

    from kagent.runtime.auth import default_host

    assert default_host({}) == "127.0.0.1"  # no KUBERNETES_SERVICE_HOST: not a pod
    manifest = tmp_path / "agent.yaml"
    manifest.write_text(yaml.safe_dump_all([agent("lan", model("openai", llm.url)), secret()]))
    result = subprocess.run([sys.executable, "-m", "kagent", "runtime", "-f", str(manifest),
                             "--port", "0", "--host", "0.0.0.0"],
                            capture_output=True, text=True, timeout=120, check=False,
                            env={k: v for k, v in os.environ.items()
                                 if k not in ("KUBERNETES_SERVICE_HOST", "KAGENT_KUBECONFIG")})
    assert result.returncode == 2, result.stderr
    assert "would serve the network with nobody to check callers" in result.stderr


def test_only_a_caller_that_runs_workflows_may_say_a_request_is_a_workflow_step(
        control_plane: Any, namespace: str, accounts: dict[str, str], llm: MockLLM,
        agent_runtime: Any) -> None:
    """The workflow header picks the Budgets a request counts against; believed only from a
    caller allowed to write run status (the workflow engine), so nobody else can spend a
    Workflow's Budget by naming it."""
    from kagent.agentclient import WORKFLOW_HEADER, WorkflowClaim

    name = unique("steps")
    runtime = start(agent_runtime, control_plane, llm, namespace, name, auth={
        "apiKeys": [{"name": "ci", "secretKeyRef": {"name": "agent-keys", "key": "ci"}}]})
    control_plane.kubectl("create", "serviceaccount", "engine", "-n", namespace)
    grant_invoke(control_plane, namespace, "caller", name)
    control_plane.kubectl("create", "rolebinding", f"invoke-{name}-engine", "-n", namespace,
                          f"--role=invoke-{name}", f"--serviceaccount={namespace}:engine")
    control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps({"items": [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": "runs"},
         "rules": [{"apiGroups": ["kagent.dev"], "resources": ["workflowruns/status"],
                    "verbs": ["update"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": "runs-engine"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "runs"},
         "subjects": [{"kind": "ServiceAccount", "name": "engine", "namespace": namespace}]}],
        "apiVersion": "v1", "kind": "List"}))
    step = {WORKFLOW_HEADER: WorkflowClaim("nightly", {"team": "a"}).header()}

    def ask(bearer: str, headers: dict[str, str] | None = None) -> str:
        client = openai.OpenAI(base_url=runtime.openai_base_url, api_key=bearer, max_retries=0)
        answer = client.chat.completions.create(
            model=runtime.name, messages=[{"role": "user", "content": "step"}],
            extra_headers=headers)
        return answer.choices[0].message.content or ""

    caller = token(control_plane, namespace, "caller")
    assert ask(caller) == "hello step"  # may invoke: a plain request is answered
    with pytest.raises(openai.PermissionDeniedError) as refused:
        ask(caller, step)
    message = refused.value.message
    assert f"system:serviceaccount:{namespace}:caller may not run workflows" in message
    assert 'verb "update" on "workflowruns/status"' in message and WORKFLOW_HEADER in message
    with pytest.raises(openai.PermissionDeniedError) as keyed:
        ask(API_KEY, step)
    assert "an API key cannot" in keyed.value.message
    assert ask(token(control_plane, namespace, "engine"), step) == "hello step"
