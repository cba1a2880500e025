"""Kagent on real pods: the chart installed with the image `make image` builds, onto a real node
(kubelet, containerd with runc, CNI bridge, kube-proxy, CoreDNS) joined to the test control
plane. The controller runs as two pods with in-cluster credentials and leader election, the API
server calls its webhook through the Service with the chart's TLS, the seed's agents run as pods
behind real Services, a workflow run crosses Service networking, the restricted Pod Security
level admits every pod while probes and limits hold, a killed leader hands over, an upgrade rolls
everything without one failed request, and an uninstall leaves nothing behind.

The tier skips only when this machine cannot run a real node or build the image, naming why.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from hack.image import build as image_build
from kagent.api.labels import AGENT_TOKEN_AUDIENCE
from kagent.local import nodeconfig, nodehost, oci, realnode
from kagent.local.binaries import KUBERNETES_VERSION, helm
from kagent.local.controlplane import ControlPlane
from kagent.local.services import RedisServer
from tests.helpers import EXAMPLES, REAL_POD_TIER, REPO, create_seed_secrets, documents, wait_for

# Building the image (when its sources changed) and starting many pods on a busy 2-core machine
# outlast the suite's 10-minute default; each wait inside still has its own, named bound.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(2400), REAL_POD_TIER]

CHART = REPO / "charts" / "kagent"
RELEASE = "kagent"
RELEASE_NS = "kagent-system"
AGENTS_NS = "ai-agents"
DATA_NS = "ai-data"
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted",
              "pod-security.kubernetes.io/enforce-version": "latest"}
MOCK_LLM_PORT = 8080
MOCK_LLM_URL = f"http://mock-llm.{AGENTS_NS}.svc.cluster.local:{MOCK_LLM_PORT}/v1"
SEED_AGENTS = ["customer-support-agent", "researcher", "market-analyst", "tech-analyst", "writer"]
RESTRICTED_CONTAINER = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True}


@dataclass
class Cluster:
    plane: ControlPlane
    node: realnode.RealNode
    archive: Path
    image: str
    redis: RedisServer
    workdir: Path
    notes: dict[str, Any] = field(default_factory=dict)

    def kubectl(self, *args: str, check: bool = True, input: str | None = None) -> str:
        return self.plane.kubectl(*args, check=check, input=input).stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json"))

    def helm(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(helm()), "--kubeconfig", str(self.plane.kubeconfig), *args],
                              capture_output=True, text=True, timeout=timeout, check=False)

    def pods(self, namespace: str, selector: str = "") -> list[dict[str, Any]]:
        args = ["get", "pods", "-n", namespace] + (["-l", selector] if selector else [])
        return self.json(*args)["items"]

    def caller_token(self, namespace: str) -> str:
        """A token of a ServiceAccount that may invoke the namespace's agents (agents check
        every caller: TokenReview, then SubjectAccessReview for `invoke`)."""
        if namespace not in self.notes.setdefault("tokens", {}):
            rbac = "rbac.authorization.k8s.io/v1"
            self.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([
                {"apiVersion": "v1", "kind": "ServiceAccount",
                 "metadata": {"name": "test-caller", "namespace": namespace}},
                {"apiVersion": rbac, "kind": "Role",
                 "metadata": {"name": "test-caller", "namespace": namespace},
                 "rules": [{"apiGroups": ["kagent.dev"], "resources": ["agents"],
                            "verbs": ["invoke"]}]},
                {"apiVersion": rbac, "kind": "RoleBinding",
                 "metadata": {"name": "test-caller", "namespace": namespace},
                 "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                             "name": "test-caller"},
                 "subjects": [{"kind": "ServiceAccount", "name": "test-caller",
                               "namespace": namespace}]}]))
            self.notes["tokens"][namespace] = self.kubectl(
                "create", "token", "test-caller", "-n", namespace, "--audience",
                AGENT_TOKEN_AUDIENCE, "--duration", "2h").strip()
        return str(self.notes["tokens"][namespace])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    problem = nodehost.host_problem()
    if problem is not None:
        pytest.skip(f"no real node on this machine: {problem}")
    problem = image_build.why_not_buildable()
    if problem is not None:
        pytest.skip(f"the Kagent image cannot be built here: {problem}")
    archive = image_build.ensure_built()
    workdir = tmp_path_factory.mktemp("real-pods")
    plane = ControlPlane(workdir=workdir / "control-plane",
                         extra_apiserver_args=nodeconfig.apiserver_args(workdir / "control-plane"))
    plane.start()
    redis = RedisServer()
    cluster: Cluster | None = None
    try:
        began = time.monotonic()
        node = realnode.RealNode(plane, images=[archive]).start()
        print(f"\nreal node Ready in {time.monotonic() - began:.0f}s")
        for namespace in (RELEASE_NS, AGENTS_NS):
            plane.create_namespace(namespace, labels=RESTRICTED)
        plane.create_namespace(DATA_NS)
        redis.host = nodeconfig.NODE_IP  # reachable from pods, through a Service without selector
        redis.start()
        cluster = Cluster(plane, node, archive, oci.read_archive(archive).reference, redis, workdir)
        yield cluster
    finally:
        (cluster.redis if cluster is not None else redis).stop()  # the test may replace it
        plane.stop()  # stops the real node first (its stop hook), then the control plane


# --- the node ---------------------------------------------------------------------------------


def test_the_node_is_real(cluster: Cluster) -> None:
    node = cluster.json("get", "node", nodeconfig.NODE_NAME)
    info = node["status"]["nodeInfo"]
    assert info["kubeletVersion"] == f"v{KUBERNETES_VERSION}"
    assert info["kubeProxyVersion"] in ("", f"v{KUBERNETES_VERSION}")
    assert info["containerRuntimeVersion"].startswith("containerd://")
    assert {"type": "InternalIP", "address": nodeconfig.NODE_IP} in node["status"]["addresses"]
    assert nodeconfig.PAUSE_IMAGE in cluster.node.images_present()
    assert cluster.image in cluster.node.images_present()
    proxy_mode = httpx.get(f"http://127.0.0.1:{cluster.node.ports.proxy_metrics}/proxyMode", timeout=5)
    assert proxy_mode.text == "iptables"
    fake = next(n for n in cluster.json("get", "nodes")["items"] if n["metadata"]["name"] != nodeconfig.NODE_NAME)
    assert nodeconfig.FAKE_NODE_TAINT in fake["spec"]["taints"]  # new pods land on the real node


# --- the chart ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def installed(cluster: Cluster) -> Cluster:
    repository, tag = cluster.image.rsplit(":", 1)
    began = time.monotonic()
    result = cluster.helm("install", RELEASE, str(CHART), "-n", RELEASE_NS,
                          "--set", f"image.repository={repository}", "--set", f"image.tag={tag}",
                          "--set", "image.pullPolicy=Never", "--wait", "--timeout", "300s")
    assert result.returncode == 0, result.stderr + _diagnose(cluster, RELEASE_NS)
    # helm waits for Ready pods; the webhook answers through its Service once kube-proxy has
    # the new endpoints (usually within a second)
    probe = {"apiVersion": "kagent.dev/v1alpha1", "kind": "Agent",
             "metadata": {"name": "webhook-probe", "namespace": AGENTS_NS},
             "spec": {"model": {"provider": "openai", "name": "gpt-4o-mini"}, "systemPrompt": "x"}}
    wait_for(lambda: cluster.plane.kubectl("apply", "--dry-run=server", "-f", "-",
                                           input=json.dumps(probe), check=False).returncode == 0,
             timeout=60, what="the webhook to answer through its Service")
    cluster.notes["install_seconds"] = round(time.monotonic() - began)
    return cluster


def _diagnose(cluster: Cluster, namespace: str) -> str:
    """What a failing wait should print: pods, events and the controller's logs."""
    parts = [cluster.kubectl("get", "pods", "-n", namespace, "-o", "wide", check=False),
             cluster.kubectl("get", "events", "-n", namespace, "--sort-by=.lastTimestamp", check=False)[-4000:]]
    for pod in cluster.pods(namespace):
        parts.append(f"--- logs {pod['metadata']['name']}\n" + cluster.kubectl(
            "logs", "-n", namespace, pod["metadata"]["name"], "--all-containers", "--tail=40", check=False))
    return "\n".join(parts)


