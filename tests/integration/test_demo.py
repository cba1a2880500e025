"""A new user's first ten minutes, as they would live them: `make demo` on a machine with no
cluster and no API key, then the CLI against the live agents it leaves running (chat and a
watched workflow run in a real terminal, invoke, logs, an OpenAI client, rollouts), then
`make demo-down`, which must leave no process behind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pexpect
import pytest
import yaml

from kagent.local.controlplane import ControlPlane
from tests.helpers import wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
NS = "ai-agents"
VENV_BIN = Path(sys.executable).parent
DEMO_AGENTS = ["researcher", "market-analyst", "tech-analyst", "writer", "inquiry-classifier",
               "billing-agent", "tech-support-agent", "general-agent", "drafter", "reviewer"]


@dataclass
class Demo:
    home: Path
    env: dict[str, str]
    result: subprocess.CompletedProcess[str]

    @property
    def kubeconfig(self) -> Path:
        return self.home / "kubeconfig"

    @property
    def workdir(self) -> Path:
        return self.home / ".kubeconfig.kagent-dev"

    @property
    def processes(self) -> dict[str, Any]:
        return json.loads((self.workdir / "dev.json").read_text())["processes"]

    @property
    def agents_url(self) -> str:
        return str(self.processes["pods"]["url"])

    @property
    def llm_url(self) -> str:
        return str(self.processes["mock-llm"]["url"])

    def plane(self) -> ControlPlane:
        return ControlPlane.attach(self.workdir)

    def kagent(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "kagent", *args], capture_output=True,
                              text=True, timeout=timeout, check=False, env=self.env)

    def kubectl_json(self, *args: str) -> Any:
        return json.loads(self.plane().kubectl(*args, "-o", "json").stdout)

    def pods(self) -> list[dict[str, Any]]:
        return httpx.get(f"{self.agents_url}/_pods", timeout=10).json()["pods"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    home = tmp_path_factory.mktemp("kagent-dev-home")
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "KUBECONFIG")}
    env.update({"KAGENT_DEV_HOME": str(home), "COLUMNS": "120"})
    # A fresh checkout: the virtualenv holding `kagent` is not on PATH yet.
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if Path(p).resolve() != VENV_BIN.resolve())
    result = subprocess.run(["make", "demo"], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=900, check=False)
    env["KUBECONFIG"] = str(home / "kubeconfig")
    yield Demo(home, env, result)
    subprocess.run(["make", "demo-down"], cwd=REPO, env=env, capture_output=True, timeout=120,
                   check=False)


def test_make_demo_runs_the_research_report_workflow_to_success(demo: Demo) -> None:
    out = demo.result.stdout + demo.result.stderr
    assert demo.result.returncode == 0, out
    assert "10 agents Ready" in out and "✓ Succeeded" in out
    assert "# AI agents on Kubernetes" in out  # the writer's report, printed as the result
    assert "kagent chat" in out and "make demo-down" in out  # how to explore next
    assert f'export PATH="{VENV_BIN}:$PATH"' in out  # and how to type `kagent` at all
    runs = demo.kubectl_json("get", "workflowruns", "-n", NS)["items"]
    (run,) = [r for r in runs if r["spec"]["workflowRef"]["name"] == "research-report"]
    status = run["status"]
    assert status["phase"] == "Succeeded"
    steps = {s["name"]: s for s in status["steps"]}
    assert {n: (s["phase"], s["agent"]) for n, s in steps.items()} == {
        "research": ("Succeeded", "researcher"), "analyze-market": ("Succeeded", "market-analyst"),
        "analyze-tech": ("Succeeded", "tech-analyst"), "write": ("Succeeded", "writer")}
    assert steps["write"]["startedAt"] >= max(steps["analyze-market"]["finishedAt"],
                                              steps["analyze-tech"]["finishedAt"])
    assert status["usage"]["inputTokens"] == 120 + 150 + 150 + 200  # the scripted usage, summed
    # Every answer came from a real runtime process through the scripted model.
    calls = httpx.get(f"{demo.llm_url}/_mock/calls", timeout=10).json()["rule_counts"]
    assert calls["research-report/researcher"] >= 1 and calls["research-report/writer"] >= 1
    listed = demo.plane().kubectl("get", "kagent", "-n", NS).stdout
    for name in (*DEMO_AGENTS, "research-report", "inquiry-routing", "review-revise"):
        assert name in listed


def test_every_demo_agent_is_a_ready_local_process(demo: Demo) -> None:
    ready = {p["agent"] for p in demo.pods() if p["ready"]}
    assert ready == set(DEMO_AGENTS)
    for agent in DEMO_AGENTS:
        card = httpx.get(f"{demo.agents_url}/{NS}/{agent}/.well-known/agent-card.json", timeout=10)
        assert card.status_code == 200 and card.json()["name"] == agent
        # The card's address is the Service (the proxy), so A2A clients come back through it.
        assert card.json()["supportedInterfaces"][0]["url"] == f"{demo.agents_url}/{NS}/{agent}"
    status = demo.kagent("dev", "status", "--kubeconfig", str(demo.kubeconfig))
    assert status.returncode == 0, status.stderr
    # The report is on stdout, where `kagent dev status | grep` looks for it.
    assert "scripted model" in status.stdout and f"pod {NS}/writer-" in status.stdout
    assert status.stderr == ""


def _tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, check=True).stdout


def test_workflow_run_watch_shows_the_steps_live_in_a_terminal(demo: Demo) -> None:
    """A step that takes a few seconds: the screen first shows it Running, then Succeeded."""
    script = httpx.get(f"{demo.llm_url}/_mock/script", timeout=10).json()
    script["rules"].insert(0, {"name": "test/slow-draft", "system_contains": "copywriter",
                               "contains": "take your time", "delay": 4,
                               "content": "Kagent: new agents in minutes instead of days."})
    httpx.put(f"{demo.llm_url}/_mock/script", json=script, timeout=10).raise_for_status()
    session = f"kagent-watch-{os.getpid()}"
    # The terminal's own size decides the layout, as for a user (no COLUMNS from this process).
    command = (f"env -u COLUMNS -u LINES {sys.executable} -m kagent workflow run review-revise -n {NS} --name watched "
               f"--input 'brief=take your time' --watch; echo EXIT=$?; sleep 600")
    _tmux("new-session", "-d", "-s", session, "-x", "120", "-y", "30", "-e",
          f"KUBECONFIG={demo.kubeconfig}", "-e", f"KAGENT_DEV_HOME={demo.home}", command)
    try:
        running = wait_for(lambda: (lambda s: s if "▶ Running" in s else None)(
            _tmux("capture-pane", "-p", "-t", session)), timeout=60, what="a Running step")
        assert "run watched" in running and "review" in running
        final = wait_for(lambda: (lambda s: s if "EXIT=" in s else None)(
            _tmux("capture-pane", "-p", "-t", session)), timeout=60, what="the command to end")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], check=False, capture_output=True)
    assert "EXIT=0" in final, final
    assert "run watched  ✓ Succeeded" in final
    rows = {line.split()[0]: line for line in final.splitlines() if line.split()[:1] in
            (["draft"], ["review"])}
    assert "drafter" in rows["draft"] and "✓ Succeeded" in rows["draft"]
    assert "reviewer" in rows["review"] and "APPROVED" in rows["review"]
    assert "announcement" in final  # the run's output mapping, printed at the end


def test_workflow_cancel_stops_a_running_run(demo: Demo) -> None:
    script = httpx.get(f"{demo.llm_url}/_mock/script", timeout=10).json()
    script["rules"].insert(0, {"name": "test/endless-draft", "system_contains": "copywriter",
                               "contains": "never finishes", "delay": 60, "content": "late"})
    httpx.put(f"{demo.llm_url}/_mock/script", json=script, timeout=10).raise_for_status()
    started = demo.kagent("workflow", "run", "review-revise", "-n", NS, "--name", "to-cancel",
                          "--input", "brief=never finishes")
    assert started.returncode == 0 and "workflowrun/to-cancel created" in started.stdout

    def step_running() -> bool:
        status = demo.kubectl_json("get", "workflowrun", "to-cancel", "-n", NS).get("status") or {}
        return any(s["phase"] == "Running" for s in status.get("steps") or [])

    wait_for(step_running, what="the draft step to run")
    cancelled = demo.kagent("workflow", "cancel", "to-cancel", "-n", NS)
    assert cancelled.returncode == 0, cancelled.stderr
    status = wait_for(lambda: (lambda s: s if s.get("phase") == "Failed" else None)(
        demo.kubectl_json("get", "workflowrun", "to-cancel", "-n", NS).get("status") or {}),
        timeout=30, what="the run to end")
    assert status["reason"] == "Cancelled"
    steps = {s["name"]: s for s in status["steps"]}
    assert steps["draft"]["phase"] == "Failed"  # stopped in flight
    assert steps["review"]["phase"] == "Skipped"  # never started, and never will
    output = demo.kagent("workflow", "output", "to-cancel", "-n", NS, "--step", "nope")
    assert output.returncode == 2 and "has no step 'nope'" in output.stderr
    missing = demo.kagent("workflow", "cancel", "no-such-run", "-n", NS)
    assert missing.returncode == 3
    bad = demo.kagent("workflow", "run", "review-revise", "-n", NS, "--input", "colour=red")
    assert bad.returncode == 2 and "no such input" in bad.stderr


def test_chat_holds_a_streamed_multi_turn_conversation_in_a_terminal(demo: Demo) -> None:
    child = pexpect.spawn(sys.executable, ["-m", "kagent", "chat", "general-agent", "-n", NS],
                          env=demo.env, encoding="utf-8", timeout=60, dimensions=(30, 120))
    child.expect("general-agent")
    child.sendline("What are your opening hours?")
    child.expect("opening hours are 9:00 to 17:00")
    child.sendline("And on Saturdays?")
    child.expect("opening hours are 9:00 to 17:00")
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    calls = httpx.get(f"{demo.llm_url}/_mock/calls", timeout=10).json()["calls"]
    second = next(c for c in reversed(calls) if c["rule"] == "inquiry-routing/general"
                  and "Saturdays" in json.dumps(c["messages"]))
    texts = [m["text"] for m in second["messages"]]
    assert "What are your opening hours?" in texts  # the runtime's memory carried turn one
    assert second["stream"] is True


def test_invoke_an_openai_client_and_logs_reach_the_live_agents(demo: Demo) -> None:
    invoked = demo.kagent("invoke", "billing-agent", "-n", NS, "-m", "Where is my refund?")
    assert invoked.returncode == 0, invoked.stderr
    assert "duplicate charge will be refunded" in invoked.stdout
    # agents answer authenticated callers only: the OpenAI SDK sends a Kubernetes token as its key
    token = demo.plane().kubectl("create", "token", "kagent-cli", "-n", "kagent-system",
                                 "--audience=kagent.dev").stdout.strip()
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{demo.agents_url}/{NS}/tech-support-agent/v1", api_key="unused",
                      http_client=httpx.Client(trust_env=False), max_retries=0
                      ).chat.completions.create(model="tech-support-agent",
                                                messages=[{"role": "user", "content": "hi"}])
    client = openai.OpenAI(base_url=f"{demo.agents_url}/{NS}/tech-support-agent/v1",
                           api_key=token, http_client=httpx.Client(trust_env=False))
    answer = client.chat.completions.create(
        model="tech-support-agent", messages=[{"role": "user", "content": "I cannot log in"}])
    assert answer.choices[0].message.content.startswith("Tech support: 1. Sign out")
    logs = demo.kagent("logs", "tech-support-agent", "-n", NS, "--tail", "50")
    assert logs.returncode == 0, logs.stderr
    assert "agent tech-support-agent serving on 127.0.0.1" in logs.stdout  # its process's own log


def test_dev_follows_changes_the_way_a_rollout_would(demo: Demo) -> None:
    plane = demo.plane()
    before = {p["pod"] for p in demo.pods() if p["agent"] == "general-agent"}
    plane.kubectl("patch", "agent", "general-agent", "-n", NS, "--type", "merge", "-p",
                  json.dumps({"spec": {"systemPrompt": "You are the general customer service "
                                                       "specialist. Always answer in one line."}}))

    def rolled() -> set[str] | None:
        pods = {p["pod"] for p in demo.pods() if p["agent"] == "general-agent" and p["ready"]}
        return pods if pods and not pods & before else None

    after = wait_for(rolled, timeout=90, what="general-agent to roll to a new local pod")
    assert len(after) == 1
    config = (demo.workdir / "pods" / NS / next(iter(after)) / "volumes/config/agent.yaml")
    mounted = yaml.safe_load_all(config.read_text())  # the new ConfigMap, mounted as a file
    assert next(mounted)["spec"]["systemPrompt"].endswith("Always answer in one line.")
    agent = wait_for(lambda: (lambda a: a if _ready(a) else None)(
        demo.kubectl_json("get", "agent", "general-agent", "-n", NS)), what="Ready again")
    assert agent["status"]["readyReplicas"] == 1

    plane.kubectl("delete", "agent", "drafter", "-n", NS, "--wait=true")
    wait_for(lambda: not [p for p in demo.pods() if p["agent"] == "drafter"],
             what="drafter's process to stop")
    gone = httpx.post(f"{demo.agents_url}/{NS}/drafter/v1/chat/completions", timeout=10,
                      json={"model": "drafter", "messages": [{"role": "user", "content": "hi"}]})
    assert gone.status_code == 503 and "no Ready pod" in gone.text
    plane.kubectl("apply", "-f", str(REPO / "examples/review-revise/agents.yaml"))
    wait_for(lambda: _ready(demo.kubectl_json("get", "agent", "drafter", "-n", NS)), timeout=90,
             what="drafter back")
    back = demo.kagent("invoke", "drafter", "-n", NS, "-m", "Brief: Kagent")
    assert back.returncode == 0 and "Kagent 1.0 is here" in back.stdout


def _ready(agent: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in (agent.get("status") or {}).get("conditions") or [])


# --- the examples, each applied from examples/ and exercised on the demo's live cluster --------


def example(relative: str, **replace: str) -> str:
    """An example's manifests, with addresses that only exist in a cluster pointed at the local
    services this test started (the agents run as local processes, so 127.0.0.1 works)."""
    text = (REPO / "examples" / relative).read_text()
    for old, new in replace.items():
        assert old in text, f"{old} not in {relative}"
        text = text.replace(old, new)
    return text


@pytest.mark.parametrize(("workflow", "question", "agent", "answer"), [
    ("inquiry-routing", "I was charged twice on my invoice", "billing-agent", "Billing:"),
    ("inquiry-routing", "The app shows an error", "tech-support-agent", "Tech support:"),
    ("inquiry-routing", "When are you open?", "general-agent", "General:"),
    ("inquiry-routing-rules", "Please refund me", "billing-agent", "Billing:"),
    ("inquiry-routing-rules", "Total outage since noon", "tech-support-agent", "Tech support:"),
    ("inquiry-routing-rules", "Do you sell gift cards?", "general-agent", "General:"),
])
def test_example_inquiry_routing(demo: Demo, workflow: str, question: str, agent: str,
                                 answer: str) -> None:
    ran = demo.kagent("workflow", "run", workflow, "-n", NS, "--input", f"question={question}",
                      "--watch", "--timeout", "90")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    name = ran.stdout.split("workflowrun/", 1)[1].split()[0] if "workflowrun/" in ran.stdout \
        else ran.stderr.split("workflowrun/", 1)[1].split()[0]
    run = demo.kubectl_json("get", "workflowrun", name, "-n", NS)
    (step,) = run["status"]["steps"]
    assert step["agent"] == agent and step["output"].startswith(answer)
    full = demo.kagent("workflow", "output", name, "-n", NS, "--step", "answer")
    assert full.returncode == 0 and full.stdout.startswith(answer)


def test_example_review_revise_loops_until_approved(demo: Demo) -> None:
    ran = demo.kagent("workflow", "run", "review-revise", "-n", NS, "--name", "loop-1",
                      "--input", "brief=Kagent 1.0", "--watch", "--timeout", "90")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    status = demo.kubectl_json("get", "workflowrun", "loop-1", "-n", NS)["status"]
    steps = {s["name"]: s for s in status["steps"]}
    assert steps["review"]["iterations"] == 2 and steps["review"]["output"] == "APPROVED"
    assert steps["draft"]["attempts"] == 2
    assert "minutes instead of days" in status["output"]["announcement"]


def test_example_scheduled_digest_starts_runs_on_its_schedule(demo: Demo) -> None:
    """The example with its weekday cron made every-minute (the real clock, so up to a minute's
    wait): the next whole minute starts one run with the schedule's input, which succeeds."""
    manifest = example("scheduled-digest/workflow.yaml", **{'"0 7 * * MON-FRI"': '"* * * * *"'})
    demo.plane().kubectl("apply", "-f", "-", input=manifest)
    runs = wait_for(lambda: demo.kubectl_json("get", "workflowruns", "-n", NS, "-l",
                                              "kagent.dev/schedule=weekdays")["items"],
                    timeout=130, interval=2, what="the schedule's first run")
    run = runs[0]
    assert run["metadata"]["name"].startswith("morning-digest-weekdays-")
    assert run["spec"]["input"] == {"topic": "AI agents on Kubernetes"}
    finished = wait_for(lambda: (demo.kubectl_json("get", "workflowrun", run["metadata"]["name"], "-n", NS)
                                 .get("status") or {}).get("phase") in ("Succeeded", "Failed") and
                        demo.kubectl_json("get", "workflowrun", run["metadata"]["name"], "-n", NS),
                        timeout=90, interval=1, what="the scheduled run to finish")
    assert finished["status"]["phase"] == "Succeeded", finished["status"]
    assert not demo.kubectl_json("get", "workflowruns", "-n", NS, "-l",
                                 "kagent.dev/schedule=weekly-recap")["items"]  # suspended
    table = demo.kagent("get", "workflows", "morning-digest", "-n", NS)
    assert table.returncode == 0 and "NEXT" in table.stdout and " ago" in table.stdout, table.stdout


