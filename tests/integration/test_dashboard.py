"""The dashboard in a real headless Chromium (Debian's, driven by Playwright) against `make demo`:
a real control plane, Kagent's controller, the example agents as live runtime processes behind
the scripted model, and the dashboard `make demo` started and printed.

Screenshots of every page are taken here; with KAGENT_UPDATE_SCREENSHOTS=1 they are written
into docs/images/ (the ones docs/dashboard.md shows)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from kagent.local.controlplane import ControlPlane
from tests.helpers import wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
NS = "ai-agents"
TEAM = "team-a"
SCREENSHOTS = REPO / "docs" / "images"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"]
DEMO_AGENTS = ["researcher", "market-analyst", "tech-analyst", "writer", "inquiry-classifier",
               "billing-agent", "tech-support-agent", "general-agent", "drafter", "reviewer"]
HELLO = ("Hello, I am the helpdesk agent of this test. I can help with orders, deliveries and "
         "replacements, one question at a time.")

# Rules put in front of the examples' own: slow enough to watch, a failing analyst, an endless
# researcher, and a helpdesk agent that asks a person.
RULES = [
    {"name": "dash/helpdesk-thanks", "system_contains": "TEST helpdesk",
     "has_tool_result": "ask-customer",
     "content": "Thanks! A replacement for order {{tool_result}} is on its way."},
    {"name": "dash/helpdesk-ask", "system_contains": "TEST helpdesk", "contains": "replacement",
     "tool_calls": [{"name": "ask-customer",
                     "arguments": {"question": "What is your order number?"}}]},
    {"name": "dash/helpdesk-hello", "system_contains": "TEST helpdesk", "content": HELLO,
     "chunk_delay": 0.12},
    {"name": "dash/researcher-tides", "system_contains": "meticulous researcher",
     "contains": "tides", "delay": 2, "content": "FACTS about tides"},
    {"name": "dash/market-tides", "system_contains": "market analyst",
     "contains": "FACTS about tides", "delay": 2, "content": "Tides move markets slowly."},
    {"name": "dash/tech-tides", "system_contains": "technology analyst",
     "contains": "FACTS about tides", "delay": 2, "content": "Tides are predictable."},
    {"name": "dash/writer-tides", "system_contains": "report writer", "contains": "tides",
     "delay": 1, "content": "# Tides\n\nA short report about tides."},
    {"name": "dash/researcher-volcanoes", "system_contains": "meticulous researcher",
     "contains": "volcanoes", "content": "VOLCANO facts"},
    {"name": "dash/market-volcanoes", "system_contains": "market analyst",
     "contains": "VOLCANO facts",
     "error": {"status": 400, "message": "the market data service is down"}},
    {"name": "dash/researcher-glaciers", "system_contains": "meticulous researcher",
     "contains": "glaciers", "delay": 120, "content": "too late"},
]

HELPDESK = """
apiVersion: kagent.dev/v1alpha1
kind: Tool
metadata: {name: ask-customer, namespace: ai-agents}
spec:
  type: human
  description: Ask the customer a question and wait for the answer.
  human: {timeout: 10m}
---
apiVersion: kagent.dev/v1alpha1
kind: Agent
metadata: {name: helpdesk, namespace: ai-agents}
spec:
  description: A test helpdesk that asks the customer when it needs to.
  model:
    provider: openai
    name: gpt-4o-mini
    apiKeySecretRef: {name: openai-api-key, key: api-key}
  systemPrompt: You are the TEST helpdesk agent.
  tools: [{name: ask-customer}]
---
apiVersion: kagent.dev/v1alpha1
kind: Agent
metadata: {name: broken-agent, namespace: ai-agents}
spec:
  description: Refers to a tool nobody created.
  model:
    provider: openai
    name: gpt-4o-mini
    apiKeySecretRef: {name: openai-api-key, key: api-key}
  tools: [{name: no-such-tool}]
