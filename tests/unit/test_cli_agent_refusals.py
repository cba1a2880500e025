"""What `kagent chat` and `kagent invoke` print when an agent refuses the caller: the agent's own
reason, and for a 403 the kubectl commands that grant the right, in the agent's namespace."""

from __future__ import annotations

import httpx
import pytest
import typer

from kagent.cli.chat import AgentTarget, _http_failure


def refusal(status: int, message: str) -> httpx.Response:
    return httpx.Response(status, json={"error": {"message": message}})


def test_a_403_says_how_to_grant_invoke_in_the_agents_namespace(capsys: pytest.CaptureFixture[str]) -> None:
    target = AgentTarget(agent="writer", base_url="http://x", namespace="ai-agents")
    with pytest.raises(typer.Exit):
        _http_failure(target, refusal(403, 'user bob may not invoke agent ai-agents/writer'))
    printed = " ".join(capsys.readouterr().err.split())
    assert "may not invoke agent ai-agents/writer" in printed
    assert ("kubectl create role invoke-writer -n ai-agents --verb=invoke "
            "--resource=agents.kagent.dev --resource-name=writer") in printed
    assert "kubectl create rolebinding … -n ai-agents --role=invoke-writer" in printed


def test_a_401_says_which_credentials_the_cli_sends(capsys: pytest.CaptureFixture[str]) -> None:
    target = AgentTarget(agent="writer", base_url="http://x", namespace="ai-agents")
    with pytest.raises(typer.Exit):
        _http_failure(target, refusal(401, "needs credentials"))
    printed = " ".join(capsys.readouterr().err.split())
    assert "did not accept the credentials: needs credentials" in printed and "--token" in printed
