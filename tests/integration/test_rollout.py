"""Progressive delivery end to end: a real control plane, the controller (and its webhook) as a
process, agent pods as real runtime processes behind the local Service proxy, the scripted model.

A client sends requests through the Agent's Service the whole time: it must only ever get
answers from a runtime — never a dropped connection or a "no Ready pod".
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import yaml

from kagent.api.labels import LOCAL_PODS_URL_ENV
from kagent.local.controller import ControllerProcess, remove_webhook_configurations
from kagent.local.controlplane import ControlPlane, install_crds
from kagent.local.dev import DevProcess, scripted_model_env, start_local_pods
from kagent.mockllm import MockLLM
from tests.helpers import wait_for

pytestmark = pytest.mark.integration

SCRIPT = {"rules": [
    # the judge Agent: a high score for an answer that names Paris, a low one otherwise
    {"name": "judge-good", "system_contains": "You are the JUDGE", "regex": "<answer>\\n[^<]*Paris",
     "content": '{"score": 0.9, "reason": "names Paris"}'},
    {"name": "judge-bad", "system_contains": "You are the JUDGE",
     "content": 'Hmm. {"score": 0.1, "reason": "does not name Paris"}'},
    # the quiz agent: a wrong prompt answers Lyon
    {"name": "quiz-wrong-json", "system_contains": "QUIZ wrong", "contains": "as JSON",
     "content": '{"capital": "Lyon"}'},
    {"name": "quiz-wrong", "system_contains": "QUIZ wrong", "content": "Lyon, I believe."},
    {"name": "quiz-json", "system_contains": "QUIZ", "contains": "as JSON",
     "content": '{"capital": "Paris"}'},
    {"name": "quiz", "system_contains": "QUIZ", "content": "Paris is the capital of France."},
    {"name": "broken", "system_contains": "VERSION broken",
     "error": {"status": 400, "message": "the new prompt breaks the model"}},
    {"name": "second", "system_contains": "VERSION 2", "content": "the second answer"},
    {"name": "verbose", "system_contains": "VERSION verbose", "content": "a very long answer",
     "usage": {"input_tokens": 100, "output_tokens": 20000}},
    {"name": "answer", "content": "an answer"},
]}
CANARY = {"strategy": "Canary", "canary": {
    "steps": [{"setWeight": 50}, {"pause": {"duration": "6s"}}, {"setWeight": 100},
              {"pause": {"duration": "4s"}}],
    "analysis": {"minRequests": 3, "maxErrorRate": 0.2, "timeout": "60s"}}}


@dataclass
class Env:
    plane: ControlPlane
    pods: DevProcess
    controller: ControllerProcess
    llm: MockLLM

    def kubectl_json(self, *args: str) -> Any:
        result = self.plane.kubectl(*args, "-o", "json", check=False)
        return json.loads(result.stdout) if result.returncode == 0 else None

    def agent(self, namespace: str, name: str) -> dict[str, Any]:
        return self.kubectl_json("get", "agent", name, "-n", namespace)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    workdir = tmp_path_factory.mktemp("rollout")
    with MockLLM(SCRIPT) as llm, ControlPlane(local_agent_pods=True) as plane:
        install_crds(plane)
        overrides = {**scripted_model_env(llm.url), "OPENAI_API_KEY": "scripted"}
        pods = start_local_pods(workdir, plane.kubeconfig, overrides)
        controller = ControllerProcess(plane, identity="rollout-0", log_dir=workdir, env={
            LOCAL_PODS_URL_ENV: pods.url,
            # the judge Agent is reached through the local Service proxy, as workflow steps are
            "KAGENT_WORKFLOW_AGENT_URL_TEMPLATE": pods.url + "/{namespace}/{name}"})
        try:
            controller.start()
            wait_for(controller.is_leader, what="leadership")
            yield Env(plane, pods, controller, llm)
        finally:
            controller.stop()
            remove_webhook_configurations(plane)
            pods.supervised().stop(grace=10)


def agent_doc(namespace: str, name: str, prompt: str, rollout: dict[str, Any]) -> dict[str, Any]:
    """The rollout is under test, not authentication: the test's client calls anonymously
    (``auth.mode: none``, which admission warns about)."""
    return {"apiVersion": "kagent.dev/v1alpha1", "kind": "Agent",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"model": {"provider": "openai", "name": "gpt-4o-mini"},
                     "systemPrompt": prompt, "replicas": 2, "rollout": rollout,
                     "auth": {"mode": "none"}}}


def apply(env: Env, doc: dict[str, Any]) -> None:
    env.plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))


def set_prompt(env: Env, namespace: str, name: str, prompt: str) -> None:
    env.plane.kubectl("patch", "agent", name, "-n", namespace, "--type", "merge", "-p",
                      json.dumps({"spec": {"systemPrompt": prompt}}))


def rollout_status(env: Env, namespace: str, name: str) -> dict[str, Any]:
    return ((env.agent(namespace, name) or {}).get("status") or {}).get("rollout") or {}


def healthy_at(env: Env, namespace: str, name: str, revision: int) -> dict[str, Any] | None:
    agent = env.agent(namespace, name)
    status = (agent or {}).get("status") or {}
    rollout = status.get("rollout") or {}
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or [])
    return agent if ready and rollout.get("phase") == "Healthy" and \
        rollout.get("stableRevision") == revision else None


@dataclass
class Client:
    """Sends chat requests through the Agent's Service, one after the other, until stopped."""

    url: str
    agent: str
    answers: list[tuple[int, str]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Client:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        with httpx.Client(timeout=30, trust_env=False) as http:
            while not self._stop.is_set():
                try:
                    response = http.post(f"{self.url}/v1/chat/completions", json={
                        "model": self.agent, "messages": [{"role": "user", "content": "hello"}]})
                    self.answers.append((response.status_code, response.text))
                except httpx.HTTPError as error:
                    self.failures.append(repr(error))
                time.sleep(0.1)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=40)

    def dropped(self) -> list[str]:
        """Requests no runtime answered: transport errors and the proxy's own refusals."""
        proxy = [text for code, text in self.answers
                 if code in (502, 503) and ("no Ready pod" in text or "unreachable" in text)]
        return self.failures + proxy