"""


@dataclass
class Demo:
    home: Path
    env: dict[str, str]
    output: str
    url: str

    @property
    def kubeconfig(self) -> Path:
        return self.home / "kubeconfig"

    @property
    def workdir(self) -> Path:
        return self.home / ".kubeconfig.kagent-dev"

    @property
    def base(self) -> str:
        return self.url.split("/?", 1)[0]

    def plane(self) -> ControlPlane:
        return ControlPlane.attach(self.workdir)

    def process(self, name: str) -> dict[str, Any]:
        return json.loads((self.workdir / "dev.json").read_text())["processes"][name]

    def kubectl_json(self, *args: str) -> Any:
        return json.loads(self.plane().kubectl(*args, "-o", "json").stdout)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    home = tmp_path_factory.mktemp("kagent-dashboard-home")
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "KUBECONFIG")}
    env.update({"KAGENT_DEV_HOME": str(home), "COLUMNS": "200"})
    result = subprocess.run(["make", "demo"], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=1200, check=False)
    output = result.stdout + result.stderr
    found = re.search(r"dashboard\s+(http://127\.0\.0\.1:\d+/\?key=\S+)", output)
    env["KUBECONFIG"] = str(home / "kubeconfig")
    try:
        assert result.returncode == 0, output
        assert found, f"make demo printed no dashboard URL:\n{output}"
        demo = Demo(home, env, output, found.group(1))
        setup(demo)
        yield demo
    finally:
        subprocess.run(["make", "demo-down"], cwd=REPO, env=env, capture_output=True,
                       timeout=180, check=False)


def setup(demo: Demo) -> None:
    llm = demo.process("mock-llm")["url"]
    script = httpx.get(f"{llm}/_mock/script", timeout=10).json()
    script["rules"] = RULES + script["rules"]
    httpx.put(f"{llm}/_mock/script", json=script, timeout=10).raise_for_status()
    demo.plane().kubectl("apply", "-f", "-", input=HELPDESK)
    wait_for(lambda: ready(demo.kubectl_json("get", "agent", "helpdesk", "-n", NS)),
             timeout=180, what="the helpdesk agent to be Ready")


def ready(agent: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in (agent.get("status") or {}).get("conditions") or [])


# --- the browser ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any, demo: Demo) -> Iterator[Any]:
    """A fresh browser context signed in through the URL `make demo` printed."""
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.set_default_timeout(30_000)
    page.goto(demo.url)
    page.wait_for_selector("[data-page=overview]")
    yield page
    context.close()
    assert not errors, f"the page threw: {errors}"


def screenshot(page: Any, name: str, tmp_path: Path) -> None:
    """Save a screenshot (into docs/images with KAGENT_UPDATE_SCREENSHOTS=1)."""
    target = tmp_path / f"dashboard-{name}.png"
    page.screenshot(path=str(target), full_page=True)
    assert target.stat().st_size > 10_000
    checked_in = SCREENSHOTS / target.name
    if os.environ.get("KAGENT_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(target, checked_in)
    assert checked_in.is_file(), f"{checked_in} is missing: run with KAGENT_UPDATE_SCREENSHOTS=1"


def goto(page: Any, *parts: str) -> None:
    page.goto(page.url.split("#")[0] + "#/" + "/".join(parts))


# --- overview ------------------------------------------------------------------------------------


def test_make_demo_prints_the_dashboard_and_the_overview_lists_every_agent_with_its_state(
        demo: Demo, page: Any, tmp_path: Path) -> None:
    assert demo.url.startswith("http://127.0.0.1:")
    goto(page, "ns", NS)
    for agent in DEMO_AGENTS:
        page.wait_for_selector(f"tr[data-agent={agent}][data-ready=True]")
    broken = page.wait_for_selector("tr[data-agent=broken-agent][data-ready=False]")
    why = broken.query_selector("[data-why]").inner_text()
    assert "no-such-tool" in why  # not Ready, and the row says why
    run = page.wait_for_selector("table[data-table=runs] tr[data-phase=Succeeded]")
    assert run.get_attribute("data-run").startswith("research-report-")
    assert page.query_selector("tr[data-workflow=research-report]") is not None
    # Live: an Agent applied now appears without a reload, and a metric from its pods.
    demo.plane().kubectl("apply", "-f", "-", input=yaml.safe_dump({
        "apiVersion": "kagent.dev/v1alpha1", "kind": "Agent",
        "metadata": {"name": "late-arrival", "namespace": NS},
        "spec": {"model": {"provider": "openai", "name": "gpt-4o-mini",
                           "apiKeySecretRef": {"name": "openai-api-key", "key": "api-key"}},
                 "replicas": 0}}))
    page.wait_for_selector("tr[data-agent=late-arrival]", timeout=10_000)
    demo.plane().kubectl("delete", "agent", "late-arrival", "-n", NS)
    page.wait_for_selector("tr[data-agent=late-arrival]", state="detached", timeout=10_000)
    tokens = page.wait_for_function(
        "() => { const c = document.querySelector('tr[data-agent=writer] [data-metric=tokens]');"
        " return c && c.textContent !== '–' ? c.textContent : null; }", timeout=30_000)
    assert int(tokens.json_value()) >= 200 + 90  # the writer's scripted usage from the demo run
    screenshot(page, "overview", tmp_path)


def test_an_empty_namespace_says_what_to_do(demo: Demo, page: Any) -> None:
    demo.plane().create_namespace("empty-team")
    goto(page, "ns", "empty-team")
    empty = page.wait_for_selector("[data-empty]")
    assert "No agents in empty-team yet" in empty.inner_text()
    assert "kubectl apply" in empty.inner_text()


# --- an agent and its chat -----------------------------------------------------------------------


RECORD_TEXT = """() => {
  window.__texts = [];
  new MutationObserver(() => {
    const turns = document.querySelectorAll('[data-turn=agent] .text');
    const last = turns[turns.length - 1];
    if (last) window.__texts.push(last.textContent);
  }).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


def test_the_chat_panel_streams_the_answer_and_answers_a_question_in_place(
        demo: Demo, page: Any, tmp_path: Path) -> None:
    goto(page, "ns", NS, "agents", "helpdesk")
    page.wait_for_selector("[data-page=agent]")
    children = page.wait_for_selector("table[data-table=children]").inner_text()
    assert "Deployment/helpdesk" in children and "Service/helpdesk" in children
    assert page.query_selector("tr[data-condition=Ready]") is not None
    page.evaluate(RECORD_TEXT)
    page.fill("input[name=message]", "Hello there")
    page.press("input[name=message]", "Enter")
    page.wait_for_selector("[data-turn=agent]:not([data-streaming])", timeout=60_000)
    assert page.locator("[data-turn=agent] .text").last.inner_text() == HELLO
    seen = [t for t in page.evaluate("window.__texts") if t and t != "…"]
    partial = {t for t in seen if t != HELLO}
    assert partial and all(HELLO.startswith(t) for t in partial), seen  # it grew piece by piece

    page.fill("input[name=message]", "My blender broke, I need a replacement")
    page.press("input[name=message]", "Enter")
    question = page.wait_for_selector("[data-turn=agent][data-question=true]", timeout=60_000)
    assert "What is your order number?" in question.inner_text()
    assert page.get_attribute("input[name=message]", "placeholder").startswith("Answer")
    page.fill("input[name=message]", "A-1234")
    page.press("input[name=message]", "Enter")
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-turn=agent] .text')].some("
        "e => e.textContent.includes('order A-1234 is on its way'))", timeout=60_000)
    screenshot(page, "agent", tmp_path)