def controller_pods(cluster: Cluster) -> list[dict[str, Any]]:
    return [p for p in cluster.pods(RELEASE_NS, "app.kubernetes.io/component=controller")
            if not p["metadata"].get("deletionTimestamp")]


def lease_holder(cluster: Cluster) -> str:
    leases = cluster.json("get", "leases", "-n", RELEASE_NS)["items"]
    return next((lease["spec"].get("holderIdentity") or "" for lease in leases), "")


def test_the_controller_runs_as_two_real_pods_with_in_cluster_credentials(installed: Cluster) -> None:
    pods = controller_pods(installed)
    assert len(pods) == 2
    for pod in pods:
        assert pod["spec"]["nodeName"] == nodeconfig.NODE_NAME
        assert pod["status"]["phase"] == "Running"
        assert _in_pod_subnet(pod["status"]["podIP"])
        container = pod["spec"]["containers"][0]
        assert container["image"] == installed.image and container["imagePullPolicy"] == "Never"
        assert not any("--kubeconfig" in arg for arg in container["args"])  # in-cluster config
    holder = wait_for(lambda: lease_holder(installed), timeout=120, what="a leader")
    assert holder in {p["metadata"]["name"] for p in pods}
    logs = installed.kubectl("logs", "-n", RELEASE_NS, holder, "--tail=400")
    assert logs, "kubectl logs reaches the kubelet"