@pytest.fixture(scope="module")
def keda_crds(demo: Demo) -> None:
    from kagent.local.binaries import keda_crd_files

    plane = demo.plane()
    for path in keda_crd_files():
        plane.kubectl("apply", "--server-side", "-f", str(path))
    # Polled rather than `kubectl wait`, which fails outright while a new CRD has no
    # status.conditions yet ("<nil> is of the type <nil>").
    wait_for(lambda: any(
        c["type"] == "Established" and c["status"] == "True"
        for c in (json.loads(plane.kubectl("get", "crd", "scaledobjects.keda.sh", "-o", "json")
                             .stdout).get("status") or {}).get("conditions") or []),
        what="KEDA's ScaledObject CRD to be Established")


def test_example_keda_autoscaling_gets_a_scaled_object_and_no_hpa(demo: Demo, keda_crds: None
                                                                  ) -> None:
    demo.plane().kubectl("apply", "-f", str(REPO / "examples/keda-autoscaling/agent.yaml"))
    scaled = wait_for(lambda: demo.plane().kubectl(
        "get", "scaledobject", "helpdesk-agent", "-n", NS, "-o", "json", check=False).stdout,
        what="the ScaledObject")
    spec = json.loads(scaled)["spec"]
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (1, 8)
    triggers = {t["type"]: t for t in spec["triggers"]}
    assert triggers["cpu"]["metadata"]["value"] == "70"
    assert "agent_active_sessions" in triggers["prometheus"]["metadata"]["query"]
    hpas = demo.kubectl_json("get", "hpa", "-n", NS, "-l", "kagent.dev/agent=helpdesk-agent")
    assert hpas["items"] == []
    agent = wait_for(lambda: (lambda a: a if _ready(a) else None)(
        demo.kubectl_json("get", "agent", "helpdesk-agent", "-n", NS)),
        timeout=90, what="helpdesk-agent Ready")
    # The condition the example's README tells the reader to look at, as it says it.
    conditions = {c["type"]: c for c in agent["status"]["conditions"]}
    assert (conditions["Autoscaling"]["status"], conditions["Autoscaling"]["reason"]) == \
        ("True", "AutoscalerConfigured")
    readme = (REPO / "examples/keda-autoscaling/README.md").read_text()
    assert "`Autoscaling`" in readme and "`AutoscalerConfigured`" in readme
    asked = demo.kagent("invoke", "helpdesk-agent", "-n", NS, "-m", "My laptop will not start")
    assert asked.returncode == 0 and "Which device" in asked.stdout
    metrics = httpx.get(_metrics_url(demo, "helpdesk-agent"), timeout=10).text
    assert "agent_active_sessions" in metrics  # the metric KEDA's query sums


