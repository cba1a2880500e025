"""How `kagent dev` turns an agent pod into a local command: the pure planning step, fed the
Deployment pod template the controller really renders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from kagent.api import Agent
from kagent.controller.render import AgentInputs, render_agent
from kagent.local.controlplane import kwok_stages
from kagent.local.localpods import LaunchError, plan_launch, referenced_objects

AGENT = {
    "apiVersion": "kagent.dev/v1alpha1", "kind": "Agent",
    "metadata": {"name": "writer", "namespace": "team", "uid": "u-1"},
    "spec": {"model": {"provider": "openai", "name": "gpt-4o-mini",
                       "apiKeySecretRef": {"name": "openai-api-key", "key": "api-key"}},
             "systemPrompt": "You write.",
             "observability": {"metrics": {"enabled": True, "port": 9090}}},
}


def rendered_pod() -> dict[str, Any]:
    objects = render_agent(AgentInputs(agent=Agent.model_validate(AGENT))).objects
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    config = next(o for o in objects if o["kind"] == "ConfigMap")
    template = deployment["spec"]["template"]
    pod = {"metadata": {"name": "writer-abc", "namespace": "team", "uid": "p-1",
                        "labels": template["metadata"]["labels"]},
           "spec": {**template["spec"], "nodeName": "kwok-node-0"}}
    return {"pod": pod, "config": config["data"]}


def test_the_rendered_pod_becomes_kagent_runtime_on_local_ports(tmp_path: Path) -> None:
    rendered = rendered_pod()
    pod = rendered["pod"]
    assert referenced_objects(pod) == {("ConfigMap", "writer"), ("Secret", "openai-api-key")}
    lookup = {("ConfigMap", "writer"): rendered["config"],
              ("Secret", "openai-api-key"): {"api-key": "sk-local"}}
    plan = plan_launch(pod, lookup, pod_dir=tmp_path, ports={8080: 41001, 9090: 41002},
                       base_env={"PATH": "/bin", "SECRET_OF_THE_HOST": "x"},
                       overrides={"KAGENT_AGENT_URL_TEMPLATE": "http://127.0.0.1:1/{namespace}/{name}"})
    assert plan.argv[1:] == ["-m", "kagent", "runtime", "-f",
                             str(tmp_path / "volumes/config/agent.yaml"), "--port", "41001",
                             "--metrics-port", "41002", "--host", "127.0.0.1"]
    assert plan.http_port == 41001
    config = yaml.safe_load_all(plan.files["volumes/config/agent.yaml"].decode())
    assert next(config)["metadata"]["name"] == "writer"
    assert plan.dirs == ["volumes/tmp"]
    # The pod's environment, resolved as a kubelet would; the host's own variables stay out.
    assert plan.env["KAGENT_NAMESPACE"] == "team" and plan.env["KAGENT_POD_NAME"] == "writer-abc"
    assert "sk-local" in plan.env.values()
    assert plan.env["KAGENT_AGENT_URL_TEMPLATE"] == "http://127.0.0.1:1/{namespace}/{name}"
    assert plan.env["TMPDIR"] == str(tmp_path / "volumes/tmp")
    assert plan.env["PATH"] == "/bin" and "SECRET_OF_THE_HOST" not in plan.env


def test_a_missing_secret_key_names_it(tmp_path: Path) -> None:
    rendered = rendered_pod()
    lookup = {("ConfigMap", "writer"): rendered["config"], ("Secret", "openai-api-key"): {}}
    with pytest.raises(LaunchError, match='Secret "openai-api-key" has no key "api-key"'):
        plan_launch(rendered["pod"], lookup, pod_dir=tmp_path, ports={8080: 1, 9090: 2},
                    base_env={}, overrides={})


def test_a_missing_configmap_names_the_volume(tmp_path: Path) -> None:
    rendered = rendered_pod()
    lookup = {("Secret", "openai-api-key"): {"api-key": "k"}}
    with pytest.raises(LaunchError, match='ConfigMap "writer" \\(volume config\\) not found'):
        plan_launch(rendered["pod"], lookup, pod_dir=tmp_path, ports={8080: 1, 9090: 2},
                    base_env={}, overrides={})


def test_kwok_waits_for_local_readiness_only_for_agent_pods() -> None:
    assert kwok_stages() == kwok_stages(local_agent_pods=False)
    stages = {d["metadata"]["name"]: d for d in yaml.safe_load_all(kwok_stages(local_agent_pods=True))}
    plain = stages["pod-ready"]["spec"]["selector"]["matchExpressions"]
    local = stages["pod-ready-local-agent"]["spec"]["selector"]["matchExpressions"]
    assert {"key": '.metadata.labels["kagent.dev/agent"]', "operator": "DoesNotExist"} in plain
    assert {"key": '.metadata.annotations["kagent.dev/ready-locally"]', "operator": "In",
            "values": ["true"]} in local
    assert stages["pod-ready-local-agent"]["spec"]["next"] == stages["pod-ready"]["spec"]["next"]


async def test_stopping_a_local_pod_stops_its_whole_process_group(tmp_path: Path) -> None:
    """An agent process that started workers of its own (a code tool's sandbox, say): when its
    pod goes, nothing of it stays behind."""
    import sys

    from kagent.local.localpods import LocalPod, LocalPods
    from kagent.local.process import Process

    worker_pid = tmp_path / "worker.pid"
    script = ("import subprocess, sys, time; w = subprocess.Popen([sys.executable, '-c', "
              "'import time; time.sleep(300)']); open(sys.argv[1], 'w').write(str(w.pid)); "
              "time.sleep(300)")
    pod = LocalPod(namespace="team", name="writer-abc", agent="writer", uid="p-1",
                   directory=tmp_path)
    pod.process = Process.start([sys.executable, "-c", script, str(worker_pid)],
                                name="pod team/writer-abc", log_file=tmp_path / "agent.log",
                                die_with_parent=True)
    pod.process.wait_ready(lambda: worker_pid.exists() and worker_pid.read_text() != "",
                           timeout=30, what="the worker")
    worker = Process.attach(int(worker_pid.read_text()))
    assert pod.running() and worker.alive()

    await LocalPods(client=None, workdir=tmp_path, proxy_port=0)._stop(pod)
    assert not pod.running() and not pod.process.group_alive()
    assert not worker.alive()


def test_the_proxy_follows_service_selectors(tmp_path: Path) -> None:
    """A blue-green switch changes the Agent's Service selector; the proxy playing the Service
    follows it (and a preview Service reaches only the new revision)."""
    from kagent.local.localpods import LaunchPlan, LocalPod, LocalPods

    pods = LocalPods(client=None, workdir=tmp_path, proxy_port=0)
    for uid, revision, port in (("a", "old", 1001), ("b", "new", 1002)):
        pod = LocalPod(namespace="team", name=f"writer-{uid}", agent="writer", uid=uid,
                       directory=tmp_path / uid, ready=True,
                       labels={"kagent.dev/agent": "writer", "kagent.dev/revision-hash": revision})
        pod.plan = LaunchPlan(argv=[], env={}, files={}, dirs=[], http_port=port)
        pod.running = lambda: True  # type: ignore[method-assign]
        pods.pods[uid] = pod
    assert pods.endpoints("team", "writer") == ["http://127.0.0.1:1001", "http://127.0.0.1:1002"]
    pods.services[("team", "writer")] = {"kagent.dev/agent": "writer",
                                         "kagent.dev/revision-hash": "old"}
    pods.services[("team", "writer-preview")] = {"kagent.dev/agent": "writer",
                                                 "kagent.dev/revision-hash": "new"}
    assert pods.endpoints("team", "writer") == ["http://127.0.0.1:1001"]
    assert pods.endpoints("team", "writer-preview") == ["http://127.0.0.1:1002"]


def test_the_dev_controller_reaches_agents_and_each_revisions_pods_through_the_local_realiser() -> None:
    """Without the realiser's URL a rollout on `kagent dev` would scrape and call pod IPs that
    do not exist on this machine: every canary would wait for traffic it never sees."""
    from kagent.api.labels import LOCAL_PODS_URL_ENV
    from kagent.local.dev import dev_controller_env

    env = dev_controller_env("http://127.0.0.1:4321")
    assert env[LOCAL_PODS_URL_ENV] == "http://127.0.0.1:4321"
    assert env["KAGENT_WORKFLOW_AGENT_URL_TEMPLATE"] == "http://127.0.0.1:4321/{namespace}/{name}"
