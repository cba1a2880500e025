"""The dashboard's pure parts: projections, the workflow graph, step inputs, run input checks,
agent metrics, chat events, sessions, and how live changes are coalesced."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import pytest

from kagent.dashboard import views
from kagent.dashboard.auth import Sessions
from kagent.dashboard.chat import (
    TOOL_CALL_METADATA,
    TOOL_RESULT_METADATA,
    chat_events,
    check_message,
)
from kagent.dashboard.forms import InputError, check_run_input, check_run_name
from kagent.dashboard.graph import INPUT_NODE, OUTPUT_NODE, workflow_graph
from kagent.dashboard.live import Feed
from kagent.dashboard.metrics import Sample, agent_health, parse_sample, quantile
from kagent.dashboard.steps import step_detail, step_input
from tests.helpers import EXAMPLES, documents


def example_workflow(name: str, folder: str | None = None) -> dict[str, Any]:
    docs = documents(EXAMPLES / (folder or name) / "workflow.yaml")
    return next(d for d in docs if d["kind"] == "Workflow" and d["metadata"]["name"] == name)


# --- projections -----------------------------------------------------------------------------


def test_an_agent_that_is_not_ready_says_why_naming_the_condition_to_act_on() -> None:
    agent = {"metadata": {"name": "support"}, "spec": {"model": {"provider": "openai",
                                                                  "name": "gpt-4o"}},
             "status": {"replicas": 1, "readyReplicas": 0, "conditions": [
                 {"type": "Accepted", "status": "False", "reason": "ToolNotFound",
                  "message": 'Tool "create-ticket" does not exist'},
                 {"type": "Ready", "status": "False", "reason": "NotAccepted", "message": "x"}]}}
    row = views.agent_row(agent)
    assert (row["ready"], row["reason"], row["message"]) == (
        "False", "ToolNotFound", 'Tool "create-ticket" does not exist')
    assert row["model"] == "openai/gpt-4o" and (row["readyReplicas"], row["replicas"]) == (0, 1)
    fresh = views.agent_row({"metadata": {"name": "new"}, "spec": {}})
    assert fresh["ready"] == "Unknown" and "not reported" in fresh["message"]
    ready = views.agent_row({"metadata": {"name": "a"}, "spec": {}, "status": {"conditions": [
        {"type": "Accepted", "status": "True"}, {"type": "Ready", "status": "True"}]}})
    assert ready["ready"] == "True" and ready["reason"] is None


def test_a_run_row_is_small_and_a_run_detail_has_the_steps() -> None:
    run = {"metadata": {"name": "r1", "creationTimestamp": "2026-01-01T00:00:00Z"},
           "spec": {"workflowRef": {"name": "wf"}, "input": {"topic": "x"}, "cancel": True},
           "status": {"phase": "Running", "steps": [{"name": "a", "phase": "Running",
                                                     "output": "x" * 4096}],
                      "usage": {"inputTokens": 10, "outputTokens": 5}}}
    row = views.run_row(run)
    assert row["tokens"] == 15 and row["cancelling"] and "steps" not in row
    assert row["workflow"] == "wf" and row["phase"] == "Running"
    detail = views.run_detail(run)
    assert detail["steps"][0]["name"] == "a" and detail["input"] == {"topic": "x"}
    assert views.run_row({"metadata": {"name": "new"}, "spec": {}})["phase"] == "Pending"


def test_children_get_a_state_a_person_can_read() -> None:
    stuck = views.child_row({"kind": "Deployment", "metadata": {"name": "a"},
                             "spec": {"replicas": 2}, "status": {"conditions": [
                                 {"type": "Progressing", "status": "False",
                                  "reason": "ProgressDeadlineExceeded", "message": "too slow"}]}})
    assert (stuck["name"], stuck["state"], stuck["detail"]) == (
        "Deployment/a", "Failed", "too slow")
    rolling = views.child_row({"kind": "Deployment", "metadata": {"name": "a"},
                               "spec": {"replicas": 2}, "status": {"readyReplicas": 1,
                                                                   "updatedReplicas": 2}})
    assert rolling["state"] == "Progressing" and rolling["detail"].startswith("1/2 ready")
    pod = views.child_row({"kind": "Pod", "metadata": {"name": "a-1"}, "status": {
        "phase": "Pending", "containerStatuses": [{"state": {"waiting": {
            "reason": "ImagePullBackOff"}}}]}})
    assert (pod["state"], pod["detail"]) == ("Pending", "ImagePullBackOff")


# --- the workflow graph ----------------------------------------------------------------------


def test_research_report_graph_fans_out_to_the_two_analysts_and_joins_at_the_writer() -> None:
    graph = workflow_graph(example_workflow("research-report")["spec"])
    edges = {(e["source"], e["target"]) for e in graph["edges"]}
    assert edges == {(INPUT_NODE, "research"), ("research", "analyze-market"),
                     ("research", "analyze-tech"), ("analyze-market", "write"),
                     ("analyze-tech", "write"), ("write", OUTPUT_NODE)}
    nodes = {n["id"]: n for n in graph["nodes"]}
    assert nodes["analyze-market"]["group"] == nodes["analyze-tech"]["group"] is not None
    assert nodes["research"]["group"] is None and nodes["research"]["agent"] == "researcher"
    assert {"kind": "fan-out", "steps": ["analyze-market", "analyze-tech"]} in graph["patterns"]
    assert {"kind": "sequence", "steps": ["research", "analyze-market ∥ analyze-tech", "write"]} \
        in graph["patterns"]
    assert nodes[OUTPUT_NODE]["outputs"] == ["report"] and nodes[INPUT_NODE]["inputs"] == ["topic"]


def test_loops_routes_and_dags_are_drawn_as_such() -> None:
    loop = workflow_graph(example_workflow("review-revise")["spec"])
    back = [e for e in loop["edges"] if e["kind"] == "loop"]
    assert [(e["source"], e["target"]) for e in back] == [("review", "draft")]
    assert back[0]["label"] == 'until steps.review.output.startsWith("APPROVED") (at most 3×)'
    routed = workflow_graph(example_workflow("inquiry-routing")["spec"])
    branches = {e["target"]: e["label"] for e in routed["edges"] if e["kind"] == "route"}
    assert set(branches) == {"answer/billing-agent", "answer/tech-support-agent",
                             "answer/general-agent"}
    assert all(label == "inquiry-classifier picks" for label in branches.values())
    rules = workflow_graph(example_workflow("inquiry-routing-rules", "inquiry-routing")["spec"])
    labels = {e["target"]: e["label"] for e in rules["edges"] if e["kind"] == "route"}
    assert labels["answer/general-agent"] == "otherwise"
    dag = workflow_graph({"steps": [
        {"name": "a", "agent": "x"}, {"name": "b", "agent": "x", "dependsOn": []},
        {"name": "c", "agent": "x", "dependsOn": ["a", "b"]}]})
    kinds = {(e["source"], e["target"]): e["kind"] for e in dag["edges"]}
    assert kinds[("a", "c")] == kinds[("b", "c")] == "dependsOn"
    assert kinds[(INPUT_NODE, "a")] == kinds[(INPUT_NODE, "b")] == "flow"
    assert any(p["kind"] == "dag" for p in dag["patterns"])


def test_an_invalid_workflow_gives_an_error_instead_of_a_graph() -> None:
    cycle = workflow_graph({"steps": [{"name": "a", "agent": "x", "dependsOn": ["b"]},
                                      {"name": "b", "agent": "x", "dependsOn": ["a"]}]})
    assert cycle["nodes"] == [] and "cycle" in cycle["error"]
    broken = workflow_graph({"steps": [{"name": "a", "agnt": "x"}]})
    assert broken["nodes"] == [] and broken["error"].startswith("spec.steps.0.agnt")


# --- steps -----------------------------------------------------------------------------------


RUN = {"metadata": {"name": "r"}, "spec": {"workflowRef": {"name": "research-report"},
                                          "input": {"topic": "tides"}},
       "status": {"steps": [
           {"name": "research", "phase": "Succeeded", "startedAt": "t", "output": "FACTS",
            "usage": {"inputTokens": 3, "outputTokens": 4}},
           {"name": "analyze-market", "phase": "Failed", "startedAt": "t", "error": "boom",
            "output": "cut", "outputRef": {"configMap": "r-outputs", "key": "analyze-market"}},
           {"name": "analyze-tech", "phase": "Running", "startedAt": "t"},
           {"name": "write", "phase": "Pending"}]}}


def test_a_step_input_is_the_message_the_engine_sent_rendered_from_the_recorded_outputs() -> None:
    spec = example_workflow("research-report")["spec"]
    assert step_input(spec, RUN, "research", {})["text"] == (
        "Research this topic and list the key facts: tides")
    tech = step_input(spec, RUN, "analyze-tech", {})
    assert tech["text"] == "Analyse the technical angle of these facts: FACTS"
    pending = step_input(spec, RUN, "write", {})
    assert "text" not in pending and "not sent yet" in pending["note"]
    assert "{{ steps.analyze-market.output }}" in pending["template"]
    assert "no step" in step_input(spec, RUN, "nope", {})["error"]


def test_a_step_detail_shows_the_full_output_kept_aside_and_the_error() -> None:
    spec = example_workflow("research-report")["spec"]
    full = step_detail(spec, RUN, "analyze-market", {"analyze-market": "the whole long text"})
    assert full is not None
    assert full["output"] == "the whole long text" and full["error"] == "boom"
    assert not full["outputCut"]
    cut = step_detail(spec, RUN, "analyze-market", {})
    assert cut is not None and cut["output"] == "cut" and cut["outputCut"]
    research = step_detail(spec, RUN, "research", {})
    assert research is not None and research["usage"]["outputTokens"] == 4
    assert step_detail(spec, RUN, "nope", {}) is None


# --- run input -------------------------------------------------------------------------------


PARAMETERS = [{"name": "topic", "type": "string", "required": True},
              {"name": "depth", "type": "integer"},
              {"name": "tone", "type": "string", "enum": ["plain", "formal"]}]


def test_run_input_is_checked_against_the_workflow_parameters_naming_each_field() -> None:
    assert check_run_input(PARAMETERS, {"topic": "x", "depth": 3, "tone": ""}) == {
        "topic": "x", "depth": 3}
    with pytest.raises(InputError) as caught:
        check_run_input(PARAMETERS, {"depth": "deep", "tone": "loud", "colour": "red"})
    assert set(caught.value.errors) == {"topic", "depth", "tone", "colour"}
    assert caught.value.errors["topic"] == "required"
    assert "no input named" in caught.value.errors["colour"]
    with pytest.raises(InputError):
        check_run_input(PARAMETERS, {"topic": ""})
    with pytest.raises(InputError):
        check_run_input(PARAMETERS, ["topic"])
    assert check_run_name("my-run") == "my-run" and check_run_name("") is None
    with pytest.raises(InputError):
        check_run_name("Bad_Name")


# --- metrics ---------------------------------------------------------------------------------


def scrape(requests: int, errors: int, tokens: int, slow: int = 0) -> str:
    fast = requests - slow
    return f"""# TYPE agent_requests_total counter
