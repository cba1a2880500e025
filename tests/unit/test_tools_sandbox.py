"""The code sandbox: each limit, each isolation layer and the refusal to run without them,
shown against real targets. (The escapes, tried by a non-root agent against itself, are in
test_sandbox_escapes.py.)

The network and file tests run with every layer and then with each layer alone, so each layer
is shown to hold on its own (layers this kernel does not offer are skipped).
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

from kagent.api.tool import CodeTool
from kagent.runtime.tools import sandbox as sandbox_module
from kagent.runtime.tools.sandbox import (
    STRICT_LAYERS,
    Sandbox,
    SandboxBusy,
    SandboxLayers,
    SandboxLimits,
    SandboxUnavailable,
    parse_memory,
    run_python,
)

NAMESPACES_ONLY = SandboxLayers(namespaces=True, mount=False, landlock=False, seccomp=False,
                                guard=False)
MOUNT_ONLY = SandboxLayers(namespaces=True, mount=True, landlock=False, seccomp=False,
                           guard=False)
LANDLOCK_ONLY = SandboxLayers(namespaces=False, mount=False, landlock=True, seccomp=False,
                              guard=False)
GUARD_ONLY = SandboxLayers(namespaces=False, mount=False, landlock=False, seccomp=False,
                           guard=True)


def _available() -> dict[str, str]:
    return asyncio.run(run_python("pass", isolation="best-effort")).layers


AVAILABLE = _available()
LANDLOCK_TCP = "tcp" in AVAILABLE.get("landlock", "")


def layer_params(*alone: tuple[str, SandboxLayers]) -> list[object]:
    params: list[object] = [pytest.param(None, id="strict")]
    for name, layers in alone:
        needs = {"namespaces": "network", "mount": "mount", "landlock": "landlock"}.get(
            name.split("-")[0], "guard")
        missing = needs not in AVAILABLE or (name == "landlock-tcp" and not LANDLOCK_TCP)
        params.append(pytest.param(layers, id=f"{name}-alone", marks=pytest.mark.skipif(
            missing, reason=f"this kernel does not offer the {name} layer")))
    return params


async def run_with(code: str, layers: SandboxLayers | None, **kwargs: object):
    if layers is None:
        result = await run_python(code, **kwargs)  # type: ignore[arg-type]
        assert set(result.layers) == set(STRICT_LAYERS)
        return result
    return await run_python(code, isolation="best-effort", layers=layers,  # type: ignore[arg-type]
                            **kwargs)


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
    directory.chmod(0o755)
    secret = directory / "secret.txt"
    secret.write_text("the-outside-secret")
    secret.chmod(0o644)
    yield secret
    for leftover in directory.iterdir():
        leftover.unlink()
    directory.rmdir()


async def test_normal_code_runs_and_uses_its_scratch_directory() -> None:
    result = await run_python(
        "import json, math, os, collections, asyncio, threading, tempfile\n"
        "open('notes.txt', 'w').write('kept in scratch')\n"
        "print(json.dumps({'sqrt': math.isqrt(144), 'files': sorted(os.listdir('.')),\n"
        "                  'note': open('notes.txt').read(), 'cwd': os.getcwd()}))\n"
        "print(asyncio.run(asyncio.sleep(0, result='async ok')))\n"
        "t = threading.Thread(target=print, args=('thread ok',)); t.start(); t.join()\n"
        "tempfile.NamedTemporaryFile().close()\n",
    )
    assert result.ok, result.report()
    lines = result.stdout.splitlines()
    assert lines[0] == ('{"sqrt": 12, "files": ["main.py", "notes.txt"], '
                        '"note": "kept in scratch", "cwd": "/tmp"}')
    assert lines[1:] == ["async ok", "thread ok"]
    assert result.report() == result.stdout.strip()
    assert set(result.layers) == set(STRICT_LAYERS) and result.missing == {}


async def test_environment_is_scrubbed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAGENT_SECRET_DB_PASSWORD_ABC123", "hunter2")
    result = await run_python("import os\nprint(sorted(os.environ))\nprint(os.environ['HOME'])",
                              env={"TRACEPARENT": "00-abc"})
    names, home = result.stdout.splitlines()
    assert "KAGENT_SECRET_DB_PASSWORD_ABC123" not in names
    assert "TRACEPARENT" in names
    assert home == "/tmp"


@pytest.mark.parametrize("layers", layer_params(("namespaces", NAMESPACES_ONLY),
                                                ("landlock-tcp", LANDLOCK_ONLY),
                                                ("guard", GUARD_ONLY)))
async def test_network_connect_to_a_local_listener_fails(listener: socket.socket,
                                                         layers: SandboxLayers | None) -> None:
    port = listener.getsockname()[1]
    result = await run_with(
        "import socket\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n"
        "s.settimeout(3)\n"
        f"s.connect(('127.0.0.1', {port}))\n"
        "print('CONNECTED')\n",
        layers,
    )
    assert result.exit_code == 1
    assert "CONNECTED" not in result.stdout
    assert any(e in result.stderr for e in ("PermissionError", "Network is unreachable"))
    with pytest.raises(BlockingIOError):
        listener.accept()  # nothing ever arrived


@pytest.mark.parametrize("layers", layer_params(("mount", MOUNT_ONLY), ("landlock", LANDLOCK_ONLY),
                                                ("guard", GUARD_ONLY)))
async def test_files_outside_the_scratch_directory_cannot_be_read_or_written(
    outside_file: Path, layers: SandboxLayers | None
) -> None:
    target = outside_file.parent / "dropped.txt"
    read = await run_with(f"print(open({str(outside_file)!r}).read())", layers)
    assert read.exit_code == 1
    assert "the-outside-secret" not in read.stdout
    assert "PermissionError" in read.stderr or "FileNotFoundError" in read.stderr
    write = await run_with(f"open({str(target)!r}, 'w').write('x')", layers)
    assert write.exit_code == 1
    assert not target.exists()
    listing = await run_with("import os\nprint(os.listdir('/etc'))", layers)
    assert "passwd" not in listing.stdout


async def test_the_audit_guard_survives_monkeypatching(outside_file: Path) -> None:
    """Code that rewrites os.path, posixpath and builtins cannot talk the guard round: it keeps
    its own references to C functions and builtins."""
    result = await run_with(
        "import builtins, os, posixpath\n"
        "fake = lambda *a, **k: os.getcwd() + '/x'\n"
        "os.path.realpath = posixpath.realpath = fake\n"
        "posixpath._joinrealpath = lambda *a, **k: (os.getcwd(), True)\n"
        "builtins.isinstance = lambda *a: True\n"
        f"print(open({str(outside_file)!r}).read())\n",
        GUARD_ONLY,
    )
    assert result.exit_code == 1
    assert "the-outside-secret" not in result.stdout
    assert "sandbox: access to" in result.stderr


@pytest.mark.parametrize("layers", layer_params(("landlock", LANDLOCK_ONLY),
                                                ("guard", GUARD_ONLY)))
async def test_escaping_through_a_symlink_fails(outside_file: Path,
                                                layers: SandboxLayers | None) -> None:
    result = await run_with(
        f"import os\nos.symlink({str(outside_file)!r}, 'link')\nprint(open('link').read())",
        layers,
    )
    assert result.exit_code == 1
    assert "the-outside-secret" not in result.stdout


async def test_the_root_is_read_only_and_holds_only_libraries() -> None:
    result = await run_with(
        "import os\n"
        "print(sorted(os.listdir('/')))\n"
        "for path in ('/proc', '/etc/passwd', '/sys'):\n"
        "    print(path, os.path.exists(path))\n"
        "try:\n    os.mkdir('/planted')\nexcept OSError as e:\n    print(type(e).__name__)\n",
        MOUNT_ONLY,
    )
    lines = result.stdout.splitlines()
    assert "proc" not in lines[0] and "etc" in lines[0]  # /etc holds ld.so.cache only
    assert lines[1:4] == ["/proc False", "/etc/passwd False", "/sys False"]
    assert lines[4] in ("PermissionError", "OSError")


async def test_runaway_cpu_is_stopped_by_the_cpu_time_limit() -> None:
    result = await run_python("while True:\n    pass\n",
                              SandboxLimits(cpu_seconds=1, wall_seconds=20))
    assert result.exit_code == -signal.SIGXCPU
    assert result.limit == "CPU time limit 1s exceeded"
    assert result.report().startswith("killed: CPU time limit 1s exceeded")


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


async def test_a_native_module_written_to_scratch_cannot_be_loaded() -> None:
    """The scratch is mounted noexec: a shared library copied there does not map."""
    result = await run_with(
        "import glob, importlib.machinery, importlib.util, shutil, sys\n"
        "dynload = [p for p in sys.path if p.endswith('lib-dynload')][0]\n"
        "source = sorted(glob.glob(dynload + '/*.so'))[0]\n"
        "name = source.split('/')[-1].split('.')[0]\n"
        "copy = shutil.copy(source, '/tmp/' + source.split('/')[-1])\n"
        "loader = importlib.machinery.ExtensionFileLoader(name, copy)\n"
        "importlib.util.module_from_spec(importlib.util.spec_from_loader(name, loader))\n"
        "print('LOADED')\n",
        SandboxLayers(guard=False),
    )
    assert "LOADED" not in result.stdout
    assert "failed to map segment" in result.stderr or "Operation not permitted" in result.stderr


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


@pytest.mark.parametrize("disabled,missing", [
    ("namespaces", {"user", "pid", "network"}),
    ("mount", {"mount"}),
    ("landlock", {"landlock"}),
    ("seccomp", {"seccomp"}),
    ("guard", {"guard"}),
])
async def test_a_strict_sandbox_without_a_layer_refuses_to_run(disabled: str,
                                                               missing: set[str]) -> None:
    layers = SandboxLayers(**{disabled: False})
    with pytest.raises(SandboxUnavailable) as refused:
        await run_python("print('RAN')", layers=layers)
    assert missing <= set(refused.value.missing)
    assert "the program was not run" in str(refused.value)
    # The same program runs when weaker isolation is accepted, and says what it lacks.
    weaker = await run_python("print('RAN')", isolation="best-effort", layers=layers)
    assert weaker.stdout == "RAN\n" and missing <= set(weaker.missing)


async def test_without_libseccomp_a_strict_sandbox_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox_module, "seccomp_programs",
                        lambda: "no seccomp filter: libseccomp is not usable (not found)")
    with pytest.raises(SandboxUnavailable, match="seccomp: no seccomp filter"):
        await run_python("print('RAN')")


async def test_the_agents_environment_can_disable_a_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAGENT_SANDBOX_DISABLE", "landlock")
    sandbox = Sandbox(SandboxLimits())
    with pytest.raises(SandboxUnavailable, match="landlock: disabled"):
        await sandbox.run("print('RAN')")
    monkeypatch.setenv("KAGENT_SANDBOX_DISABLE", "landlock,wings")
    with pytest.raises(SandboxUnavailable, match="unknown layers"):
        await sandbox.run("print('RAN')")


async def test_concurrent_runs_are_capped() -> None:
    """With one slot, a second run waits for it at most its own wall-clock limit: the first,
    killed at that same limit, still holds it then."""
    sandbox = Sandbox(SandboxLimits(wall_seconds=1), max_concurrent=1)
    first, second = await asyncio.gather(sandbox.run("import time\ntime.sleep(30)"),
                                         sandbox.run("print('second')"), return_exceptions=True)
    assert isinstance(first, sandbox_module.SandboxResult)
    assert first.limit == "wall-clock limit 1s exceeded"
    assert isinstance(second, SandboxBusy)
    assert "1 programs were running" in str(second)
    third = await sandbox.run("print('third')")  # the slot is free again
    assert third.stdout == "third\n"


async def test_file_names_stay_inside_the_scratch_directory() -> None:
    with pytest.raises(ValueError, match="not allowed"):
        await run_python("pass", files={"../escape.txt": "x"})


def test_limits_from_the_tool_spec() -> None:
    limits = SandboxLimits.from_spec(CodeTool(timeout="5s", memory="1Gi", cpuTime="1500ms",
                                              scratchSize="8Mi"))
    assert (limits.wall_seconds, limits.cpu_seconds, limits.memory_bytes,
            limits.scratch_bytes) == (5.0, 2, 1024**3, 8 * 1024**2)
    assert parse_memory("256Ki") == 256 * 1024
    with pytest.raises(ValueError):
        parse_memory("1G")


def test_layers_from_the_environment() -> None:
    assert SandboxLayers.from_environment({}) == SandboxLayers()
    assert SandboxLayers.from_environment({"KAGENT_SANDBOX_DISABLE": "seccomp, guard"}) == \
        SandboxLayers(seccomp=False, guard=False)


def test_scratch_removal_survives_locked_directories(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    (scratch / "d" / "e").mkdir(parents=True)
    (scratch / "d" / "e" / "f").write_text("x")
    (scratch / "d" / "e").chmod(0)
    (scratch / "d").chmod(0)
    sandbox_module.remove_scratch(str(scratch))
    assert not scratch.exists()
    assert os.listdir(tmp_path) == []