def test_an_agent_that_is_not_ready_says_why_and_what_to_do(demo: Demo, page: Any) -> None:
    goto(page, "ns", NS, "agents", "broken-agent")
    box = page.wait_for_selector("[data-not-ready]").inner_text()
    assert "no-such-tool" in box and "Create what it references" in box


# --- workflows and runs --------------------------------------------------------------------------


RECORD_PHASES = """() => {
  window.__phases = [];
  const snap = () => {
    const nodes = document.querySelectorAll('[data-step]');
    if (!nodes.length) return;
    const phases = {};
    nodes.forEach(n => phases[n.getAttribute('data-step')] = n.getAttribute('data-phase'));
    const last = window.__phases[window.__phases.length - 1];
    if (!last || JSON.stringify(last) !== JSON.stringify(phases)) window.__phases.push(phases);
  };
  new MutationObserver(snap).observe(document.body,
    {subtree: true, childList: true, attributes: true, attributeFilter: ['data-phase']});
}"""


def start_from_form(page: Any, workflow: str, topic: str) -> str:
    goto(page, "ns", NS, "workflows", workflow)
    page.wait_for_selector("form[data-form=start-run]")
    page.fill("input[name=topic]", topic)
    page.click("form[data-form=start-run] button[type=submit]")
    page.wait_for_selector("[data-page=run]")
    return page.url.rsplit("/", 1)[1]


