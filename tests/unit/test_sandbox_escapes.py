"""Each known way out of the code sandbox, tried for real by a non-root agent (uid 65532, as in
the agent pod: see sandbox_agent.py) against itself, and shown stopped.

Most escapes are tried three ways: with every layer (strict, as the code tool runs), with only
the layer named as the one that stops it (best-effort with the others turned off: each layer
holds on its own), and — where that shows the test can fail — with no layer at all, where the
escape must succeed.
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kagent.runtime.tools.sandbox import STRICT_LAYERS

REPO = Path(__file__).resolve().parents[2]
AGENT_UID = 65532
AGENT_SECRET = "sk-agent-secret-" + secrets.token_hex(8)
"""An API key in the agent's process environment, as the agent pod has its model keys."""

NONE = {"namespaces": False, "mount": False, "landlock": False, "seccomp": False, "guard": False}
ONLY_SECCOMP = {**NONE, "seccomp": True}
ONLY_LANDLOCK = {**NONE, "landlock": True}
ONLY_NAMESPACES = {**NONE, "namespaces": True}
ONLY_MOUNT = {**NONE, "namespaces": True, "mount": True}
"""An unprivileged process gets a mount namespace only inside a user namespace."""
KERNEL_LAYERS = {"guard": False}
"""Everything but the audit hook: what stops code that got past the hook."""


@pytest.fixture(scope="module")
def module_base() -> Iterator[Path]:
    """The sandbox's base directory (the pod's /tmp), writable by the agent user."""
    path = Path(tempfile.mkdtemp(prefix="kagent-sandbox-base-"))
    path.chmod(0o755)
    if os.getuid() == 0:
        os.chown(path, AGENT_UID, AGENT_UID)
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