agent_requests_total{{agent="a",protocol="a2a",outcome="success"}} {requests - errors}
agent_requests_total{{agent="a",protocol="a2a",outcome="error"}} {errors}
# TYPE agent_request_duration_seconds histogram
agent_request_duration_seconds_bucket{{agent="a",protocol="a2a",le="0.5"}} {fast}
agent_request_duration_seconds_bucket{{agent="a",protocol="a2a",le="1.0"}} {fast}
agent_request_duration_seconds_bucket{{agent="a",protocol="a2a",le="10.0"}} {requests}
agent_request_duration_seconds_bucket{{agent="a",protocol="a2a",le="+Inf"}} {requests}
agent_request_duration_seconds_count{{agent="a",protocol="a2a"}} {requests}
agent_request_duration_seconds_sum{{agent="a",protocol="a2a"}} 1.0
# TYPE agent_llm_tokens_total counter
agent_llm_tokens_total{{agent="a",model="openai/x",direction="input"}} {tokens}
agent_llm_tokens_total{{agent="a",model="openai/x",direction="output"}} {tokens}
"""


def test_agent_health_from_two_scrapes_of_each_pod() -> None:
    first = [parse_sample(scrape(100, 0, 10), 0.0), parse_sample(scrape(50, 0, 5), 0.0)]
    second = [parse_sample(scrape(150, 10, 20, slow=5), 5.0), parse_sample(scrape(60, 0, 5), 5.0)]
    health = agent_health(second, first)
    assert health["rps"] == pytest.approx((50 + 10) / 5)
    assert health["errorRate"] == pytest.approx(10 / 210, abs=1e-4)
    assert health["tokens"] == 2 * 20 + 2 * 5 and health["requests"] == 210
    assert 0.5 < health["p99"] <= 10.0  # 5 of 210 requests were slow: the p99 is in their bucket
    once = agent_health(first, [None, None])
    assert once["rps"] is None and once["p99"] <= 0.5
    restarted = agent_health([parse_sample(scrape(4, 0, 0), 10.0)],
                             [parse_sample(scrape(150, 0, 0), 5.0)])
    assert restarted["rps"] == pytest.approx(4 / 5)  # counters reset: count from zero
    assert quantile({}, 0.99) is None and agent_health([], [])["errorRate"] is None
    assert parse_sample("", 1.0) == Sample(1.0)


# --- chat ------------------------------------------------------------------------------------


def test_a2a_stream_responses_become_chat_panel_events() -> None:
    from a2a.types import (
        Artifact,
        Message,
        Part,
        Role,
        StreamResponse,
        Task,
        TaskArtifactUpdateEvent,
        TaskState,
        TaskStatus,
        TaskStatusUpdateEvent,
    )
    from google.protobuf.struct_pb2 import Struct

    task = StreamResponse(task=Task(id="t1", context_id="c1", status=TaskStatus(
        state=TaskState.TASK_STATE_SUBMITTED)))
    assert chat_events(task)[0] == {"type": "task", "taskId": "t1", "contextId": "c1"}
    piece = StreamResponse(artifact_update=TaskArtifactUpdateEvent(
        task_id="t1", artifact=Artifact(artifact_id="answer", parts=[Part(text="Hel")]),
        append=True))
    assert chat_events(piece) == [{"type": "text", "text": "Hel", "replace": False}]

    def status(state: Any, text: str = "", metadata: dict[str, Any] | None = None) -> Any:
        meta = Struct()
        meta.update(metadata or {})
        message = Message(role=Role.ROLE_AGENT, message_id="m", parts=[Part(text=text)],
                          metadata=meta)
        return StreamResponse(status_update=TaskStatusUpdateEvent(
            task_id="t1", context_id="c1", status=TaskStatus(state=state, message=message)))

    call = chat_events(status(TaskState.TASK_STATE_WORKING, metadata={
        TOOL_CALL_METADATA: {"id": "1", "name": "search", "arguments": {"q": "x"}}}))
    assert call == [{"type": "tool", "phase": "call", "id": "1", "name": "search",
                     "arguments": {"q": "x"}}]
    result = chat_events(status(TaskState.TASK_STATE_WORKING, metadata={
        TOOL_RESULT_METADATA: {"id": "1", "name": "search", "outcome": "success"}}))
    assert result[0]["phase"] == "result" and result[0]["outcome"] == "success"
    assert chat_events(status(TaskState.TASK_STATE_WORKING)) == []
    question = chat_events(status(TaskState.TASK_STATE_INPUT_REQUIRED, "Which order?"))
    assert question == [{"type": "question", "text": "Which order?", "taskId": "t1"}]
    done = chat_events(status(TaskState.TASK_STATE_COMPLETED, "Hello", {
        "kagent.dev/usage": {"inputTokens": 3, "outputTokens": 2}}))
    assert done == [{"type": "done", "text": "Hello",
                     "usage": {"inputTokens": 3, "outputTokens": 2}}]
    failed = chat_events(status(TaskState.TASK_STATE_FAILED, "provider down",
                                {"kagent.error": "provider_unavailable"}))
    assert failed == [{"type": "error", "message": "provider down",
                       "code": "provider_unavailable"}]


def test_a_chat_message_is_bounded_and_named_when_wrong() -> None:
    assert check_message({"message": "hi", "contextId": "c"}) == ("hi", "c", None)
    for body, field in (({"message": " "}, "message"), ({"message": "x" * 40_000}, "message"),
                        ({"message": "hi", "taskId": 3}, "taskId"), ([], "object")):
        with pytest.raises(ValueError, match=field):
            check_message(body)


# --- sessions and live changes ---------------------------------------------------------------


def test_sessions_are_random_bounded_and_expire() -> None:
    from kagent.dashboard.access import kubeconfig_viewer

    kubeconfig = Path(__file__).parent / "dashboard_kubeconfig.yaml"
    viewer = kubeconfig_viewer(kubeconfig)
    assert viewer.user == "alice" and viewer.token == "alice-token"
    sessions = Sessions(limit=2, seconds=60)
    first, second, third = (sessions.create(viewer) for _ in range(3))
    assert len({first, second, third}) == 3 and len(first) >= 40
    assert sessions.get(first) is None and sessions.get(third) is viewer  # oldest evicted
    expired = Sessions(seconds=-1)
    assert expired.get(expired.create(viewer)) is None
    assert sessions.get(None) is None and sessions.get("guess") is None


async def test_a_burst_of_changes_reaches_the_browser_coalesced() -> None:
    feed = Feed(informers=None, namespace="ns", sources=[])  # type: ignore[arg-type]
    feed.reset("runs", {"a": {"name": "a", "phase": "Pending"}})
    for phase in ("Running", "Succeeded"):
        feed.upsert("runs", "a", {"name": "a", "phase": phase})
    for index in range(1000):
        feed.upsert("runs", f"r{index}", {"name": f"r{index}", "phase": "Pending"})
    feed.delete("runs", "r5")
    feed.upsert("runs", "a", {"name": "a", "phase": "Succeeded"})  # unchanged: not sent again
    batches = feed.batches()
    ops = await asyncio.wait_for(batches.__anext__(), 1)
    await batches.aclose()
    assert ops[0]["op"] == "reset"
    upserts = [o for o in ops if o["op"] == "upsert"]
    assert len(upserts) == 1 + 999  # one for "a" (its last state), none for the deleted r5
    assert next(o for o in upserts if o["item"]["name"] == "a")["item"]["phase"] == "Succeeded"
    assert [o["name"] for o in ops if o["op"] == "delete"] == ["r5"]
    assert len(feed.state["runs"]) == 1000
    feed.problem("agents", "forbidden", "agents is forbidden")
    feed.reset("pods", {"p": {"name": "p"}}, send=False)
    batches = feed.batches()
    ops = await asyncio.wait_for(batches.__anext__(), 1)
    await batches.aclose()
    assert ops == [{"op": "forbidden", "collection": "agents", "message": "agents is forbidden"}]
    assert feed.state["pods"] == {"p": {"name": "p"}}


def test_in_a_cluster_the_dashboard_knows_the_api_server_but_holds_no_credentials(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lightkube.core.exceptions import ConfigError

    from kagent.dashboard.access import CA_FILE_ENV, cluster_only, token_viewer

    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ConfigError, match="--kubeconfig"):
        cluster_only(None)
    (tmp_path / "ca.crt").write_text("not read here")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    monkeypatch.setenv(CA_FILE_ENV, str(tmp_path / "ca.crt"))
    cluster = cluster_only(None)
    assert cluster.cluster.server == "https://10.96.0.1:443" and cluster.user is None
    assert cluster.cluster.certificate_auth == str(tmp_path / "ca.crt")
    viewer = token_viewer(cluster, "bob-token", "bob")
    assert viewer.config.user is not None and viewer.config.user.token == "bob-token"
    assert viewer.token == "bob-token" and viewer.config.cluster.server == cluster.cluster.server
    from_kubeconfig = cluster_only(Path(__file__).parent / "dashboard_kubeconfig.yaml")
    assert from_kubeconfig.user is None  # the kubeconfig's own user is never used in token mode
    assert from_kubeconfig.cluster.server == "https://127.0.0.1:6443"


def test_kagent_dashboard_refuses_to_share_a_kubeconfig_beyond_loopback() -> None:
    from typer.testing import CliRunner

    from kagent.cli.main import app

    assert CliRunner().invoke(app, ["dashboard", "--help"]).exit_code == 0
    wide = CliRunner().invoke(app, ["dashboard", "--host", "0.0.0.0"])
    assert wide.exit_code == 2 and "loopback" in wide.output
    assert CliRunner().invoke(app, ["dashboard", "--auth-mode", "oidc"]).exit_code == 2


def test_pages_that_show_the_same_objects_share_one_informer() -> None:
    from kagent.dashboard.app import RUN_COLUMNS, agent_children, kagent_resource, pods_source
    from kagent.dashboard.live import Informers, Source

    informers = Informers(lambda: None)  # type: ignore[arg-type,return-value]
    assert informers._key("ns", pods_source()) == informers._key("ns", pods_source())
    assert informers._key("ns", pods_source()) != informers._key("other", pods_source())
    mine, theirs = agent_children("a"), agent_children("b")
    assert informers._key("ns", mine[0]) == informers._key("ns", agent_children("a")[0])
    assert informers._key("ns", mine[0]) != informers._key("ns", theirs[0])
    runs = Source("runs", kagent_resource("WorkflowRun"), "WorkflowRun", views.run_row,
                  table=RUN_COLUMNS)
    assert informers._key("ns", runs) == informers._key("ns", dataclasses.replace(runs))
    assert informers._key("ns", runs) != informers._key("ns", dataclasses.replace(runs, table=None))


def test_a_step_input_shows_the_input_defaults_the_engine_used() -> None:
    from kagent.dashboard.steps import step_input

    spec = {"input": [{"name": "city"}, {"name": "days", "type": "integer", "default": 2}],
            "steps": [{"name": "plan", "agent": "a", "input": "{{ input.days }} days in {{ input.city }}"}]}
    run = {"spec": {"workflowRef": {"name": "trip"}, "input": {"city": "Oslo"}},
           "status": {"steps": [{"name": "plan", "phase": "Running", "startedAt": "2026-01-01T00:00:00Z"}]}}
    assert step_input(spec, run, "plan", {})["text"] == "2 days in Oslo"


def test_every_name_in_a_dashboard_path_is_checked_before_any_handler_runs() -> None:
    from starlette.requests import Request

    from kagent.dashboard.app import _invalid_path_name

    def request(**params: str) -> Request:
        return Request({"type": "http", "path_params": params, "headers": []})

    assert _invalid_path_name(request(namespace="team-a", name="writer", step="write")) is None
    assert _invalid_path_name(request(namespace="Team_A", name="writer")) == "namespace"
    assert _invalid_path_name(request(namespace="team-a", name="a" * 254)) == "name"
    assert _invalid_path_name(request(namespace="team-a", name="r", step="../secrets")) == "step"