def _metrics_url(demo: Demo, agent: str) -> str:
    (pod,) = [p for p in demo.pods() if p["agent"] == agent and p["ready"]]
    directory = demo.workdir / "pods" / NS / pod["pod"]
    manifest = yaml.safe_load((directory / "volumes/config/agent.yaml").read_text())
    assert manifest["spec"]["observability"]["metrics"]["port"] == 9090
    command = Path(f"/proc/{_pid_listening(pod['url'])}/cmdline").read_bytes().split(b"\0")
    port = command[command.index(b"--metrics-port") + 1].decode()
    return f"http://127.0.0.1:{port}/metrics"


def _pid_listening(url: str) -> int:
    port = url.rsplit(":", 1)[1]
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            parts = cmdline.read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError):
            continue
        if b"runtime" in parts and b"--port" in parts and parts[parts.index(b"--port") + 1] == \
                port.encode():
            return int(cmdline.parent.name)
    raise AssertionError(f"no runtime process serves {url}")


def test_example_mcp_tools_only_the_listed_tools_reach_the_agent(demo: Demo) -> None:
    from kagent.local.services import free_port

    port = free_port()
    server = subprocess.Popen([sys.executable, str(REPO / "examples/mcp-tools/inventory_server.py"),
                               "--port", str(port)])
    try:
        demo.plane().kubectl("apply", "-f", "-", input=example(
            "mcp-tools/agent.yaml", **{"http://127.0.0.1:8765/mcp": f"http://127.0.0.1:{port}/mcp"}))

        def discovered() -> list[str] | None:
            tool = demo.kubectl_json("get", "tool", "inventory", "-n", NS)
            names = [t["name"] for t in (tool.get("status") or {}).get("discoveredTools") or []]
            return names or None

        assert sorted(wait_for(discovered, timeout=90, what="MCP discovery")) == [
            "check_stock", "list_warehouses"]
        wait_for(lambda: _ready(demo.kubectl_json("get", "agent", "inventory-agent", "-n", NS)),
                 timeout=90, what="inventory-agent Ready")
        asked = demo.kagent("invoke", "inventory-agent", "-n", NS, "-m",
                            "How many units of SKU-42 do we have?")
        assert asked.returncode == 0, asked.stderr
        assert "17 units of SKU-42 in stock" in asked.stdout  # the MCP server's own answer
        calls = httpx.get(f"{demo.llm_url}/_mock/calls", timeout=10).json()["calls"]
        offered = next(c for c in reversed(calls) if c["rule"] == "mcp-tools/check-stock")["tools"]
        assert sorted(offered) == ["check_stock", "list_warehouses"]  # clear_inventory hidden
    finally:
        server.terminate()
        server.wait(10)


