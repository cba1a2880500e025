"""The code sandbox: each limit and each isolation layer, shown against a real target.

The network and file tests run with all layers and then with each layer alone, so a kernel that
lacks one layer still shows the others hold (layers the kernel does not offer are skipped).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from kagent.runtime.tools.sandbox import SandboxLayers, SandboxLimits, parse_memory, run_python

ALL = SandboxLayers()
GUARD_ONLY = SandboxLayers(namespaces=False, landlock=False, guard=True)
NAMESPACES_ONLY = SandboxLayers(namespaces=True, landlock=False, guard=False)
LANDLOCK_ONLY = SandboxLayers(namespaces=False, landlock=True, guard=False)


def _available() -> dict[str, str]:
    return asyncio.run(run_python("pass")).layers


AVAILABLE = _available()
HAS_NETNS = "namespace" in AVAILABLE.get("network", "") and "no namespace" not in AVAILABLE.get(
    "network", "")
HAS_LANDLOCK = AVAILABLE.get("landlock", "").startswith("abi")
LANDLOCK_TCP = "tcp" in AVAILABLE.get("landlock", "")


def layer_params(network: bool) -> list[object]:
    return [
        pytest.param(ALL, id="all-layers"),
        pytest.param(GUARD_ONLY, id="audit-guard-only"),
        pytest.param(NAMESPACES_ONLY, id="namespace-only", marks=pytest.mark.skipif(
            not network or not HAS_NETNS, reason="no network namespace here (or not a network "
            "test: namespaces do not restrict files)")),
        pytest.param(LANDLOCK_ONLY, id="landlock-only", marks=pytest.mark.skipif(
            not HAS_LANDLOCK or (network and not LANDLOCK_TCP),
            reason="Landlock (with TCP rules for the network test) is not available")),
    ]


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.setblocking(False)
    yield server
    server.close()


@pytest.fixture
def outside_file() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="kagent-outside-"))
    secret = directory / "secret.txt"
    secret.write_text("the-outside-secret")
    yield secret
    secret.unlink(missing_ok=True)
    for leftover in directory.iterdir():
        leftover.unlink()
    directory.rmdir()


async def test_normal_code_runs_and_uses_its_scratch_directory() -> None:
    result = await run_python(
        "import json, math, os, collections, asyncio, threading, tempfile\n"
        "open('notes.txt', 'w').write('kept in scratch')\n"
        "print(json.dumps({'sqrt': math.isqrt(144), 'files': sorted(os.listdir('.')),\n"
        "                  'note': open('notes.txt').read()}))\n"
        "print(asyncio.run(asyncio.sleep(0, result='async ok')))\n"
        "tempfile.NamedTemporaryFile().close()\n",
    )
    assert result.ok, result.report()
    lines = result.stdout.splitlines()
    assert lines[0] == '{"sqrt": 12, "files": ["main.py", "notes.txt"], "note": "kept in scratch"}'
    assert lines[1] == "async ok"
    assert result.report() == result.stdout.strip()


async def test_scratch_directory_is_removed_and_environment_is_minimal(monkeypatch) -> None:
    monkeypatch.setenv("KAGENT_SECRET_DB_PASSWORD_ABC123", "hunter2")
    result = await run_python("import os\nprint(os.getcwd())\nprint(sorted(os.environ))",
                              env={"TRACEPARENT": "00-abc"})
    cwd, names = result.stdout.splitlines()
    assert not os.path.exists(cwd)
    assert "KAGENT_SECRET_DB_PASSWORD_ABC123" not in names
    assert "TRACEPARENT" in names


@pytest.mark.parametrize("layers", layer_params(network=True))
async def test_network_connect_to_a_local_listener_fails(listener: socket.socket,
                                                         layers: SandboxLayers) -> None:
    port = listener.getsockname()[1]
    result = await run_python(
        "import socket\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n"
        "s.settimeout(3)\n"
        f"s.connect(('127.0.0.1', {port}))\n"
        "print('CONNECTED')\n",
        layers=layers,
    )
    assert result.exit_code == 1
    assert "CONNECTED" not in result.stdout
    assert any(e in result.stderr for e in ("PermissionError", "Network is unreachable"))
    with pytest.raises(BlockingIOError):
        listener.accept()  # nothing ever arrived


@pytest.mark.parametrize("layers", layer_params(network=False))
async def test_files_outside_the_scratch_directory_cannot_be_read_or_written(
    outside_file: Path, layers: SandboxLayers
) -> None:
    target = outside_file.parent / "dropped.txt"
    read = await run_python(f"print(open({str(outside_file)!r}).read())", layers=layers)
    assert read.exit_code == 1
    assert "the-outside-secret" not in read.stdout
    assert "PermissionError" in read.stderr
    write = await run_python(f"open({str(target)!r}, 'w').write('x')", layers=layers)
    assert write.exit_code == 1 and "PermissionError" in write.stderr
    assert not target.exists()
    listing = await run_python("import os\nprint(os.listdir('/etc'))", layers=layers)
    assert listing.exit_code == 1 and "passwd" not in listing.stdout


async def test_the_audit_guard_survives_monkeypatching(outside_file: Path) -> None:
    """Code that rewrites os.path, posixpath and builtins cannot talk the guard round: it keeps
    its own references to C functions and builtins."""
    result = await run_python(
        "import builtins, os, posixpath\n"
        "fake = lambda *a, **k: os.getcwd() + '/x'\n"
        "os.path.realpath = posixpath.realpath = fake\n"
        "posixpath._joinrealpath = lambda *a, **k: (os.getcwd(), True)\n"
        "builtins.isinstance = lambda *a: True\n"
        f"print(open({str(outside_file)!r}).read())\n",
        layers=GUARD_ONLY,
    )
    assert result.exit_code == 1
    assert "the-outside-secret" not in result.stdout
    assert "sandbox: access to" in result.stderr


@pytest.mark.parametrize("layers", layer_params(network=False))
async def test_escaping_through_a_symlink_fails(outside_file: Path,
                                                layers: SandboxLayers) -> None:
    result = await run_python(
        f"import os\nos.symlink({str(outside_file)!r}, 'link')\nprint(open('link').read())",
        layers=layers,
    )
    assert result.exit_code == 1
    assert "the-outside-secret" not in result.stdout


async def test_runaway_cpu_is_stopped_by_the_cpu_time_limit() -> None:
    result = await run_python("while True:\n    pass\n",
                              SandboxLimits(cpu_seconds=1, wall_seconds=20))
    assert result.exit_code == -signal.SIGXCPU
    assert result.limit == "CPU time limit 1s exceeded"
    assert result.report().startswith("killed: CPU time limit 1s exceeded")
    assert result.duration_seconds < 10  # the CPU limit, not the wall clock, ended it


async def test_huge_allocation_is_stopped_by_the_memory_limit() -> None:
    result = await run_python(
        "blocks = []\nfor _ in range(64):\n    blocks.append(bytearray(64 * 1024 * 1024))\n"
        "print('ALLOCATED', len(blocks))\n",
        SandboxLimits(memory_bytes=parse_memory("128Mi"), memory_text="128Mi"),
    )
    assert result.exit_code == 1
    assert "ALLOCATED" not in result.stdout
    assert "MemoryError" in result.stderr
    assert result.limit == "memory limit 128Mi exceeded"
    assert result.report().startswith("stopped: memory limit 128Mi exceeded")


async def test_wall_clock_limit_kills_a_sleeping_program() -> None:
    result = await run_python("import time\nprint('started', flush=True)\ntime.sleep(60)",
                              SandboxLimits(wall_seconds=1))
    assert result.limit == "wall-clock limit 1s exceeded"
    assert result.exit_code == -signal.SIGKILL
    assert result.stdout == "started\n"  # output before the kill is kept
    assert result.duration_seconds < 10


@pytest.mark.parametrize("code", [
    "import os\nos.fork()",
    "import subprocess\nsubprocess.run(['/bin/true'])",
    "import os\nos.system('true')",
    "import os\nos.execv('/bin/true', ['true'])",
])
async def test_starting_processes_is_refused(code: str) -> None:
    result = await run_python(code)
    assert result.exit_code == 1
    assert "PermissionError" in result.stderr


async def test_ctypes_cannot_be_loaded() -> None:
    result = await run_python("import ctypes\nprint(ctypes.CDLL(None))")
    assert result.exit_code == 1 and "importing ctypes is not allowed" in result.stderr


async def test_output_and_file_size_are_capped() -> None:
    result = await run_python("print('x' * 1_000_000)", SandboxLimits(output_bytes=1000))
    assert result.ok and len(result.stdout) == 1000 and result.stdout_truncated
    assert "[stdout truncated]" in result.report()
    big = await run_python("open('big', 'wb').write(b'x' * (32 * 1024 * 1024))")
    assert big.limit == "file size limit 16Mi exceeded"


async def test_failures_report_exit_status_and_stderr() -> None:
    result = await run_python("print('partial')\nraise SystemExit(3)")
    assert result.exit_code == 3 and not result.ok
    assert result.report() == "exit status 3\n--- stdout ---\npartial"