def _in_pod_subnet(ip: str) -> bool:
    import ipaddress

    return ipaddress.ip_address(ip) in ipaddress.ip_network(nodeconfig.POD_SUBNET)


def test_the_api_server_calls_the_webhook_through_its_service(installed: Cluster) -> None:
    hooks = installed.json("get", "validatingwebhookconfiguration", "kagent.dev")["webhooks"]
    for hook in hooks:
        assert hook["clientConfig"]["service"]["name"] == "kagent-webhook"
        assert hook["clientConfig"].get("caBundle"), "the controller injects the chart's CA"
    # the schema allows any endpoint string; only the webhook knows it must be an http(s) URL
    bad = {"apiVersion": "kagent.dev/v1alpha1", "kind": "Agent",
           "metadata": {"name": "bad", "namespace": AGENTS_NS},
           "spec": {"model": {"provider": "openai", "name": "gpt-4o-mini", "endpoint": "ftp://x"},
                    "systemPrompt": "x"}}
    rejected = installed.plane.kubectl("apply", "-f", "-", input=json.dumps(bad), check=False)
    assert rejected.returncode != 0
    assert "denied the request" in rejected.stderr and "spec.model.endpoint" in rejected.stderr
    good = {**bad, "metadata": {"name": "good", "namespace": AGENTS_NS},
            "spec": {"model": {"provider": "openai", "name": "gpt-4o-mini"}, "systemPrompt": "x"}}
    dry = installed.plane.kubectl("apply", "--dry-run=server", "-o", "json", "-f", "-",
                                  input=json.dumps(good))
    defaulted = json.loads(dry.stdout)
    assert defaulted["spec"] != good["spec"], "the mutating webhook set defaults"


# --- the seed's agents as pods ---------------------------------------------------------------


