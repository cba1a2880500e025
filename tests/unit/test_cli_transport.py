"""How `kagent invoke`/`chat` reach an agent: the service-proxy request, built offline."""

from __future__ import annotations

import json
from pathlib import Path

# lightkube (whose kubeconfig auth we reuse) is built on httpx2, the maintained httpx fork.
import httpx2 as httpx
import yaml
from lightkube import KubeConfig

from kagent.cli.chat import AgentTarget, complete, proxy_target, service_proxy_path, stream
from kagent.cli.install import server_version_ok


def _kubeconfig(tmp_path: Path) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": "https://api.example:6443",
                                               "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"token": "t0ken"}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u", "namespace": "team"}}],
    }))
    return path


def test_service_proxy_path() -> None:
    assert service_proxy_path("team", "helper") == \
        "/api/v1/namespaces/team/services/helper:http/proxy"


def test_proxy_request_carries_the_kubeconfig_credentials(tmp_path: Path) -> None:
    config = KubeConfig.from_file(_kubeconfig(tmp_path)).get()
    target = proxy_target("helper", "team", config)
    assert target.completions_url == ("https://api.example:6443/api/v1/namespaces/team/"
                                      "services/helper:http/proxy/v1/chat/completions")
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"choices": [{"message": {"content": "hello"}}]})

    target.client_params["transport"] = httpx.MockTransport(handler)
    assert complete(target, "hi", "conv-1", timeout=5) == "hello"
    request = seen[0]
    assert request.method == "POST"
    assert str(request.url) == target.completions_url
    assert request.headers["authorization"] == "Bearer t0ken"
    assert request.headers["x-conversation-id"] == "conv-1"
    assert json.loads(request.content) == {
        "model": "helper", "messages": [{"role": "user", "content": "hi"}], "stream": False}


def test_stream_parses_server_sent_events() -> None:
    events = [
        {"choices": [{"delta": {"role": "assistant", "content": ""}}]},
        {"choices": [{"delta": {"content": "Hel"}}]},
        {"choices": [{"delta": {"content": "lo"}}]},
        {"choices": [{"delta": {}, "finish_reason": "stop"}]},
    ]
    body = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
    transport = httpx.MockTransport(lambda request: httpx.Response(
        200, text=body, headers={"content-type": "text/event-stream"}))
    target = AgentTarget(agent="a", base_url="http://runtime")
    with httpx.Client(transport=transport) as http:
        assert list(stream(http, target, "hi", "c")) == ["Hel", "lo"]


def test_namespace_defaults_to_the_kubeconfig_context(tmp_path: Path) -> None:
    from kagent.cli.common import resolve_namespace

    path = _kubeconfig(tmp_path)
    assert resolve_namespace(None, path) == "team"
    assert resolve_namespace("other", path) == "other"


def test_server_version_check() -> None:
    assert server_version_ok({"major": "1", "minor": "28"})
    assert server_version_ok({"major": "1", "minor": "34+"})
    assert not server_version_ok({"major": "1", "minor": "27"})