def test_a_run_started_from_its_form_turns_step_by_step_to_succeeded(
        demo: Demo, page: Any, tmp_path: Path) -> None:
    goto(page, "ns", NS, "workflows", "research-report")
    page.wait_for_selector("form[data-form=start-run]")
    assert page.query_selector("[data-pattern=fan-out]").inner_text().endswith(
        "analyze-market ∥ analyze-tech")
    page.click("form[data-form=start-run] button[type=submit]")  # the required topic is empty
    assert "required" in page.wait_for_selector("[data-field-error=topic]").inner_text()
    screenshot(page, "workflow", tmp_path)
    page.evaluate(RECORD_PHASES)
    name = start_from_form(page, "research-report", "tides")
    page.wait_for_selector("[data-page=run][data-run-phase=Succeeded]", timeout=120_000)
    history = page.evaluate("window.__phases")
    steps = ["research", "analyze-market", "analyze-tech", "write"]

    def first(step: str, phase: str) -> int:
        return next(i for i, h in enumerate(history) if h.get(step) == phase)

    assert first("research", "Running") < first("research", "Succeeded")
    assert first("research", "Succeeded") <= min(first("analyze-market", "Running"),
                                                 first("analyze-tech", "Running"))
    assert any(h["analyze-market"] == h["analyze-tech"] == "Running" for h in history)
    assert max(first("analyze-market", "Succeeded"), first("analyze-tech", "Succeeded")) <= (
        first("write", "Running"))
    assert all(history[-1][s] == "Succeeded" for s in steps)
    # The parallel analysts side by side: same row, different columns.
    market = page.query_selector("[data-step=analyze-market]").bounding_box()
    tech = page.query_selector("[data-step=analyze-tech]").bounding_box()
    research = page.query_selector("[data-step=research]").bounding_box()
    assert abs(market["y"] - tech["y"]) < 1 and abs(market["x"] - tech["x"]) > market["width"]
    assert research["y"] < market["y"]
    timeline = page.query_selector("table[data-table=timeline]").inner_text()
    assert all(s in timeline for s in steps)
    page.click("[data-step=analyze-tech]")
    panel = page.wait_for_selector("[data-step-panel=analyze-tech]")
    assert page.inner_text("[data-step-input]") == (
        "Analyse the technical angle of these facts: FACTS about tides")
    assert page.inner_text("[data-step-output]") == "Tides are predictable."
    assert "tech-analyst" in panel.inner_text()
    assert "A short report about tides." in page.inner_text("[data-run-output=report]")
    run = demo.kubectl_json("get", "workflowrun", name, "-n", NS)
    assert run["spec"]["input"] == {"topic": "tides"}
    assert run["metadata"]["labels"]["kagent.dev/workflow"] == "research-report"
    screenshot(page, "run", tmp_path)


def test_a_failing_step_shows_its_error(demo: Demo, page: Any, tmp_path: Path) -> None:
    start_from_form(page, "research-report", "volcanoes")
    page.wait_for_selector("[data-page=run][data-run-phase=Failed]", timeout=120_000)
    page.wait_for_selector("[data-step=analyze-market][data-phase=Failed]")
    assert page.inner_text("[data-run-reason]") == "StepFailed"
    error = page.wait_for_selector("[data-step-panel=analyze-market] [data-step-error]")
    assert "market data service is down" in error.inner_text()
    assert page.get_attribute("[data-step=write]", "data-phase") == "Skipped"
    screenshot(page, "run-failed", tmp_path)