def _mock_llm_documents(image: str) -> list[dict[str, Any]]:
    """The scripted model as a pod of the same image (`kagent mock-llm`), behind a Service."""
    scripts = {f"{name}.yaml": (EXAMPLES / name / "mockllm.yaml").read_text()
               for name in ("research-report", "customer-support")}
    labels = {"app": "mock-llm"}
    return [
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {"name": "mock-llm", "namespace": AGENTS_NS}, "data": scripts},
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": "mock-llm", "namespace": AGENTS_NS},
         "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
             "metadata": {"labels": labels},
             "spec": {
                 "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                 "containers": [{
                     "name": "mock-llm", "image": image, "imagePullPolicy": "Never",
                     "args": ["mock-llm", "--host", "0.0.0.0", "--port", str(MOCK_LLM_PORT),
                              *[a for name in scripts for a in ("--script", f"/etc/mock-llm/{name}")]],
                     "ports": [{"containerPort": MOCK_LLM_PORT, "name": "http"}],
                     "readinessProbe": {"httpGet": {"path": "/_mock/health", "port": "http"},
                                        "periodSeconds": 2},
                     "resources": {"requests": {"cpu": "50m", "memory": "128Mi"},
                                   "limits": {"cpu": "500m", "memory": "512Mi"}},
                     "securityContext": {**RESTRICTED_CONTAINER, "capabilities": {"drop": ["ALL"]}},
                     "volumeMounts": [{"name": "scripts", "mountPath": "/etc/mock-llm"},
                                      {"name": "tmp", "mountPath": "/tmp"}],
                 }],
                 "volumes": [{"name": "scripts", "configMap": {"name": "mock-llm"}},
                             {"name": "tmp", "emptyDir": {}}],
             }}}},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "mock-llm", "namespace": AGENTS_NS},
         "spec": {"selector": labels, "ports": [{"port": MOCK_LLM_PORT, "targetPort": "http"}]}},
    ]


def _redis_documents(redis: RedisServer) -> list[dict[str, Any]]:
    """The seed's memory host, redis-master.ai-data: a Service without selector whose endpoint is
    the real Redis the test runs on the node IP."""
    return [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "redis-master", "namespace": DATA_NS},
         "spec": {"ports": [{"name": "redis", "port": 6379, "targetPort": redis.port}]}},
        _redis_endpoints(redis.port),
    ]


def _redis_endpoints(port: int) -> dict[str, Any]:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "redis-master-host", "namespace": DATA_NS,
                         "labels": {"kubernetes.io/service-name": "redis-master"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [nodeconfig.NODE_IP], "conditions": {"ready": True}}],
            "ports": [{"name": "redis", "port": port, "protocol": "TCP"}]}


def seed_and_research_documents() -> list[dict[str, Any]]:
    """The seed (customer-support agent, its Tools and Memory, the research-report Workflow)
    and the research-report agents, every model pointed at the scripted model's Service."""
    docs = [d for name in ("customer-support/agent.yaml", "customer-support/tools.yaml",
                           "customer-support/memory.yaml", "research-report/agents.yaml",
                           "research-report/workflow.yaml")
            for d in documents(EXAMPLES / name)]
    for doc in docs:
        if doc["kind"] == "Agent":
            doc["spec"]["model"]["endpoint"] = MOCK_LLM_URL
    return docs


def agent_ready(cluster: Cluster, name: str) -> bool:
    agent = cluster.json("get", "agent", name, "-n", AGENTS_NS)
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in agent.get("status", {}).get("conditions", []))


@pytest.fixture(scope="module")
def seeded(installed: Cluster) -> Cluster:
    cluster = installed
    create_seed_secrets(cluster.plane, AGENTS_NS)
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(
        _redis_documents(cluster.redis) + _mock_llm_documents(cluster.image)))
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(seed_and_research_documents()))
    began = time.monotonic()
    try:
        wait_for(lambda: all(agent_ready(cluster, a) for a in SEED_AGENTS), timeout=420,
                 interval=2, what="the seed's agents Ready")
    except AssertionError as error:
        raise AssertionError(f"{error}\n{_diagnose(cluster, AGENTS_NS)}") from None
    cluster.notes["agents_ready_seconds"] = round(time.monotonic() - began)
    return cluster


def service_url(cluster: Cluster, name: str, namespace: str = AGENTS_NS) -> str:
    """The Service's cluster IP, reached from the host through kube-proxy's rules."""
    service = cluster.json("get", "service", name, "-n", namespace)
    return f"http://{service['spec']['clusterIP']}:{service['spec']['ports'][0]['port']}"