def test_example_customer_support_the_briefs_agent_end_to_end(
        demo: Demo, keda_crds: None, redis_server: Any, postgres_server: Any) -> None:
    """The brief's Agent, unchanged but for where its Redis, database and ticketing API are:
    a complaint makes it search the knowledge base (pgvector) and open a ticket (HTTP API with a
    bearer token); the conversation is kept in Redis."""
    import asyncio

    import redis
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from kagent.local.services import AsgiServer

    tickets: list[dict[str, Any]] = []

    async def create_ticket(request: Request) -> JSONResponse:
        tickets.append({"auth": request.headers.get("authorization"), **(await request.json())})
        return JSONResponse({"id": f"TCK-{len(tickets):04d}"}, status_code=201)

    asyncio.run(_seed_knowledge_base(postgres_server, demo.llm_url))
    api = AsgiServer(Starlette(routes=[Route("/api/v1/tickets", create_ticket, methods=["POST"])]))
    with api:
        plane = demo.plane()
        for name, key, value in (("knowledge-db", "password", postgres_server.password),
                                 ("ticketing-api", "token", "tickets-token")):
            plane.kubectl("create", "secret", "generic", name, "-n", NS,
                          f"--from-literal={key}={value}")
        redis_host, redis_port = redis_server.url.removeprefix("redis://").split(":")
        plane.kubectl("apply", "-f", "-", input=example(
            "customer-support/agent.yaml", **{
                "host: redis-master.ai-data.svc.cluster.local":
                    f"host: {redis_host}\n      port: {redis_port}"}))
        plane.kubectl("apply", "-f", "-", input=example(
            "customer-support/tools.yaml", **{
                "postgresql://postgres.ai-data.svc.cluster.local:5432/knowledge": postgres_server.url,
                "https://tickets.example.com": api.url}))
        agent = wait_for(lambda: (lambda a: a if _ready(a) else None)(
            demo.kubectl_json("get", "agent", "customer-support-agent", "-n", NS)),
            timeout=120, what="the brief's agent Ready")
        # KEDA owns the replica count (minReplicas 2 is the ScaledObject's to apply; only its
        # CRDs are installed here, not its operator): every ready pod is a live local process.
        scaled = demo.kubectl_json("get", "scaledobject", "customer-support-agent", "-n", NS)
        assert scaled["spec"]["minReplicaCount"] == 2
        local = [p for p in demo.pods() if p["agent"] == "customer-support-agent" and p["ready"]]
        assert agent["status"]["readyReplicas"] == len(local) >= 1
        asked = demo.kagent("invoke", "customer-support-agent", "-n", NS, "-c", "order-7",
                            "-m", "My order arrived broken, the screen is cracked.")
        assert asked.returncode == 0, asked.stderr
        assert "I opened a ticket for you" in asked.stdout and "TCK-0001" in asked.stdout
    (ticket,) = tickets
    assert ticket == {"auth": "Bearer tickets-token",
                      "title": "Damaged delivery reported by customer", "priority": "high"}
    calls = httpx.get(f"{demo.llm_url}/_mock/calls", timeout=10).json()["calls"]
    searched = next(c for c in reversed(calls) if c["rule"] == "customer-support/open-ticket")
    results = [m for m in searched["messages"] if m["role"] == "tool"]
    assert "Damaged goods are replaced" in json.dumps(results)  # the pgvector passage
    history = redis.Redis.from_url(redis_server.url)
    keys = [k.decode() for k in history.keys("*order-7*")]
    assert keys, "the conversation is kept in Redis"
    assert 0 < history.ttl(keys[0]) <= 3600  # the brief's ttl