def test_cancel_stops_a_running_run(demo: Demo, page: Any) -> None:
    name = start_from_form(page, "research-report", "glaciers")
    page.wait_for_selector("[data-step=research][data-phase=Running]", timeout=60_000)
    page.click("[data-action=cancel]")
    page.wait_for_selector("[data-page=run][data-run-phase=Failed]", timeout=60_000)
    assert page.inner_text("[data-run-reason]") == "Cancelled"
    assert page.get_attribute("[data-step=analyze-market]", "data-phase") == "Skipped"
    assert page.query_selector("[data-action=cancel]") is None  # nothing left to cancel
    status = demo.kubectl_json("get", "workflowrun", name, "-n", NS)["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "Cancelled")


# --- who may see what ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def viewer_token(demo: Demo) -> str:
    """A ServiceAccount that may read Kagent objects in team-a only, and start nothing."""
    plane = demo.plane()
    plane.create_namespace(TEAM)
    plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": "viewer", "namespace": TEAM}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": "kagent-viewer", "namespace": TEAM},
         "rules": [{"apiGroups": ["kagent.dev"], "verbs": ["get", "list", "watch"],
                    "resources": ["agents", "workflows", "workflowruns"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": "viewer", "namespace": TEAM},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                     "name": "kagent-viewer"},
         "subjects": [{"kind": "ServiceAccount", "name": "viewer", "namespace": TEAM}]},
    ]))
    workflow = (REPO / "examples/research-report/workflow.yaml").read_text()
    plane.kubectl("apply", "-n", TEAM, "-f", "-", input=workflow.replace(f"namespace: {NS}",
                                                                         f"namespace: {TEAM}"))
    return plane.kubectl("create", "token", "viewer", "-n", TEAM, "--duration", "1h").stdout.strip()


def free_port() -> int:
    from kagent.local.services import free_port as port

    return port()


def start_dashboard(demo: Demo, kubeconfig: Path, *args: str
                    ) -> tuple[subprocess.Popen[str], str, str]:
    """`kagent dashboard` as a process; (process, base URL, access key)."""
    port = free_port()
    key = f"test-key-{port}"
    process = subprocess.Popen(
        [sys.executable, "-m", "kagent", "dashboard", "--kubeconfig", str(kubeconfig), "--port",
         str(port), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**demo.env, "KAGENT_DASHBOARD_ACCESS_KEY": key})
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, process.communicate()[0]
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the dashboard did not start"
        time.sleep(0.2)
    return process, base, key


def stop(process: subprocess.Popen[str]) -> str:
    process.terminate()
    try:
        return process.communicate(timeout=15)[0]
    except subprocess.TimeoutExpired:
        process.kill()
        return process.communicate()[0]


def viewer_kubeconfig(demo: Demo, token: str, path: Path) -> Path:
    config = yaml.safe_load(demo.kubeconfig.read_text())
    config["users"] = [{"name": "viewer", "user": {"token": token}}]
    for context in config["contexts"]:
        context["context"]["user"] = "viewer"
        context["context"]["namespace"] = TEAM
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_namespace_the_kubeconfig_may_not_read_shows_no_permission_and_allows_nothing(
        demo: Demo, viewer_token: str, browser: Any, tmp_path: Path) -> None:
    kubeconfig = viewer_kubeconfig(demo, viewer_token, tmp_path / "viewer.kubeconfig")
    process, base, key = start_dashboard(demo, kubeconfig)
    try:
        context = browser.new_context(viewport={"width": 1360, "height": 900})
        page = context.new_page()
        page.goto(f"{base}/?key={key}")
        page.goto(f"{base}/#/ns/{TEAM}")
        assert "No agents in team-a yet" in page.wait_for_selector("[data-empty]").inner_text()
        page.goto(f"{base}/#/ns/{NS}")
        forbidden = page.wait_for_selector("[data-forbidden]").inner_text()
        assert "No permission" in forbidden and NS in forbidden
        assert "system:serviceaccount:team-a:viewer" in forbidden  # who the API server sees
        assert page.query_selector("table[data-table=agents]") is None
        screenshot(page, "no-permission", tmp_path)
        page.goto(f"{base}/#/ns/{NS}/workflows/research-report")
        page.wait_for_selector("[data-forbidden]")
        assert page.query_selector("form[data-form=start-run]") is None
        # In team-a it may look but not start a run: no form, and the API refuses too.
        page.goto(f"{base}/#/ns/{TEAM}/workflows/research-report")
        assert "may not start runs" in page.wait_for_selector("[data-readonly]").inner_text()
        cookies = {c["name"]: c["value"] for c in context.cookies()}
        with httpx.Client(base_url=base, cookies=cookies, timeout=30) as api:
            refused = api.post(f"/api/namespaces/{TEAM}/workflows/research-report/runs",
                               json={"input": {"topic": "x"}})
            assert refused.status_code == 403 and refused.json()["forbidden"]
            assert "No permission to start a run" in refused.json()["error"]
            elsewhere = api.post(f"/api/namespaces/{NS}/runs/anything/cancel", json={})
            assert elsewhere.status_code == 403
            chat = api.post(f"/api/namespaces/{NS}/agents/writer/chat", json={"message": "hi"})
            assert chat.status_code == 403
        context.close()
    finally:
        stop(process)
    runs = demo.kubectl_json("get", "workflowruns", "-n", TEAM)["items"]
    assert runs == []