def events(env: Env, namespace: str, name: str) -> list[dict[str, Any]]:
    listed = env.kubectl_json("get", "events", "-n", namespace, "--field-selector",
                              f"involvedObject.name={name}")
    return (listed or {}).get("items") or []


def test_canary_promotes_a_good_prompt_and_rolls_a_broken_one_back(env: Env) -> None:
    namespace = env.plane.create_namespace(f"canary-{int(time.time())}")
    name = "helper"
    apply(env, agent_doc(namespace, name, "VERSION 1", CANARY))
    wait_for(lambda: healthy_at(env, namespace, name, 1), timeout=120, what="revision 1 Healthy")
    client = Client(f"{env.pods.url}/{namespace}/{name}", name).start()
    try:
        wait_for(lambda: len(client.answers) >= 3, what="the client's first answers")
        # a good change: through both steps, analysed twice, promoted
        set_prompt(env, namespace, name, "VERSION 2")
        seen: set[tuple[Any, ...]] = set()

        def promoted() -> dict[str, Any] | None:
            status = rollout_status(env, namespace, name)
            seen.add((status.get("phase"), status.get("currentStep"), status.get("canaryWeight")))
            return healthy_at(env, namespace, name, 2)

        agent = wait_for(promoted, timeout=180, what="revision 2 promoted")
        assert ("Progressing", 1, 50) in seen or ("Progressing", 2, 50) in seen, seen
        analysis = agent["status"]["rollout"]["analysis"]
        assert analysis["verdict"] == "Passed" and analysis["canary"]["requests"] >= 3
        assert analysis["canary"]["errorRate"] == "0"
        assert env.kubectl_json("get", "deployment", f"{name}-canary", "-n", namespace) is None
        passed = [e for e in events(env, namespace, name) if e["reason"] in ("AnalysisPassed", "Promoted")]
        assert {e["reason"] for e in passed} == {"AnalysisPassed", "Promoted"}
        good = [a for a in client.answers if a[0] == 200]
        assert len(good) == len(client.answers) and not client.dropped(), client.answers[-5:]

        # a change that makes the model fail: rolled back at the first analysis
        asked = len(client.answers)
        set_prompt(env, namespace, name, "VERSION broken")

        def rolled_back() -> dict[str, Any] | None:
            status = rollout_status(env, namespace, name)
            return status if status.get("phase") == "RolledBack" else None

        status = wait_for(rolled_back, timeout=180, what="the broken revision rolled back")
        analysis = status["analysis"]
        assert analysis["verdict"] == "Failed" and analysis["step"] == 1
        assert float(analysis["canary"]["errorRate"]) > 0.2
        assert analysis["stable"]["errorRate"] == "0" and analysis["stable"]["requests"] > 0
        assert "maxErrorRate 0.2" in analysis["message"]
        assert status["stableRevision"] == 2 and status["canaryRevision"] == 3
        warning = [e for e in events(env, namespace, name) if e["reason"] == "RolledBack"]
        assert warning and warning[0]["type"] == "Warning"
        assert "error rate" in warning[0]["message"]
        agent = env.agent(namespace, name)
        ready = next(c for c in agent["status"]["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "False" and ready["reason"] == "RolledBack"
        wait_for(lambda: env.kubectl_json("get", "deployment", f"{name}-canary", "-n", namespace)
                 is None, what="the canary Deployment removed")
        # the stable revision answers everything again
        time.sleep(2)
        after = len(client.answers)
        time.sleep(2)
        assert all(code == 200 for code, _ in client.answers[after:])
        assert len(client.answers) > asked and not client.dropped(), client.dropped()[:3]

        # every rolled-out spec is kept as a ControllerRevision
        revisions = env.kubectl_json("get", "controllerrevisions", "-n", namespace)["items"]
        prompts = {r["revision"]: r["data"]["spec"]["systemPrompt"] for r in revisions}
        assert prompts == {1: "VERSION 1", 2: "VERSION 2", 3: "VERSION broken"}
    finally:
        client.stop()


def test_a_canary_that_spends_more_tokens_and_money_per_request_is_rolled_back(env: Env) -> None:
    """gpt-4o-mini costs $0.6 per million output tokens: the verbose prompt's 20,000 output
    tokens cost $0.012 a request, over maxCostPerRequest, and far more tokens than stable."""
    namespace = env.plane.create_namespace(f"usage-{int(time.time())}")
    name = "thrifty"
    rollout = {"strategy": "Canary", "canary": {
        "steps": [{"setWeight": 50}, {"pause": {"duration": "6s"}}],
        "analysis": {"minRequests": 3, "maxTokensPerRequestIncrease": 1.0,
                     "maxCostPerRequest": 0.01, "timeout": "60s"}}}
    apply(env, agent_doc(namespace, name, "VERSION 1", rollout))
    wait_for(lambda: healthy_at(env, namespace, name, 1), timeout=120, what="revision 1 Healthy")
    client = Client(f"{env.pods.url}/{namespace}/{name}", name).start()
    try:
        wait_for(lambda: len(client.answers) >= 3, what="the client's first answers")
        set_prompt(env, namespace, name, "VERSION verbose")
        status = wait_for(lambda: phase(env, namespace, name, "RolledBack"), timeout=180,
                          what="the verbose revision rolled back")
    finally:
        client.stop()
    analysis = status["analysis"]
    assert analysis["verdict"] == "Failed" and analysis["step"] == 1
    canary, stable = analysis["canary"], analysis["stable"]
    assert float(canary["tokensPerRequest"]) == 20100
    assert 0 < float(stable["tokensPerRequest"]) < 1000
    assert abs(float(canary["costPerRequest"]) - 0.012015) < 1e-4  # (100 × 0.15 + 20,000 × 0.6) µ$
    assert "maxCostPerRequest 0.01" in analysis["message"]
    assert "above the stable revision's" in analysis["message"]
    assert all(code == 200 for code, _ in client.answers) and not client.dropped()


EVALUATION = {"minRequests": 2, "timeout": "90s", "evaluation": {
    "dataset": [
        {"prompt": "What is the capital of France?", "criteria": "Names Paris.",
         "checks": {"contains": ["Paris"], "cel": "answer.size() < 200 && json == null"}},
        {"prompt": "Give the capital of France as JSON.",
         "checks": {"jsonSchema": {"type": "object", "required": ["capital"],
                                   "properties": {"capital": {"const": "Paris"}}}}}],
    "judge": {"agent": "judge", "minScore": 0.5}, "answerTimeout": "30s"}}


def test_an_evaluation_with_a_judge_blocks_a_wrong_revision_and_lets_a_good_one_through(
        env: Env) -> None:
    namespace = env.plane.create_namespace(f"evaluation-{int(time.time())}")
    judge = agent_doc(namespace, "judge", "You are the JUDGE of answers.", {"strategy": "RollingUpdate"})
    judge["spec"]["replicas"] = 1
    apply(env, judge)
    wait_for(lambda: any(c["type"] == "Ready" and c["status"] == "True" for c in (
        (env.agent(namespace, "judge") or {}).get("status") or {}).get("conditions") or []),
        timeout=120, what="the judge Ready")
    name = "quiz"
    rollout = {"strategy": "Canary", "canary": {
        "steps": [{"setWeight": 50}, {"pause": {"duration": "3s"}}], "analysis": EVALUATION}}
    apply(env, agent_doc(namespace, name, "QUIZ 1", rollout))
    wait_for(lambda: healthy_at(env, namespace, name, 1), timeout=120, what="revision 1 Healthy")

    set_prompt(env, namespace, name, "QUIZ wrong")
    status = wait_for(lambda: phase(env, namespace, name, "RolledBack"), timeout=180,
                      what="the wrong revision rolled back")
    analysis = status["analysis"]
    assert analysis["verdict"] == "Failed", analysis
    canary, stable = analysis["canary"]["evaluation"], analysis["stable"]["evaluation"]
    assert (canary["cases"], canary["passed"], canary["score"]) == (2, 0, "0.1"), canary
    assert (stable["cases"], stable["passed"], stable["score"]) == (2, 2, "0.9"), stable
    assert "prompt 0: does not contain 'Paris'" in canary["failures"][0]
    assert "does not match the JSON Schema" in canary["failures"][1]
    assert analysis["message"].startswith("evaluation 0/2 prompts passed (stable 2/2)")
    warning = [e for e in events(env, namespace, name) if e["reason"] == "RolledBack"]
    assert warning and "evaluation 0/2" in warning[0]["message"]

    set_prompt(env, namespace, name, "QUIZ fixed")
    agent = wait_for(lambda: healthy_at(env, namespace, name, 3), timeout=180,
                     what="the fixed revision promoted")
    analysis = agent["status"]["rollout"]["analysis"]
    assert analysis["verdict"] == "Passed", analysis
    assert analysis["canary"]["evaluation"] == {"cases": 2, "passed": 2, "score": "0.9"}
    assert "evaluation 2/2 prompts passed (stable 2/2); judge score 0.9" in analysis["message"]


def test_the_webhook_refuses_malformed_steps_naming_the_field(env: Env) -> None:
    namespace = env.plane.create_namespace(f"refuse-{int(time.time())}")
    bad = agent_doc(namespace, "helper", "x", {"strategy": "Canary", "canary": {
        "steps": [{"setWeight": 60}, {"setWeight": 30}]}})
    result = env.plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(bad), check=False)
    assert result.returncode != 0
    assert "spec.rollout.canary.steps[1].setWeight" in result.stderr
    unpriced = agent_doc(namespace, "helper", "x", {"strategy": "Canary", "canary": {
        "analysis": {"maxCostPerRequest": 0.01}}})
    unpriced["spec"]["model"] = {"provider": "openai", "name": "in-house-model"}
    result = env.plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(unpriced), check=False)
    assert result.returncode != 0
    assert "spec.rollout.canary.analysis.maxCostPerRequest" in result.stderr
    assert "no price" in result.stderr
    ok = agent_doc(namespace, "helper", "x", {"strategy": "BlueGreen",
                                              "blueGreen": {"scaleDownDelay": "1m"}})
    env.plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(ok))


