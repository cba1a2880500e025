"""Reports on stdout, diagnostics on stderr: the commands that need no cluster, run as a user
runs them (a separate process, the two streams captured apart). Those that need one are checked
in tests/integration/test_cli_*.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from kagent.local.process import Process
from kagent.local.services import free_port


def kagent(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kagent", *args], capture_output=True, text=True,
                          timeout=120, check=False, **kwargs)  # type: ignore[call-overload]


def test_version_is_a_report() -> None:
    from importlib.metadata import version

    result = kagent("version")
    assert result.returncode == 0
    assert (result.stdout, result.stderr) == (f"kagent {version('kagent')}\n", "")


def test_generators_report_what_they_wrote(tmp_path: Path) -> None:
    crds = kagent("crds", "--output", str(tmp_path / "crds"))
    assert crds.returncode == 0 and crds.stderr == ""
    written = [line.removeprefix("wrote ") for line in crds.stdout.splitlines()]
    assert sorted(Path(p).name for p in written) == sorted(
        p.name for p in (tmp_path / "crds").iterdir())
    docs = kagent("docs", "--output", str(tmp_path / "docs"))
    assert docs.returncode == 0 and docs.stderr == ""
    assert docs.stdout == f"wrote {tmp_path / 'docs' / 'reference' / 'api.md'}\n"


def test_errors_go_to_stderr_only(tmp_path: Path) -> None:
    unknown = kagent("get", "gadgets")
    assert unknown.returncode == 2 and unknown.stdout == ""
    assert "unknown kind 'gadgets'" in unknown.stderr
    missing = kagent("run", "-f", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2 and missing.stdout == "" and "does not exist" in missing.stderr
    bad_script = tmp_path / "bad.yaml"
    bad_script.write_text("rules: [{contains: 1, nonsense: true}]\n")
    mock = kagent("mock-llm", "--script", str(bad_script))
    assert mock.returncode == 2 and mock.stdout == "" and mock.stderr


def test_the_mock_servers_log_is_on_stderr(tmp_path: Path) -> None:
    """A server has no report: its access log is a diagnostic too (uvicorn puts it on stdout)."""
    port = free_port()
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        server = subprocess.Popen([sys.executable, "-m", "kagent", "mock-llm", "--port", str(port)],
                                  stdout=stdout, stderr=stderr, start_new_session=True,
                                  env={**os.environ, "PYTHONUNBUFFERED": "1"})
    supervised = Process.attach(server.pid, name="kagent mock-llm")
    try:
        supervised.wait_ready(f"http://127.0.0.1:{port}/_mock/health", timeout=60)
        httpx.get(f"http://127.0.0.1:{port}/_mock/calls", timeout=10, trust_env=False)
    finally:
        supervised.stop()
        server.wait(10)
    assert out.read_text() == ""
    assert "GET /_mock/calls" in err.read_text()