class AgentProcess:
    """A running sandbox_agent.py: one non-root process serving sandbox runs."""

    def __init__(self, base: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("sandbox_agent.py"))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO),
                 "OPENAI_API_KEY": AGENT_SECRET, "KAGENT_SANDBOX_DIR": str(base)})

    def serve(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        # The agent must survive whatever the program did, and answer.
        assert line, f"the agent process died (exit {self.process.wait(10)})"
        report = json.loads(line)
        if "skip" in report:
            pytest.skip(report["skip"])
        return report

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Agent:
    """The non-root agent of these tests and its sandbox's base directory."""

    def __init__(self, process: AgentProcess, base: Path) -> None:
        self.process = process
        self.base = base

    def run(self, code: str, *, layers: dict[str, bool] | None = None,
            limits: dict[str, Any] | None = None, env: dict[str, str] | None = None,
            fresh: bool = False) -> dict[str, Any]:
        """Run ``code`` in the agent's sandbox: strict, unless some layers are turned off (then
        best-effort). A fresh agent process serves programs that may leave it damaged (the
        controls that show an escape working)."""
        request = {"code": code, "isolation": "best-effort" if layers else "strict",
                   "layers": layers or {}, "limits": limits or {}, "env": env or {}}
        if not fresh:
            return self.process.serve(request)
        process = AgentProcess(self.base)
        try:
            return process.serve(request)
        finally:
            process.close()

    def run_strict(self, code: str, **kwargs: Any) -> dict[str, Any]:
        report = self.run(code, **kwargs)
        assert "refused" not in report, f"the sandbox refused: {report['refused']}"
        assert set(report["layers"]) == set(STRICT_LAYERS)
        return report


@pytest.fixture(scope="module")
def agent_process(module_base: Path) -> Iterator[AgentProcess]:
    process = AgentProcess(module_base)
    yield process
    process.close()


@pytest.fixture
def agent(agent_process: AgentProcess, module_base: Path) -> Agent:
    """The shared agent, with its base directory emptied (tests check it for leftovers)."""
    for leftover in module_base.iterdir():
        subprocess.run(["rm", "-rf", str(leftover)], check=False)
    return Agent(agent_process, module_base)


def leftover_processes(marker: str) -> list[int]:
    """Processes whose environment carries ``marker`` (every process of one run does)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_the_agent_runs_as_non_root_and_the_program_gets_every_layer(agent: Agent) -> None:
    report = agent.run_strict("import os\nprint(os.getuid(), os.getpid(), os.getcwd())")
    assert report["agent_uid"] != 0
    assert report["stdout"] == "1000 2 /tmp\n"
    assert os.listdir(agent.base) == []  # a strict run writes nothing on the host


REIMPORTED_FORK_EXEC = """
import os, sys
sys.modules.pop('_posixsubprocess', None)
import _posixsubprocess
out_r, out_w = os.pipe()
err_r, err_w = os.pipe()
_posixsubprocess.fork_exec(
    [b'/bin/echo', b'ESCAPED'], [b'/bin/echo'], True, (err_w,), None, None,
    -1, -1, -1, out_w, -1, -1, err_r, err_w, True, True, -1, None, None, None, -1, None, False)
os.close(out_w)
print(os.read(out_r, 100).decode())
"""


@pytest.mark.parametrize("layers", [
    pytest.param({}, id="strict"),
    pytest.param(ONLY_SECCOMP, id="seccomp-alone"),
    pytest.param(ONLY_LANDLOCK, id="landlock-alone"),
])
def test_a_reimported_fork_exec_starts_nothing(agent: Agent, layers: dict[str, bool]) -> None:
    """Re-importing _posixsubprocess undoes the guard's patch; seccomp refuses the fork, and
    Landlock (no execute right anywhere) the exec."""
    report = agent.run(REIMPORTED_FORK_EXEC, layers=layers)
    assert "ESCAPED" not in report["stdout"]
    if layers != ONLY_LANDLOCK:  # (there the fork works and the exec fails in the child)
        assert "PermissionError: [Errno 1] Operation not permitted" in report["stderr"]


@pytest.mark.skipif(sys.version_info[:2] != (3, 11), reason="fork_exec's arguments as of 3.11")
def test_a_reimported_fork_exec_escapes_without_the_layers(agent: Agent) -> None:
    report = agent.run(REIMPORTED_FORK_EXEC, layers=NONE, fresh=True)
    assert "ESCAPED" in report["stdout"]


SESSION_CHILD = """
import os, time
if os.fork() == 0:
    os.setsid()
    while True:
        time.sleep(1)
print('forked', flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("layers,escapes", [
    pytest.param({"guard": False, "seccomp": False}, False, id="pid-namespace"),
    pytest.param(NONE, True, id="no-layers"),
])
def test_a_child_in_its_own_session_dies_at_the_wall_clock(agent: Agent, layers: dict[str, bool],
                                                           escapes: bool) -> None:
    """With forks allowed (guard and seccomp off), a child that leaves the process group is
    still in the PID namespace, and killing the namespace kills it."""
    marker = "run-" + secrets.token_hex(8)
    report = agent.run(SESSION_CHILD, layers=layers,
                       limits={"wall_seconds": 2}, env={"KAGENT_TEST_RUN": marker})
    assert report["stdout"] == "forked\n"
    assert report["limit"] == "wall-clock limit 2s exceeded"
    survivors = leftover_processes(marker)
    for pid in survivors:
        os.kill(pid, signal.SIGKILL)
    assert bool(survivors) == escapes


def test_past_the_guard_a_fork_is_refused_by_the_kernel(agent: Agent) -> None:
    report = agent.run("import os\nos.fork()\nprint('FORKED')",
                       layers=KERNEL_LAYERS)
    assert report["missing"] == {"guard": "disabled"}
    assert "FORKED" not in report["stdout"]
    assert "PermissionError: [Errno 1] Operation not permitted" in report["stderr"]


FORK_BOMB = """
import os
children = 0
try:
    while True:
        os.fork()
        children += 1
finally:
    print('forks', children, flush=True)
"""


@pytest.mark.parametrize("layers,stopped_by", [
    pytest.param({}, "sandbox: os.fork is not allowed", id="strict"),
    pytest.param(KERNEL_LAYERS, "Operation not permitted", id="seccomp"),
    pytest.param({"guard": False, "seccomp": False}, "Resource temporarily unavailable",
                 id="thread-limit-in-user-namespace"),
])
def test_a_fork_bomb_is_stopped(agent: Agent, layers: dict[str, bool], stopped_by: str) -> None:
    marker = "run-" + secrets.token_hex(8)
    report = agent.run(FORK_BOMB, layers=layers,
                       limits={"wall_seconds": 10}, env={"KAGENT_TEST_RUN": marker})
    assert stopped_by in report["stderr"]
    assert report["limit"] is None  # stopped by its layer, not by the clock
    assert leftover_processes(marker) == []


def test_a_thread_bomb_is_stopped_by_the_thread_limit(agent: Agent) -> None:
    report = agent.run_strict(
        "import threading, time\nstarted = 0\ntry:\n"
        "    while True:\n"
        "        threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n"
        "        started += 1\n"
        "finally:\n    print('threads', started, flush=True)\n",
        limits={"threads": 16, "wall_seconds": 20})
    assert "can't start new thread" in report["stderr"]
    assert int(report["stdout"].split()[1]) < 16


DIR_FD_READ = """
import os
fd = os.open('/usr/lib', os.O_RDONLY | os.O_DIRECTORY)
print(os.read(os.open('../..' + SECRET_FILE, os.O_RDONLY, dir_fd=fd), 100).decode())
"""


@pytest.fixture
def outside_secret() -> Iterator[Path]:
    """A world-readable file outside the sandbox: only the sandbox's layers keep it unread."""
    directory = Path(tempfile.mkdtemp(prefix="kagent-outside-"))
    directory.chmod(0o755)
    secret = directory / "secret.txt"
    secret.write_text("the-outside-secret")
    secret.chmod(0o644)
    yield secret
    secret.unlink()
    directory.rmdir()


@pytest.mark.parametrize("layers,error", [
    pytest.param({}, "FileNotFoundError", id="strict"),
    pytest.param(ONLY_MOUNT, "FileNotFoundError", id="mount-namespace-alone"),
    pytest.param(ONLY_LANDLOCK, "PermissionError", id="landlock-alone"),
])
def test_dir_fd_paths_do_not_reach_outside(agent: Agent, outside_secret: Path,
                                           layers: dict[str, bool], error: str) -> None:
    report = agent.run(DIR_FD_READ.replace("SECRET_FILE", repr(str(outside_secret))),
                       layers=layers)
    assert "the-outside-secret" not in report["stdout"]
    assert error in report["stderr"]


def test_dir_fd_paths_reach_outside_without_the_layers(agent: Agent,
                                                       outside_secret: Path) -> None:
    report = agent.run(DIR_FD_READ.replace("SECRET_FILE", repr(str(outside_secret))),
                       layers=NONE)
    assert "the-outside-secret" in report["stdout"]


PRLIMIT_THE_AGENT = """
import os, resource
for pid in (os.getppid(), AGENT_PID):
    try:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (3, 3))
        print('changed', pid)
    except OSError as error:
        print('refused', pid, type(error).__name__)
"""


@pytest.mark.parametrize("layers,answer", [
    pytest.param({}, "PermissionError", id="strict"),
    pytest.param(ONLY_SECCOMP, "PermissionError", id="seccomp-alone"),
    pytest.param(ONLY_NAMESPACES, "ProcessLookupError", id="pid-namespace-alone"),
])
def test_prlimit_cannot_reach_the_agent(agent: Agent, layers: dict[str, bool],
                                        answer: str) -> None:
    report = agent.run(PRLIMIT_THE_AGENT, layers=layers)
    assert f"refused {report['agent_pid']} {answer}" in report["stdout"]
    assert report["nofile_after"] == report["nofile_before"]


def test_prlimit_cripples_the_agent_without_the_layers(agent: Agent) -> None:
    report = agent.run(PRLIMIT_THE_AGENT, layers=NONE, fresh=True)
    assert f"changed {report['agent_pid']}" in report["stdout"]
    assert report["nofile_after"] == [3, 3]


KILL_THE_AGENT = """
import os, signal
try:
    os.kill(AGENT_PID, signal.SIGKILL)
    print('sent')
except OSError as error:
    print('refused', type(error).__name__)
"""


@pytest.mark.parametrize("layers,answer", [
    pytest.param({}, "refused PermissionError", id="strict"),
    pytest.param(ONLY_SECCOMP, "refused PermissionError", id="seccomp-alone"),
    pytest.param(ONLY_NAMESPACES, "refused ProcessLookupError", id="pid-namespace-alone"),
])
def test_the_agent_cannot_be_killed(agent: Agent, layers: dict[str, bool], answer: str) -> None:
    report = agent.run(KILL_THE_AGENT, layers=layers)
    assert answer in report["stdout"] + report["stderr"]  # and the agent answered


READ_ENVIRONMENTS = """
import os
print(sorted(os.environ))
for path in ('/proc/AGENT_PID/environ', '/proc/1/environ', '/proc/self/environ'):
    try:
        print(path, open(path, 'rb').read())
    except OSError as error:
        print('refused', path, type(error).__name__)
"""


@pytest.mark.parametrize("layers", [
    pytest.param({}, id="strict"),
    pytest.param(ONLY_MOUNT, id="mount-namespace-alone"),
    pytest.param(ONLY_LANDLOCK, id="landlock-alone"),
])
def test_the_agents_environment_stays_hidden(agent: Agent, layers: dict[str, bool]) -> None:
    report = agent.run(READ_ENVIRONMENTS, layers=layers)
    assert AGENT_SECRET not in report["stdout"] + report["stderr"]
    assert "OPENAI_API_KEY" not in report["stdout"]
    assert report["stdout"].count("refused") == 3


def test_the_agents_environment_leaks_without_the_layers(agent: Agent) -> None:
    report = agent.run(READ_ENVIRONMENTS, layers=NONE, fresh=True)
    assert AGENT_SECRET in report["stdout"]  # from /proc/<agent>/environ
    assert "OPENAI_API_KEY" not in report["stdout"].splitlines()[0]  # the scrubbed environment


@pytest.mark.skipif(platform.machine() != "x86_64", reason="raw x86_64 system call numbers")
def test_raw_system_calls_past_the_guard_are_refused_by_seccomp(agent: Agent) -> None:
    """Code past the audit hook (here: with the hook off, ctypes works) making the calls the
    filter forbids: each answers EPERM."""
    report = agent.run(
        "import ctypes\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "calls = {'ptrace attach': (101, 16, AGENT_PID, 0, 0), 'unshare user': (272, 0x10000000),\n"
        "         'setns': (308, 0, 0), 'mount': (165, b'none', b'/tmp', b'tmpfs', 0, None),\n"
        "         'pidfd_open': (434, AGENT_PID, 0),\n"
        "         'prlimit64': (302, AGENT_PID, 7, None, None),\n"
        "         'process_vm_readv': (310, AGENT_PID, None, 0, None, 0, 0),\n"
        "         'kill': (62, AGENT_PID, 0),\n"
        "         'execve': (59, b'/bin/true', None, None), 'bpf': (321, 0, None, 0),\n"
        "         'prctl pdeathsig': (157, 1, 0, 0, 0, 0)}\n"
        "for name, call in calls.items():\n"
        "    result = libc.syscall(*call)\n"
        "    print(name, result, ctypes.get_errno())\n",
        layers=KERNEL_LAYERS)
    lines = report["stdout"].splitlines()
    assert len(lines) == 11, report["stderr"]
    for line in lines:
        assert line.endswith(" -1 1"), line  # EPERM


CHMOD_ZERO = """
import os
os.makedirs('d/e')
open('d/e/f', 'w').write('x')
os.chmod('d/e', 0)
os.chmod('d', 0)
print('locked')
"""


@pytest.mark.parametrize("layers", [
    pytest.param({}, id="strict-tmpfs"),
    pytest.param({"mount": False}, id="host-directory-without-mount-layer"),
])
def test_a_chmod_zero_directory_leaves_nothing_behind(agent: Agent,
                                                      layers: dict[str, bool]) -> None:
    report = agent.run(CHMOD_ZERO, layers=layers)
    assert report["stdout"] == "locked\n"
    assert os.listdir(agent.base) == []


def test_filling_the_disk_stops_at_the_scratch_size(agent: Agent) -> None:
    report = agent.run_strict(
        "with open('big', 'wb') as f:\n"
        "    while True:\n"
        "        f.write(b'x' * 1048576)\n"
        "        f.flush()\n",
        limits={"scratch_bytes": 8 * 1024**2, "file_size_bytes": 64 * 1024**2})
    assert "No space left on device" in report["stderr"]
    assert report["limit"] == "scratch space 8Mi is full"
    assert os.listdir(agent.base) == []  # the scratch was a tmpfs: nothing reached the disk


def test_many_small_files_stop_at_the_inode_cap(agent: Agent) -> None:
    report = agent.run_strict(
        "for i in range(100000):\n    open(f'f{i}', 'w').close()\n",
        limits={"scratch_inodes": 512})
    assert "No space left on device" in report["stderr"]


def test_every_process_of_a_run_dies_with_the_agent(module_base: Path) -> None:
    """The agent killed mid-run (an OOM kill, a crash): parent-death signals take the monitor,
    then pid 1, and with it the namespace — nothing of the run is left behind."""
    marker = "run-" + secrets.token_hex(8)
    process = AgentProcess(module_base)
    assert process.process.stdin is not None
    process.process.stdin.write(json.dumps({
        "code": "import time\ntime.sleep(60)", "isolation": "strict", "layers": {},
        "limits": {"wall_seconds": 60}, "env": {"KAGENT_TEST_RUN": marker}}) + "\n")
    process.process.stdin.flush()
    deadline = time.monotonic() + 60
    while len(leftover_processes(marker)) < 3:  # monitor, pid 1, the program
        assert time.monotonic() < deadline, "the run never started"
        time.sleep(0.1)
    process.process.kill()
    process.process.wait()
    deadline = time.monotonic() + 30
    while survivors := leftover_processes(marker):
        if time.monotonic() > deadline:
            for pid in survivors:
                os.kill(pid, signal.SIGKILL)
            pytest.fail(f"processes of the run outlived the agent: {survivors}")
        time.sleep(0.1)