def kagent(env: Env, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kagent", *args, "--kubeconfig",
                           str(env.plane.kubeconfig)], capture_output=True, text=True, timeout=60,
                          check=False, env={**os.environ, "COLUMNS": "200"})


def phase(env: Env, namespace: str, name: str, wanted: str) -> dict[str, Any] | None:
    status = rollout_status(env, namespace, name)
    return status if status.get("phase") == wanted else None


def test_rollout_commands_status_history_promote_abort_undo(env: Env) -> None:
    namespace = env.plane.create_namespace(f"cli-{int(time.time())}")
    name = "steered"
    manual = {"strategy": "Canary", "canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}}
    apply(env, agent_doc(namespace, name, "VERSION 1", manual))
    wait_for(lambda: healthy_at(env, namespace, name, 1), timeout=120, what="revision 1 Healthy")
    nothing = kagent(env, "rollout", "promote", name, "-n", namespace)
    assert nothing.returncode == 1 and "no rollout in progress" in nothing.stderr

    set_prompt(env, namespace, name, "VERSION 2")
    wait_for(lambda: phase(env, namespace, name, "Paused"), timeout=120, what="paused at 50%")
    shown = kagent(env, "rollout", "status", name, "-n", namespace)
    assert shown.returncode == 0, shown.stderr
    assert "phase:    Paused" in shown.stdout and "new:      revision 2" in shown.stdout
    assert "weights:  stable 50% (1 pods), new 50% (1 pods)" in shown.stdout
    promoted = kagent(env, "rollout", "promote", name, "-n", namespace)
    assert promoted.returncode == 0 and "promote requested" in promoted.stdout
    wait_for(lambda: healthy_at(env, namespace, name, 2), timeout=120, what="promoted to revision 2")
    annotations = env.agent(namespace, name)["metadata"].get("annotations") or {}
    assert "kagent.dev/rollout-action" not in annotations  # acted on, then removed

    set_prompt(env, namespace, name, "VERSION 3")
    wait_for(lambda: phase(env, namespace, name, "Paused"), timeout=120, what="paused again")
    aborted = kagent(env, "rollout", "abort", name, "-n", namespace)
    assert aborted.returncode == 0, aborted.stderr
    status = wait_for(lambda: phase(env, namespace, name, "Aborted"), timeout=60, what="aborted")
    assert status["stableRevision"] == 2

    history = kagent(env, "rollout", "history", name, "-n", namespace)
    assert history.returncode == 0, history.stderr
    rows = [line.split() for line in history.stdout.splitlines()[1:] if line.strip()]
    assert [row[0] for row in rows] == ["1", "2", "3"]
    assert "stable" in history.stdout and "rolled back" in history.stdout
    assert "VERSION 3" in history.stdout

    undone = kagent(env, "rollout", "undo", name, "-n", namespace)
    assert undone.returncode == 0 and "rolled back to revision 1" in undone.stdout, undone.stderr
    assert env.agent(namespace, name)["spec"]["systemPrompt"] == "VERSION 1"
    wait_for(lambda: phase(env, namespace, name, "Paused"), timeout=120, what="revision 1 as a canary")
    kagent(env, "rollout", "promote", name, "--full", "-n", namespace)
    wait_for(lambda: healthy_at(env, namespace, name, 1), timeout=120, what="back on revision 1")
    missing = kagent(env, "rollout", "undo", name, "--to-revision", "9", "-n", namespace)
    assert missing.returncode == 1 and "no revision 9" in missing.stderr

    # leaving Canary while a canary is in flight removes it; the Deployment rolls as usual
    set_prompt(env, namespace, name, "VERSION 5")
    wait_for(lambda: phase(env, namespace, name, "Paused"), timeout=120, what="a canary in flight")
    env.plane.kubectl("patch", "agent", name, "-n", namespace, "--type", "merge", "-p",
                      json.dumps({"spec": {"rollout": {"strategy": "RollingUpdate", "canary": None}}}))
    wait_for(lambda: env.kubectl_json("get", "deployment", f"{name}-canary", "-n", namespace)
             is None, what="the canary Deployment removed")
    agent = wait_for(lambda: (lambda a: a if "rollout" not in a["status"] and any(
        c["type"] == "Ready" and c["status"] == "True" for c in a["status"]["conditions"])
        else None)(env.agent(namespace, name)), timeout=120, what="a plain rolled-out Agent")
    assert agent["spec"]["systemPrompt"] == "VERSION 5"


def test_blue_green_switches_after_the_preview_is_ready_and_analysed_and_undo_switches_back(
        env: Env) -> None:
    namespace = env.plane.create_namespace(f"bluegreen-{int(time.time())}")
    name = "switcher"
    blue_green = {"strategy": "BlueGreen", "blueGreen": {
        "scaleDownDelay": "5m", "analysis": {"minRequests": 3, "maxErrorRate": 0.2, "timeout": "60s"}}}
    doc = agent_doc(namespace, name, "VERSION 1", blue_green)
    doc["spec"]["replicas"] = 1
    apply(env, doc)
    wait_for(lambda: healthy_at(env, namespace, name, 1), timeout=120, what="revision 1 Healthy")
    client = Client(f"{env.pods.url}/{namespace}/{name}", name).start()
    preview = Client(f"{env.pods.url}/{namespace}/{name}-preview", name)
    try:
        set_prompt(env, namespace, name, "VERSION 2")
        wait_for(lambda: env.kubectl_json("get", "service", f"{name}-preview", "-n", namespace),
                 what="the preview Service")
        preview.start()
        analysing = wait_for(lambda: phase(env, namespace, name, "Analysing"), timeout=120,
                             what="the preview Ready and analysed")
        ready_at = len(client.answers)
        assert analysing["activeSelector"] == analysing["stableHash"]  # not switched yet

        def switched() -> dict[str, Any] | None:
            status = rollout_status(env, namespace, name)
            return status if status.get("switchedAt") else None

        status = wait_for(switched, timeout=120, what="the switch")
        assert status["analysis"]["verdict"] == "Passed"
        assert status["analysis"]["canary"]["requests"] >= 3
        assert status["activeSelector"] == status["canaryHash"]
        wait_for(lambda: "the second answer" in client.answers[-1][1], timeout=30,
                 what="the Agent's Service answering from revision 2")
        early = [text for _, text in client.answers[:ready_at] if "the second answer" in text]
        assert not early, "the Service switched before the preview was Ready and analysed"
        assert [e for e in events(env, namespace, name) if e["reason"] == "Switched"]
        # the previous revision is kept: undo switches straight back
        assert env.kubectl_json("get", "deployment", name, "-n", namespace)["status"].get(
            "readyReplicas") == 1
        started = time.monotonic()
        undone = kagent(env, "rollout", "undo", name, "-n", namespace)
        assert undone.returncode == 0, undone.stderr
        wait_for(lambda: client.answers and client.answers[-1][1].count("an answer"), timeout=30,
                 what="the Service back on revision 1")
        back_after = time.monotonic() - started
        wait_for(lambda: healthy_at(env, namespace, name, 1), timeout=60, what="revision 1 Healthy")
        print(f"undo switched back in {back_after:.1f}s")
        assert not client.dropped(), client.dropped()[:3]
        assert all(code == 200 for code, _ in client.answers)
    finally:
        client.stop()
        preview.stop()


def route_weights(env: Env, namespace: str, name: str) -> dict[str, int] | None:
    route = env.kubectl_json("get", "httproute", name, "-n", namespace)
    if route is None:
        return None
    return {b["name"]: b["weight"] for rule in route["spec"]["rules"] for b in rule["backendRefs"]}


def test_with_the_gateway_api_installed_the_weights_go_on_an_httproute(env: Env) -> None:
    """Last in the module: installing the Gateway API CRDs turns every canary into HTTPRoute
    weights (the CRDs go again at the end)."""
    from kagent.local.binaries import gateway_api_crd_files

    crds = gateway_api_crd_files()
    assert [p.name for p in crds if "httproutes" in p.name]
    namespace = env.plane.create_namespace(f"routed-{int(time.time())}")
    name = "routed"
    rollout = {"strategy": "Canary", "canary": {
        "gateway": {"name": "public"},
        "steps": [{"setWeight": 30}, {"pause": {}}, {"setWeight": 80}, {"pause": {}}]}}
    apply(env, agent_doc(namespace, name, "VERSION 1", rollout))
    agent = wait_for(lambda: healthy_at(env, namespace, name, 1), timeout=120,
                     what="revision 1 Healthy")
    assert agent["status"]["rollout"]["trafficRouter"] == "ReplicaShare"
    for crd in crds:
        env.plane.kubectl("apply", "--server-side", "-f", str(crd))
    try:
        # an Agent at rest notices the Gateway API being installed (within twice the recheck)
        assert wait_for(lambda: route_weights(env, namespace, name), timeout=120,
                        what="the HTTPRoute") == {f"{name}-stable": 100}
        wait_for(lambda: rollout_status(env, namespace, name)["trafficRouter"] == "HTTPRoute",
                 timeout=30, what="status.rollout.trafficRouter HTTPRoute")
        route = env.kubectl_json("get", "httproute", name, "-n", namespace)
        assert route["spec"]["parentRefs"][0]["name"] == "public"

        set_prompt(env, namespace, name, "VERSION 2")
        status = wait_for(lambda: phase(env, namespace, name, "Paused"), timeout=120,
                          what="paused at 30%")
        assert status["trafficRouter"] == "HTTPRoute"
        assert (status["stableWeight"], status["canaryWeight"]) == (70, 30)
        assert route_weights(env, namespace, name) == {f"{name}-stable": 70, f"{name}-canary": 30}
        # the stable revision keeps both its pods; the canary gets its share (one pod)
        assert (status["stableReplicas"], status["canaryReplicas"]) == (2, 1)
        selectors = {s: env.kubectl_json("get", "service", f"{name}-{s}", "-n", namespace)["spec"]
                     ["selector"]["kagent.dev/revision-hash"] for s in ("stable", "canary")}
        assert selectors == {"stable": status["stableHash"], "canary": status["canaryHash"]}

        assert kagent(env, "rollout", "promote", name, "-n", namespace).returncode == 0
        wait_for(lambda: route_weights(env, namespace, name) == {f"{name}-stable": 20,
                                                                 f"{name}-canary": 80},
                 timeout=120, what="80% on the HTTPRoute")
        assert kagent(env, "rollout", "promote", name, "-n", namespace).returncode == 0
        wait_for(lambda: healthy_at(env, namespace, name, 2), timeout=120, what="revision 2 promoted")
        wait_for(lambda: route_weights(env, namespace, name) == {f"{name}-stable": 100},
                 timeout=60, what="everything back on the stable Service")
        wait_for(lambda: env.kubectl_json("get", "service", f"{name}-canary", "-n", namespace)
                 is None, timeout=60, what="the canary Service removed")
    finally:
        for crd in crds:
            env.plane.kubectl("delete", "-f", str(crd), "--ignore-not-found", "--wait=false",
                              check=False)
