"""The pure parts of agent authentication: what is rendered for an agent's identity and RBAC,
how a local pod gets its projected token, how a request's token is read and a caller named,
how callers' credentials are held, and how the CLI shows and finds them."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from kagent.agentclient import MintedToken, TokenFile, default_credentials, refusal_reason
from kagent.api import Agent
from kagent.controller.render import AgentInputs, auth_binding, render_agent
from kagent.local.localpods import ProjectedToken, plan_launch
from kagent.runtime.auth import (
    AuthConfigError,
    UserInfo,
    authenticator_for,
    bearer_token,
    caller_of,
    card_security,
)
from kagent.runtime.config import build_runtime_config
from kagent.webhook.validate import advice

UNIT_DIR = Path(__file__).parent


def agent_doc(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "kagent.dev/v1alpha1", "kind": "Agent",
            "metadata": {"name": "boss", "namespace": "team", "uid": "u-1"},
            "spec": {"model": {"provider": "openai", "name": "gpt-4o-mini"}, **spec}}


def rendered(**spec: Any) -> dict[str, dict[str, Any]]:
    objects = render_agent(AgentInputs(agent=Agent.model_validate(agent_doc(**spec)))).objects
    return {o["kind"]: o for o in objects}


def test_an_agent_using_agents_as_tools_gets_its_own_audience_bound_token_and_a_role_for_them(
) -> None:
    objects = rendered(tools=[{"name": "helper", "kind": "Agent"}, {"name": "search"},
                              {"name": "critic", "kind": "Agent"}])
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is True  # to check its own callers
    volume = next(v for v in pod["volumes"] if v["name"] == "agent-token")
    assert volume["projected"]["sources"] == [{"serviceAccountToken": {
        "audience": "kagent.dev", "expirationSeconds": 3600, "path": "token"}}]
    container = pod["containers"][0]
    assert {"name": "agent-token", "mountPath": "/var/run/secrets/kagent.dev",
            "readOnly": True} in container["volumeMounts"]
    assert {"name": "KAGENT_AGENT_TOKEN_FILE",
            "value": "/var/run/secrets/kagent.dev/token"} in container["env"]
    assert objects["Role"]["rules"] == [{"apiGroups": ["kagent.dev"], "resources": ["agents"],
                                         "verbs": ["invoke"], "resourceNames": ["critic", "helper"]}]
    assert objects["Role"]["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert objects["RoleBinding"]["subjects"] == [
        {"kind": "ServiceAccount", "name": "boss", "namespace": "team"}]


def test_an_agent_without_agent_tools_gets_no_token_and_no_role() -> None:
    objects = rendered()
    assert "Role" not in objects and "RoleBinding" not in objects
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    assert all(v["name"] != "agent-token" for v in pod["volumes"])


def test_auth_mode_none_mounts_no_api_token_and_binds_no_auth_role() -> None:
    pod = rendered(auth={"mode": "none"})["Deployment"]["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert auth_binding(Agent.model_validate(agent_doc(auth={"mode": "none"}))) is None
    binding = auth_binding(Agent.model_validate(agent_doc()), "my-release-agent-auth")
    assert binding is not None
    assert binding["metadata"]["name"] == "kagent-agent-auth:team:boss"
    assert binding["roleRef"]["name"] == "my-release-agent-auth"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "boss", "namespace": "team"}]
    assert "ownerReferences" not in binding["metadata"]  # cluster-scoped: deleted by the controller


def test_auth_mode_none_is_warned_at_admission() -> None:
    warnings = advice(agent_doc(auth={"mode": "none"}))
    assert any(w.startswith("spec.auth.mode: none lets anyone") for w in warnings)
    assert not any("spec.auth" in w for w in advice(agent_doc()))


def test_a_local_pod_gets_its_projected_token_minted_where_its_env_points(tmp_path: Path) -> None:
    objects = rendered(tools=[{"name": "helper", "kind": "Agent"}])
    template = objects["Deployment"]["spec"]["template"]
    pod = {"metadata": {"name": "boss-1", "namespace": "team", "uid": "p-1",
                        "labels": template["metadata"]["labels"]},
           "spec": {**template["spec"], "nodeName": "n"}}
    plan = plan_launch(pod, {("ConfigMap", "boss"): objects["ConfigMap"]["data"]},
                       pod_dir=tmp_path, ports={8080: 1, 9090: 2}, base_env={}, overrides={})
    assert plan.tokens == {"volumes/agent-token/token": ProjectedToken("boss", "kagent.dev", 3600)}
    assert plan.env["KAGENT_AGENT_TOKEN_FILE"] == str(tmp_path / "volumes/agent-token/token")


def test_the_bearer_token_is_read_from_authorization_or_the_proxy_header() -> None:
    assert bearer_token({"authorization": "Bearer abc"}) == "abc"
    assert bearer_token({"authorization": "bearer  abc "}) == "abc"
    assert bearer_token({"kagent-authorization": "Bearer def"}) == "def"
    assert bearer_token({"authorization": "Bearer a", "kagent-authorization": "Bearer b"}) == "a"
    assert bearer_token({"authorization": "Basic dXNlcjpwYXNz"}) is None
    assert bearer_token({"authorization": "Bearer "}) is None
    assert bearer_token({}) is None


def test_callers_are_named_stably() -> None:
    account = caller_of(UserInfo("system:serviceaccount:team:boss", groups=("system:serviceaccounts",)))
    assert (account.identity, account.kind) == ("system:serviceaccount:team:boss", "serviceaccount")
    assert account.groups == ("system:serviceaccounts",)
    user = caller_of(UserInfo("alice"))
    assert (user.identity, user.kind) == ("user:alice", "user")


def test_the_card_offers_any_one_of_the_accepted_schemes() -> None:
    fields = card_security(["kubernetes", "apiKey"])
    assert set(fields["security_schemes"]) == {"kubernetes", "apiKey"}
    assert [list(r.schemes) for r in fields["security_requirements"]] == [["kubernetes"], ["apiKey"]]
    assert card_security([]) == {"security_schemes": {}, "security_requirements": []}


def config_with(auth: dict[str, Any] | None, key: str = "k" * 20) -> Any:
    docs = [agent_doc(**({"auth": auth} if auth else {})),
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "keys"},
             "stringData": {"ci": key}}]
    docs[0]["spec"]["model"]["endpoint"] = "http://127.0.0.1:1/v1"
    return build_runtime_config(docs, environ={})


KEYS = {"apiKeys": [{"name": "ci", "secretKeyRef": {"name": "keys", "key": "ci"}}]}


def test_an_api_key_too_short_is_refused_naming_the_field() -> None:
    with pytest.raises(AuthConfigError, match=r"spec.auth.apiKeys\[0\] \(ci\).*shorter than 16"):
        authenticator_for(config_with(KEYS, key="short"), None, loopback=True)


def test_serving_the_network_with_nothing_to_check_callers_is_refused() -> None:
    with pytest.raises(AuthConfigError, match="nobody to check callers"):
        authenticator_for(config_with(None), None, loopback=False)
    # with keys there is something to check; with mode none the owner said so
    assert authenticator_for(config_with(KEYS), None, loopback=False).schemes == ["apiKey"]
    assert authenticator_for(config_with({"mode": "none"}), None, loopback=False).required is False


def test_keys_are_required_even_on_loopback_once_configured() -> None:
    authenticator = authenticator_for(config_with(KEYS), None, loopback=True)
    refused = asyncio.run(authenticator.identify({}))
    assert getattr(refused, "status", None) == 401
    caller = asyncio.run(authenticator.identify({"authorization": "Bearer " + "k" * 20}))
    assert getattr(caller, "identity", None) == "apikey:ci"
    wrong = asyncio.run(authenticator.identify({"authorization": "Bearer " + "k" * 19 + "x"}))
    assert getattr(wrong, "status", None) == 401


def test_a_token_file_is_read_again_as_the_kubelet_rotates_it(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import kagent.agentclient as agentclient

    path = tmp_path / "token"
    source = TokenFile(path)
    assert asyncio.run(source.token()) is None  # not there yet: asked again next time
    path.write_text("one\n")
    assert asyncio.run(source.token()) == "one"
    path.write_text("two")
    assert asyncio.run(source.token()) == "one"  # within the re-read interval
    monkeypatch.setattr(agentclient, "TOKEN_REREAD_SECONDS", 0.0)
    assert asyncio.run(source.token()) == "two"
    assert isinstance(default_credentials({"KAGENT_AGENT_TOKEN_FILE": str(path)}), TokenFile)
    assert default_credentials({}) is None


def test_a_minted_token_is_minted_again_before_it_expires() -> None:
    minted: list[str] = []

    async def mint() -> tuple[str, float]:
        minted.append(f"t{len(minted)}")
        return minted[-1], 0.0 if len(minted) == 1 else 3600.0

    async def scenario() -> list[str | None]:
        source = MintedToken(mint)
        return [await source.token(), await source.token(), await source.token()]

    assert asyncio.run(scenario()) == ["t0", "t1", "t1"]


def test_a_refusal_keeps_the_agents_own_reason() -> None:
    request = httpx.Request("POST", "http://agent/")
    response = httpx.Response(403, request=request,
                              json={"error": {"message": "x may not invoke agent ns/a"}})
    error = httpx.HTTPStatusError("403", request=request, response=response)
    wrapped = RuntimeError("HTTP Error 403")
    wrapped.__cause__ = error
    assert refusal_reason(wrapped) == (403, "x may not invoke agent ns/a")
    assert refusal_reason(RuntimeError("other")) is None


def test_the_cli_sends_the_kubeconfigs_own_token_and_shows_who_may_call() -> None:
    from lightkube import KubeConfig

    from kagent.cli.credentials import agent_token, kubeconfig_token
    from kagent.cli.resources import _columns

    config = KubeConfig.from_file(UNIT_DIR / "dashboard_kubeconfig.yaml").get()
    assert kubeconfig_token(config) == "alice-token"
    assert agent_token(config, None, "explicit") == "explicit"
    assert agent_token(config, None) == "alice-token"
    columns = _columns("Agent", agent_doc(auth={"mode": "none"}))
    assert "none" in columns[4]
    assert _columns("Agent", agent_doc(auth=KEYS))[4] == "rbac+keys"
    assert _columns("Agent", agent_doc())[4] == "rbac"


def test_the_audience_claim_only_picks_which_review_comes_first() -> None:
    import base64
    import json

    from kagent.runtime.auth import claimed_audiences

    def jwt(payload: Any) -> str:
        body = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
        return f"e30.{body}.sig"

    assert claimed_audiences(jwt({"aud": ["kagent.dev"]})) == ["kagent.dev"]
    assert claimed_audiences(jwt({"aud": "https://kubernetes.default.svc"})) == [
        "https://kubernetes.default.svc"]
    assert claimed_audiences("static-token") == []
    assert claimed_audiences("a.!!!.c") == []
    assert claimed_audiences(jwt(["not", "a", "dict"])) == []