KNOWLEDGE = [
    ("Damaged goods are replaced free of charge within 30 days; open a ticket with priority high.",
     "returns.md"),
    ("Orders ship within two working days from the Berlin warehouse.", "shipping.md"),
]


async def _seed_knowledge_base(postgres: Any, llm_url: str) -> None:
    """The knowledge base the brief's retrieval tool searches, embedded by the same scripted
    embeddings endpoint the agent uses."""
    from kagent.api.model import EmbeddingSpec
    from kagent.api.vectorstore import VectorStore as VectorStoreSpec
    from kagent.runtime.context import RuntimeContext
    from kagent.runtime.secrets import SecretResolver
    from kagent.runtime.tools import embed, open_vector_store

    secrets = SecretResolver([{"metadata": {"name": "pg"},
                               "stringData": {"password": postgres.password}}], environ={})
    ctx = RuntimeContext(agent_name="seed", namespace=NS, secrets=secrets)
    spec = VectorStoreSpec.model_validate({
        "type": "pgvector", "collection": "support_articles",
        "connection": {"url": postgres.url, "secretRef": {"name": "pg", "key": "password"}}})
    texts = [t for t, _ in KNOWLEDGE]
    vectors = await embed(texts, EmbeddingSpec.model_validate(
        {"provider": "vllm", "model": "text-embedding-3-small", "endpoint": f"{llm_url}/v1"}), ctx)
    store = open_vector_store(spec, len(vectors[0]), ctx)
    await store.add(texts, vectors, [{"source": s} for _, s in KNOWLEDGE])
    await store.close()
    await ctx.http.aclose()