def ask(url: str, agent: str, text: str, token: str, timeout: float = 60,
        conversation: str | None = None) -> httpx.Response:
    """The agent's OpenAI-compatible API (the model name is the agent's), as a caller allowed
    to invoke it; with ``conversation``, in a conversation the agent's memory keeps."""
    headers = {"Authorization": f"Bearer {token}"}
    if conversation:
        headers["X-Conversation-Id"] = conversation
    return httpx.post(f"{url}/v1/chat/completions", timeout=timeout, trust_env=False,
                      headers=headers,
                      json={"model": agent, "messages": [{"role": "user", "content": text}]})


def test_the_seeds_agents_run_as_real_pods_behind_services(seeded: Cluster) -> None:
    for name in SEED_AGENTS:
        pods = seeded.pods(AGENTS_NS, f"kagent.dev/agent={name}")
        assert pods, name
        slices = seeded.json("get", "endpointslices", "-n", AGENTS_NS, "-l", f"kubernetes.io/service-name={name}")
        ready_ips = {a for s in slices["items"] for e in s.get("endpoints") or []
                     if e["conditions"].get("ready") for a in e["addresses"]}
        for pod in pods:
            assert pod["spec"]["nodeName"] == nodeconfig.NODE_NAME
            assert pod["spec"]["containers"][0]["image"] == seeded.image
            assert pod["status"]["podIP"] in ready_ips
    support = seeded.pods(AGENTS_NS, "kagent.dev/agent=customer-support-agent")
    assert len(support) == 2  # the seed's minReplicas
    anonymous = httpx.post(f"{service_url(seeded, 'researcher')}/v1/chat/completions",
                           timeout=30, trust_env=False, json={"model": "researcher", "messages": []})
    assert anonymous.status_code == 401, anonymous.text
    answer = ask(service_url(seeded, "researcher"), "researcher", "AI agents on Kubernetes",
                 seeded.caller_token(AGENTS_NS))
    assert answer.status_code == 200, answer.text
    assert "Kubernetes operators manage applications" in answer.json()["choices"][0]["message"]["content"]


def test_a_workflow_run_succeeds_through_service_networking(seeded: Cluster) -> None:
    """The controller pod runs the research-report workflow, calling each agent by its Service
    name (CoreDNS, kube-proxy); the agents call the scripted model's Service the same way."""
    seeded.kubectl("apply", "-f", str(EXAMPLES / "research-report" / "run.yaml"))
    run_name = documents(EXAMPLES / "research-report" / "run.yaml")[0]["metadata"]["name"]

    def finished() -> dict[str, Any] | None:
        status = seeded.json("get", "workflowrun", run_name, "-n", AGENTS_NS).get("status") or {}
        return status if status.get("phase") in ("Succeeded", "Failed") else None

    status = wait_for(finished, timeout=300, interval=1, what="the workflow run to finish")
    assert status["phase"] == "Succeeded", json.dumps(status, indent=2)[-3000:]
    assert [s["phase"] for s in status["steps"]] == ["Succeeded"] * 4
    assert "AI agents on Kubernetes" in json.dumps(status["output"])


# --- security, probes, limits --------------------------------------------------------------------


def test_restricted_pod_security_admits_every_pod_and_limits_hold(seeded: Cluster) -> None:
    for namespace in (RELEASE_NS, AGENTS_NS):
        labels = seeded.json("get", "namespace", namespace)["metadata"]["labels"]
        assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
        events = seeded.json("get", "events", "-n", namespace)["items"]
        refused = [e["message"] for e in events if "violates PodSecurity" in e.get("message", "")]
        assert not refused, refused
        for pod in seeded.pods(namespace):
            name = pod["metadata"]["name"]
            container = pod["spec"]["containers"][0]
            assert pod["status"]["phase"] == "Running", name
            # what the kernel enforces, seen from inside the container
            uid = seeded.kubectl("exec", "-n", namespace, name, "--", "id", "-u").strip()
            assert uid == "65532", name
            touch = seeded.plane.kubectl("exec", "-n", namespace, name, "--", "touch", "/probe", check=False)
            assert touch.returncode != 0 and "Read-only file system" in touch.stderr, name
            seeded.kubectl("exec", "-n", namespace, name, "--", "touch", "/tmp/probe")
            limits = container.get("resources", {}).get("limits", {})
            if "memory" in limits:
                limit = seeded.kubectl("exec", "-n", namespace, name, "--", "cat",
                                       "/sys/fs/cgroup/memory/memory.limit_in_bytes").strip()
                assert int(limit) == _bytes(limits["memory"]), name
            if "cpu" in limits:
                quota = seeded.kubectl("exec", "-n", namespace, name, "--", "cat",
                                       "/sys/fs/cgroup/cpu/cpu.cfs_quota_us").strip()
                assert int(quota) == int(_cores(limits["cpu"]) * 100_000), name
            restarts = [s["restartCount"] for s in pod["status"]["containerStatuses"]]
            assert restarts == [0], f"{name} restarted: liveness failed?"


