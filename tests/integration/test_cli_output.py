"""What a newcomer meets first, through the real CLI against a real control plane: tables that
never cut a name (at 80 columns, into a pipe, `-o wide`, `-o name`), yaml/json without
managedFields, and a run's life from the command line — re-attaching with `workflow watch`,
piped watch output, cancelling a finished run, describing it, hints that name the namespace."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from typing import Any

import pytest
import yaml

from tests.helpers import wait_for

pytestmark = pytest.mark.integration

LONG_RUN = "research-report-quarterly-review-x7k2p"  # wider than rich would keep at 80 columns
LONGEST_RUN = "research-report-" + "a" * 60  # wider than 80 columns on its own


def kagent(plane: Any, *args: str, columns: str | None = None,
           timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The CLI as a separate process; stdout and stderr are pipes, as in `kagent … | awk`."""
    env = {**os.environ, "KUBECONFIG": str(plane.kubeconfig)}
    env.pop("COLUMNS", None)
    if columns:
        env["COLUMNS"] = columns
    return subprocess.run([sys.executable, "-m", "kagent", *args], capture_output=True,
                          text=True, timeout=timeout, check=False, env=env)


def _setup(plane: Any, namespace: str) -> None:
    """A Workflow whose agent does not exist: its runs wait, Pending, until cancelled."""
    workflow = {
        "apiVersion": "kagent.dev/v1alpha1", "kind": "Workflow",
        "metadata": {"name": "research-report", "namespace": namespace},
        "spec": {"input": [{"name": "topic", "type": "string", "required": True}],
                 "steps": [{"name": "research", "agent": "nobody-runs-this",
                            "input": "Research {{ input.topic }}"}]},
    }
    plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(workflow))


def _start(plane: Any, namespace: str, name: str) -> subprocess.CompletedProcess[str]:
    started = kagent(plane, "workflow", "run", "research-report", "-n", namespace, "--name", name,
                     "-i", "topic=agents")
    assert started.returncode == 0, started.stderr
    return started


def test_tables_never_cut_names(kagent_controller: Any, namespace: str) -> None:
    plane = kagent_controller.plane
    _setup(plane, namespace)
    for name in (LONG_RUN, "short"):
        _start(plane, namespace, name)

    # An 80-column terminal: every name whole, the other columns gave way to fit.
    narrow = kagent(plane, "get", "runs", "-n", namespace, columns="80")
    assert narrow.returncode == 0, narrow.stderr
    lines = narrow.stdout.splitlines()
    assert lines[0].split()[:3] == ["NAME", "WORKFLOW", "PHASE"]
    assert [line.split()[0] for line in lines[1:]] == [LONG_RUN, "short"]
    assert all(len(line.rstrip()) <= 80 for line in lines), narrow.stdout
    # A name wider than the terminal on its own: printed whole, the row wider than 80.
    _start(plane, namespace, LONGEST_RUN)
    wider = kagent(plane, "get", "runs", "-n", namespace, columns="80")
    assert sorted(line.split()[0] for line in wider.stdout.splitlines()[1:]) == sorted(
        [LONG_RUN, LONGEST_RUN, "short"])
    everywhere = kagent(plane, "get", "runs", "-A", columns="80")
    rows = [line.split() for line in everywhere.stdout.splitlines() if namespace in line]
    assert sorted(row[1] for row in rows) == sorted([LONG_RUN, LONGEST_RUN, "short"])

    # Into a real pipe: `kagent get runs | awk '{print $1}'` prints the names, whole.
    command = " ".join(shlex.quote(part) for part in (sys.executable, "-m", "kagent", "get",
                                                      "runs", "-n", namespace))
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    env["KUBECONFIG"] = str(plane.kubeconfig)
    piped = subprocess.run(f"{command} | awk '{{print $1}}'", shell=True, capture_output=True,
                           text=True, timeout=120, check=False, env=env)
    assert piped.stdout.split()[0] == "NAME"
    assert sorted(piped.stdout.split()[1:]) == sorted([LONG_RUN, LONGEST_RUN, "short"])

    wide = kagent(plane, "get", "runs", LONG_RUN, "-n", namespace, "-o", "wide", columns="80")
    assert wide.returncode == 0, wide.stderr
    header, row = wide.stdout.splitlines()
    assert header.split()[-4:] == ["STARTED", "STEPS", "TOKENS", "MESSAGE"]
    assert row.split()[0] == LONG_RUN
    names = kagent(plane, "get", "runs", "-n", namespace, "-o", "name")
    assert sorted(names.stdout.split()) == sorted(
        f"workflowrun.kagent.dev/{n}" for n in (LONG_RUN, LONGEST_RUN, "short"))
    agents = kagent(plane, "get", "workflows", "-n", namespace, "-o", "wide", columns="200")
    assert agents.stdout.splitlines()[1].split()[-2:] == ["nobody-runs-this", "topic"]

    as_json = json.loads(kagent(plane, "get", "run", "short", "-n", namespace, "-o",
                                "json").stdout)
    assert as_json["metadata"]["name"] == "short"
    assert "managedFields" not in as_json["metadata"]
    listed = yaml.safe_load(kagent(plane, "get", "runs", "-n", namespace, "-o", "yaml").stdout)
    assert all("managedFields" not in item["metadata"] for item in listed["items"])
    shown = json.loads(kagent(plane, "get", "run", "short", "-n", namespace, "-o", "json",
                              "--show-managed-fields").stdout)
    assert shown["metadata"]["managedFields"]