def test_dev_up_with_mock_llm_applies_the_script_to_the_running_model(demo: Demo,
                                                                     tmp_path: Path) -> None:
    script = httpx.get(f"{demo.llm_url}/_mock/script", timeout=10).json()
    script["rules"].insert(0, {"name": "test/applied-by-dev-up", "system_contains": "copywriter",
                               "contains": "from dev up", "content": "Applied by dev up."})
    path = tmp_path / "script.yaml"
    path.write_text(yaml.safe_dump(script))
    applied = demo.kagent("dev", "up", "--mock-llm", str(path))
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout == f"export KUBECONFIG={demo.kubeconfig}\n"
    assert "already running" in applied.stderr and f"applied {path}" in applied.stderr
    rules = httpx.get(f"{demo.llm_url}/_mock/script", timeout=10).json()["rules"]
    assert rules[0]["name"] == "test/applied-by-dev-up"
    answer = demo.kagent("invoke", "drafter", "-n", NS, "-m", "a line from dev up")
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout == "Applied by dev up.\n"
    broken = tmp_path / "broken.yaml"
    broken.write_text("rules: [{name: x, colour: red}]\n")
    refused = demo.kagent("dev", "up", "--mock-llm", str(broken))
    assert refused.returncode == 2 and "colour" in refused.stderr


def test_make_demo_down_leaves_no_process_behind(demo: Demo) -> None:
    pgids = {p["pid"] for p in demo.processes.values()}
    pids = set(demo.plane().pids.values())
    # Each agent pod's process leads a process group of its own, a child of the pod realiser.
    agents = {pid for pid, ppid in _parents().items() if ppid == demo.processes["pods"]["pid"]}
    assert len(agents) >= len(DEMO_AGENTS)
    members = _group_members(pgids | agents)
    assert len(members) >= len(pgids) + len(DEMO_AGENTS)  # the agents' processes are counted
    down = subprocess.run(["make", "demo-down"], cwd=REPO, env=demo.env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert down.returncode == 0, down.stderr
    left = [pid for pid in pids | members if _alive(pid)]
    assert not left, f"still running after make demo-down: {left}"
    assert not demo.kubeconfig.exists()


def _parents() -> dict[int, int]:
    """pid → parent pid of every process."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            found[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, ProcessLookupError):
            continue
    return found


def _group_members(pgids: set[int]) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[2]) in pgids:
            found.add(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture(autouse=True)
def _needs_tmux() -> None:
    if shutil.which("tmux") is None:
        pytest.fail("tmux is needed for the terminal tests; `make test` installs it")