def _bytes(quantity: str) -> int:
    units = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return int(quantity[: -len(suffix)]) * factor
    return int(quantity)


def _cores(quantity: str) -> float:
    return int(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def test_probes_hold_through_a_memory_outage(seeded: Cluster) -> None:
    """Readiness is the pod's own (its agent built, its loop answering), not the shared Redis's:
    a Redis outage must not empty every agent's Service at once. Stop the customer-support
    agent's Redis: both pods stay ready in its Service past the readiness probe's failure window
    and nothing restarts (liveness holds); calls meanwhile get a fast 503 naming the memory
    backend; with a Redis back behind the same Service they are answered again."""
    def ready_addresses() -> set[str]:
        slices = seeded.json("get", "endpointslices", "-n", AGENTS_NS,
                             "-l", "kubernetes.io/service-name=customer-support-agent")["items"]
        return {a for s in slices for e in s.get("endpoints") or [] if e["conditions"].get("ready")
                for a in e["addresses"]}

    url, token = service_url(seeded, "customer-support-agent"), seeded.caller_token(AGENTS_NS)

    def call(timeout: float = 60) -> httpx.Response:  # a conversation: the memory is used
        return ask(url, "customer-support-agent", "Where is my order?", token, timeout=timeout,
                   conversation="outage")

    assert len(ready_addresses()) == 2
    assert call().status_code == 200
    seeded.redis.stop()
    stopped = time.monotonic()
    try:
        seen: list[str] = []

        def refused_call() -> httpx.Response | None:
            answer = call(timeout=10)
            seen.append(f"{answer.status_code} {answer.text[:200]}")
            return answer if answer.status_code == 503 else None

        try:
            refused = wait_for(refused_call, timeout=60, interval=1,
                               what="a call refused while Redis is down")
        except AssertionError as error:
            raise AssertionError(f"{error}; answers: {seen[-3:]}") from None
        assert refused.json()["error"]["code"] == "memory_unavailable", refused.text
        assert "retry-after" in refused.headers
        # The readiness probe (every 5 s, unready after 2 failures) has had three windows.
        time.sleep(max(0.0, 30 - (time.monotonic() - stopped)))
        assert len(ready_addresses()) == 2, "a memory outage took the agent's pods out of its Service"
    finally:
        seeded.redis = RedisServer()
        seeded.redis.host = nodeconfig.NODE_IP
        seeded.redis.start()
        seeded.kubectl("apply", "-f", "-", input=yaml.safe_dump(_redis_endpoints(seeded.redis.port)))
    wait_for(lambda: call(timeout=10).status_code == 200,
             timeout=120, interval=2, what="calls answered again with Redis back")
    assert agent_ready(seeded, "customer-support-agent")
    restarts = [s["restartCount"] for p in seeded.pods(AGENTS_NS, "kagent.dev/agent=customer-support-agent")
                for s in p["status"]["containerStatuses"]]
    assert restarts == [0, 0]


# --- high availability ---------------------------------------------------------------------------


def test_killing_the_leader_pod_hands_over(seeded: Cluster) -> None:
    before = wait_for(lambda: lease_holder(seeded), timeout=60, what="a leader")
    seeded.kubectl("delete", "pod", before, "-n", RELEASE_NS, "--grace-period=0", "--force")
    survivors = {p["metadata"]["name"] for p in controller_pods(seeded)} - {before}
    after = wait_for(lambda: (lease_holder(seeded) if lease_holder(seeded) not in ("", before) else ""),
                     timeout=120, what="another replica to take the lease")
    assert after in survivors or after in {p["metadata"]["name"] for p in controller_pods(seeded)}
    # The new leader reconciles: a new Agent becomes Ready.
    agent = {"apiVersion": "kagent.dev/v1alpha1", "kind": "Agent",
             "metadata": {"name": "after-handover", "namespace": AGENTS_NS},
             "spec": {"model": {"provider": "openai", "name": "gpt-4o-mini", "endpoint": MOCK_LLM_URL,
                                "apiKeySecretRef": {"name": "openai-api-key", "key": "api-key"}},
                      "systemPrompt": "You are a meticulous researcher."}}
    seeded.kubectl("apply", "-f", "-", input=json.dumps(agent))
    wait_for(lambda: agent_ready(seeded, "after-handover"), timeout=240, interval=1,
             what="an Agent reconciled by the new leader")
    seeded.kubectl("delete", "agent", "after-handover", "-n", AGENTS_NS, "--wait=false")
    wait_for(lambda: len(controller_pods(seeded)) == 2 and all(
        _pod_ready(p) for p in controller_pods(seeded)), timeout=180, interval=2,
        what="two controller replicas again")


def _pod_ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in pod.get("status", {}).get("conditions", []))