def test_a_runs_life_from_the_command_line(kagent_controller: Any, namespace: str) -> None:
    plane = kagent_controller.plane
    _setup(plane, namespace)
    started = _start(plane, namespace, "waiting")
    # The hint re-attaches to this run; it does not start another one.
    assert f"kagent workflow watch waiting -n {namespace}" in started.stderr

    # Re-attach, into a pipe: the screen's last line ends before the verdict begins.
    watched = kagent(plane, "workflow", "watch", "waiting", "-n", namespace, "--timeout", "2")
    assert watched.returncode == 1
    assert watched.stdout == ""
    assert "run waiting" in watched.stderr and "research" in watched.stderr
    assert "\nerror: run waiting is still Pending after 2s" in watched.stderr
    assert f"kagent workflow watch waiting -n {namespace}" in watched.stderr
    # `run --watch` into a pipe: the same.
    again = kagent(plane, "workflow", "run", "research-report", "-n", namespace, "--name",
                   "watched", "-i", "topic=x", "--watch", "--timeout", "2")
    assert again.returncode == 1
    assert again.stdout == "workflowrun/watched created\n"
    assert "\nerror: run watched is still Pending" in again.stderr

    cancelled = kagent(plane, "workflow", "cancel", "waiting", "-n", namespace)
    assert cancelled.returncode == 0, cancelled.stderr
    wait_for(lambda: json.loads(kagent(plane, "get", "run", "waiting", "-n", namespace, "-o",
                                       "json").stdout).get("status", {}).get("phase") == "Failed",
             what="the cancelled run to end")
    twice = kagent(plane, "workflow", "cancel", "waiting", "-n", namespace)
    assert twice.returncode == 1
    assert twice.stdout == ""
    assert "already finished: Failed (Cancelled)" in twice.stderr
    assert f"kagent describe run waiting -n {namespace}" in twice.stderr

    described = kagent(plane, "describe", "run", "waiting", "-n", namespace)
    assert described.returncode == 0, described.stderr
    assert "none started yet" not in described.stdout
    assert "controller running" not in described.stdout
    assert "ended Failed (Cancelled) before any step started" in described.stdout

    finished = kagent(plane, "workflow", "watch", "waiting", "-n", namespace)
    assert finished.returncode == 1
    assert "run waiting failed: Cancelled" in finished.stderr

    # Hints that name a command name the namespace too.
    bad = kagent(plane, "workflow", "run", "research-report", "-n", namespace, "-i", "colour=red")
    assert bad.returncode == 2
    assert f"kagent describe workflow research-report -n {namespace}" in bad.stderr
    missing = kagent(plane, "workflow", "watch", "no-such-run", "-n", namespace)
    assert missing.returncode == 3
    assert f"kagent get workflowruns -n {namespace}" in missing.stderr
    agent = kagent(plane, "describe", "agent", "nope", "-n", namespace)
    assert agent.returncode == 3 and f"kagent get agents -n {namespace}" in agent.stderr