def test_token_mode_each_viewer_signs_in_and_sees_only_what_they_may(
        demo: Demo, viewer_token: str, browser: Any, tmp_path: Path) -> None:
    process, base, _ = start_dashboard(demo, demo.kubeconfig, "--auth-mode", "token")
    try:
        assert httpx.get(f"{base}/api/session").status_code == 401
        with_header = httpx.get(f"{base}/api/session",
                                headers={"Authorization": f"Bearer {viewer_token}"})
        assert with_header.json()["user"] == "system:serviceaccount:team-a:viewer"
        assert httpx.get(f"{base}/api/session",
                         headers={"Authorization": "Bearer nonsense"}).status_code == 401
        context = browser.new_context(viewport={"width": 1360, "height": 900})
        page = context.new_page()
        page.goto(f"{base}/")
        page.wait_for_selector("[data-page=signin]")
        page.fill("textarea[name=token]", "not-a-token")
        page.click("button[type=submit]")
        assert "refused this token" in page.wait_for_selector("[data-form-error]").inner_text()
        screenshot(page, "sign-in", tmp_path)
        page.fill("textarea[name=token]", viewer_token)
        page.click("button[type=submit]")
        page.wait_for_selector("[data-page=overview]")
        assert "system:serviceaccount:team-a:viewer" in page.inner_text("header.top")
        page.goto(f"{base}/#/ns/{NS}")
        page.wait_for_selector("[data-forbidden]")
        context.close()
    finally:
        output = stop(process)
    assert viewer_token not in output  # a token never reaches a log


def test_the_dashboard_answers_nobody_without_a_session(demo: Demo) -> None:
    base = demo.base
    assert httpx.get(f"{base}/api/session").status_code == 401
    assert httpx.get(f"{base}/api/namespaces/{NS}/overview").status_code == 401
    assert httpx.post(f"{base}/api/namespaces/{NS}/runs/x/cancel", json={}).status_code == 401
    assert httpx.get(f"{base}/?key=wrong").status_code == 401
    rebound = httpx.get(f"{base}/api/session", headers={"Host": "evil.example:80"})
    assert rebound.status_code == 421  # a page that rebinds its name to 127.0.0.1 gets nothing
    page = httpx.get(f"{base}/")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    with httpx.Client(base_url=base, follow_redirects=False) as signed:
        answer = signed.get(demo.url.replace(base, ""))
        assert answer.status_code == 303
        cookie = answer.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        assert signed.get("/api/session").json()["user"]
        # Actions take JSON only (a cross-site form cannot post one), bodies are bounded.
        plain = signed.post(f"/api/namespaces/{NS}/workflows/research-report/runs",
                            content="input=x", headers={"Content-Type": "text/plain"})
        assert plain.status_code == 400
        huge = signed.post(f"/api/namespaces/{NS}/workflows/research-report/runs",
                           json={"input": {"topic": "x" * 300_000}})
        assert huge.status_code == 400 and "larger than" in huge.json()["error"]
        bad = signed.post(f"/api/namespaces/{NS}/workflows/research-report/runs",
                          json={"input": {"colour": "red"}})
        assert bad.status_code == 422 and set(bad.json()["fields"]) == {"topic", "colour"}
        # The chat relay streams: several pieces of text before the end.
        with signed.stream("POST", f"/api/namespaces/{NS}/agents/helpdesk/chat",
                           json={"message": "Hello"}, timeout=60) as stream:
            events = [json.loads(line[5:]) for line in stream.iter_lines()
                      if line.startswith("data:") and line[5:].strip() not in ("", "{}")]
        texts = [e for e in events if e["type"] == "text"]
        assert len(texts) > 3 and events[-1]["type"] == "done" and events[-1]["text"] == HELLO