# --- upgrade and uninstall ------------------------------------------------------------------------


def changed_image(cluster: Cluster) -> str:
    """The same image with one more layer and a new tag, as a new release would be."""
    contents = oci.read_archive(cluster.archive)
    folder = cluster.workdir / "changed-image"
    layers = oci.extract_layers(cluster.archive, folder / "blobs")
    epoch = image_build.commit_epoch()
    extra = oci.layer_from_files({"etc/kagent-release": (b"upgrade-test\n", 0o644)}, folder / "blobs",
                                 epoch=epoch, created_by="upgrade test")
    repository = contents.reference.rsplit(":", 1)[0]
    reference = f"{repository}:{image_build.project_version()}-upgrade"
    image = oci.Image([*layers, extra], oci.config_from_document(contents.config), epoch=epoch)
    archive = image.write_archive(folder / "changed.oci.tar", reference)
    cluster.node.import_image(archive)
    return reference


class Traffic(threading.Thread):
    """Calls ``action`` in a loop until stopped, counting successes and keeping failures."""

    def __init__(self, name: str, action: Any, pause: float) -> None:
        super().__init__(name=name, daemon=True)
        self.action, self.pause = action, pause
        self.ok = 0
        self.failures: list[str] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                problem = self.action()
            except Exception as error:  # noqa: BLE001 - every failure is recorded
                problem = f"{type(error).__name__}: {error}"
            if problem:
                self.failures.append(f"{time.strftime('%H:%M:%S')} {problem}")
            else:
                self.ok += 1
            self._stop_event.wait(self.pause)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=120)


def test_helm_upgrade_rolls_controller_and_agents_without_a_failed_request(seeded: Cluster) -> None:
    new_image = changed_image(seeded)
    writer = service_url(seeded, "writer")
    token = seeded.caller_token(AGENTS_NS)

    def call_agent() -> str:
        response = ask(writer, "writer", "Write a report on AI agents on Kubernetes.", token,
                       timeout=30)
        return "" if response.status_code == 200 else f"HTTP {response.status_code}: {response.text[:200]}"

    admission = {"apiVersion": "kagent.dev/v1alpha1", "kind": "Agent",
                 "metadata": {"name": "dry-run", "namespace": AGENTS_NS},
                 "spec": {"model": {"provider": "openai", "name": "gpt-4o-mini"}, "systemPrompt": "x"}}

    def call_webhook() -> str:
        result = seeded.plane.kubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(admission),
                                      check=False)
        return "" if result.returncode == 0 else result.stderr.strip()[-300:]

    traffic = [Traffic("agent", call_agent, 0.2), Traffic("webhook", call_webhook, 1.0)]
    for loop in traffic:
        loop.start()
    began = time.monotonic()
    try:
        tag = new_image.rsplit(":", 1)[1]
        result = seeded.helm("upgrade", RELEASE, str(CHART), "-n", RELEASE_NS, "--reuse-values",
                             "--set", f"image.tag={tag}", "--wait", "--timeout", "300s")
        assert result.returncode == 0, result.stderr + _diagnose(seeded, RELEASE_NS)

        def not_rolled() -> list[str]:
            pods = seeded.pods(RELEASE_NS) + seeded.pods(AGENTS_NS, "kagent.dev/agent")
            return [f"{p['metadata']['name']} image={p['spec']['containers'][0]['image']} "
                    f"ready={_pod_ready(p)} terminating={bool(p['metadata'].get('deletionTimestamp'))}"
                    for p in pods
                    if not (p["spec"]["containers"][0]["image"] == new_image and _pod_ready(p)
                            and not p["metadata"].get("deletionTimestamp"))]

        try:
            wait_for(lambda: not not_rolled(), timeout=420, interval=2,
                     what="the controller and every agent on the new image")
        except AssertionError:
            raise AssertionError(
                f"not rolled after 420 s: {not_rolled()}\nleader: {lease_holder(seeded)}\n"
                + _diagnose(seeded, RELEASE_NS) + _diagnose(seeded, AGENTS_NS)) from None
        wait_for(lambda: all(agent_ready(seeded, a) for a in SEED_AGENTS), timeout=120, interval=2,
                 what="the agents Ready after the upgrade")
        seeded.notes["upgrade_seconds"] = round(time.monotonic() - began)
    finally:
        for loop in traffic:
            loop.stop()
    for loop in traffic:
        assert loop.ok > 10, f"{loop.name}: too few calls made it ({loop.ok})"
        assert not loop.failures, f"{loop.name}: {len(loop.failures)} failed of {loop.ok + len(loop.failures)}:\n" + \
            "\n".join(loop.failures[:10])
    deployments = seeded.json("get", "deployments", "-n", AGENTS_NS, "-l", "kagent.dev/agent")["items"]
    assert {d["spec"]["template"]["spec"]["containers"][0]["image"] for d in deployments} == {new_image}


def test_helm_uninstall_leaves_nothing_behind(seeded: Cluster) -> None:
    # The agents are the user's: removing them first is the documented way to uninstall.
    seeded.kubectl("delete", "agents,tools,memories,workflows,workflowruns", "--all", "-n", AGENTS_NS,
                   "--wait=true", "--timeout=180s")
    result = seeded.helm("uninstall", RELEASE, "-n", RELEASE_NS, "--wait", "--timeout", "180s")
    assert result.returncode == 0, result.stderr
    wait_for(lambda: not seeded.pods(RELEASE_NS), timeout=120, interval=1, what="the controller pods to go")
    left = seeded.kubectl("get", "all,configmaps,secrets,serviceaccounts,roles,rolebindings,leases,"
                          "poddisruptionbudgets", "-n", RELEASE_NS, "-o", "name").split()
    left = [name for name in left if not name.endswith(("/kube-root-ca.crt", "serviceaccount/default"))]
    assert not left, f"left behind in {RELEASE_NS}: {left}"
    for kind in ("validatingwebhookconfigurations", "mutatingwebhookconfigurations",
                 "clusterroles", "clusterrolebindings"):
        names = seeded.kubectl("get", kind, "-l", f"app.kubernetes.io/instance={RELEASE}", "-o", "name").split()
        assert not names, f"left behind: {names}"
    assert not seeded.kubectl("get", "validatingwebhookconfiguration", "kagent.dev", "--ignore-not-found",
                              "-o", "name").strip()
    agent_pods = seeded.pods(AGENTS_NS, "kagent.dev/agent")
    assert not [p for p in agent_pods if not p["metadata"].get("deletionTimestamp")]
    print(f"\nreal-pod tier: {seeded.notes}")
