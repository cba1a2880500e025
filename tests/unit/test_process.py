"""The one process supervisor (kagent.local.process), on real processes: groups, readiness,
stopping, re-attaching."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from kagent.local.process import (
    Process,
    ProcessExited,
    ReadinessTimeout,
    group_alive,
    stop_all,
)
from kagent.local.services import free_port

PY = sys.executable


def running(pid: int) -> bool:
    """Alive and not a zombie, read straight from /proc (independent of the supervisor)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def wait_for_file(path: Path, process: Process) -> str:
    process.wait_ready(lambda: path.exists() and path.read_text().endswith("\n"), timeout=30,
                       what=f"{path.name} to be written")
    return path.read_text()


# A child that starts a grandchild in its own process group; the grandchild ignores SIGTERM, as a
# stuck worker would, then writes its pid. The child waits.
GRANDCHILD = ("import os, signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
              "open(sys.argv[1], 'w').write(str(os.getpid()) + '\\n'); time.sleep(300)")
FAMILY = ("import subprocess, sys, time; "
          f"subprocess.Popen([sys.executable, '-c', {GRANDCHILD!r}, sys.argv[1]]); time.sleep(300)")


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_stop_leaves_neither_the_child_nor_its_grandchild(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    process = Process.start([PY, "-c", FAMILY, str(pid_file)], name="family",
                            log_file=tmp_path / "family.log")
    grandchild = int(wait_for_file(pid_file, process))
    assert os.getpgid(process.pid) == process.pid  # it leads its own group
    assert os.getpgid(grandchild) == process.pid  # and the grandchild is in it
    assert running(grandchild)

    assert process.stop(grace=0.5, kill_wait=5)  # SIGTERM is ignored: SIGKILL finishes it
    assert not running(process.pid) and not running(grandchild)
    assert not group_alive(process.pid)
    # The leader was reaped: no zombie is left waiting for us.
    assert not Path(f"/proc/{process.pid}").exists()
    assert process.returncode == -signal.SIGTERM


def test_stop_reaches_grandchildren_left_behind_by_a_leader_that_exited(tmp_path: Path) -> None:
    pid_file = tmp_path / "orphan.pid"
    script = textwrap.dedent("""
        import subprocess, sys
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
        open(sys.argv[1], "w").write(f"{child.pid}\\n")
    """)
    process = Process.start([PY, "-c", script, str(pid_file)], name="leaver")
    assert process.wait(30) == 0
    orphan = int(pid_file.read_text())
    assert running(orphan) and process.group_alive() and not process.alive()
    assert process.stop(grace=5)
    assert not running(orphan)


def test_stop_is_idempotent(tmp_path: Path) -> None:
    process = Process.start([PY, "-c", "import time; time.sleep(300)"], name="sleeper")
    assert process.stop()
    assert process.stop()
    assert process.kill()
    assert not process.alive() and not process.group_alive()
    done = Process.start([PY, "-c", "pass"], name="quick")
    done.wait(30)
    assert done.stop() and done.returncode == 0


def test_an_early_exit_fails_the_wait_at_once_with_the_code_and_the_log(tmp_path: Path) -> None:
    log = tmp_path / "crash.log"
    process = Process.start(
        [PY, "-c", "import sys; print('bad flag --frobnicate', flush=True); sys.exit(3)"],
        name="crasher", log_file=log)
    # A long timeout: only the exit itself can end the wait, as ProcessExited.
    with pytest.raises(ProcessExited) as failure:
        process.wait_ready(lambda: False, timeout=600, what="the port to open")
    message = str(failure.value)
    assert "crasher exited with code 3 while waiting for the port to open" in message
    assert "bad flag --frobnicate" in message and str(log) in message
    assert failure.value.returncode == 3
    assert "bad flag --frobnicate" in failure.value.log_tail


def test_a_readiness_timeout_is_a_clear_error(tmp_path: Path) -> None:
    script = "print('still warming up', flush=True); import time; time.sleep(300)"
    process = Process.start([PY, "-c", script], name="slowpoke", log_file=tmp_path / "slow.log")
    try:
        def probe() -> bool:
            raise ConnectionRefusedError("nobody listens")

        with pytest.raises(ReadinessTimeout) as failure:
            process.wait_ready(probe, timeout=0.3, what="/readyz")
        assert isinstance(failure.value, TimeoutError)
        message = str(failure.value)
        assert message.startswith("timed out after 0s waiting for /readyz")
        assert "ConnectionRefusedError: nobody listens" in message  # the probe's last failure
        assert "still warming up" in message  # the process's own log
        assert process.alive()  # a timeout does not stop it: the caller decides
    finally:
        process.stop()


def test_an_http_url_is_a_probe(tmp_path: Path) -> None:
    port = free_port()
    process = Process.start([PY, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                            name="web", cwd=tmp_path, log_file=tmp_path / "web.log")
    try:
        process.wait_ready(f"http://127.0.0.1:{port}/", timeout=30)
    finally:
        assert process.stop()


def test_reattach_by_pid_stops_a_detached_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    starter = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from kagent.local.process import Process
        p = Process.start([sys.executable, "-c", {FAMILY!r}, {str(pid_file)!r}], name="detached")
        print(p.pid, p.start_ticks)
    """)
    # Another command starts it and exits, as `kagent dev up` does.
    out = subprocess.run([PY, "-c", starter], capture_output=True, text=True, check=True,
                         timeout=60).stdout.split()
    pid, ticks = int(out[0]), int(out[1])
    attached = Process.attach(pid, name="detached", start_ticks=ticks)
    grandchild = int(wait_for_file(pid_file, attached))
    assert attached.alive() and attached.group_alive()
    # A pid reused by another process is not ours: the wrong start time leaves it alone.
    assert not Process.attach(pid, start_ticks=ticks + 1).alive()
    Process.attach(pid, start_ticks=ticks + 1).send(signal.SIGKILL)
    assert running(pid)

    assert attached.stop(grace=0.5)
    assert not running(pid) and not running(grandchild)
    assert not attached.alive() and attached.stop()


def test_a_zombie_is_not_alive() -> None:
    child = subprocess.Popen([PY, "-c", "pass"])  # never waited for: it stays a zombie
    wait_until(lambda: not running(child.pid), "the child to exit")
    assert Path(f"/proc/{child.pid}").exists()  # the zombie
    assert not Process.attach(child.pid).alive()
    assert not Path(f"/proc/{child.pid}").exists()  # and attaching reaped it, as its parent


def test_die_with_parent_takes_the_child_along(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    parent_script = textwrap.dedent(f"""
        import sys, time
        from kagent.local.process import Process
        p = Process.start([sys.executable, "-c", "import time; time.sleep(300)"],
                          die_with_parent=True)
        open({str(pid_file)!r}, "w").write(f"{{p.pid}}\\n")
        time.sleep(300)
    """)
    parent = Process.start([PY, "-c", parent_script], name="parent")
    try:
        child = int(wait_for_file(pid_file, parent))
        assert running(child)
        os.kill(parent.pid, signal.SIGKILL)  # no atexit, no cleanup: only the kernel acts
        parent.wait(30)
        wait_until(lambda: not running(child), "the child of a killed parent to die")
    finally:
        parent.stop()


async def test_stop_async_does_not_block_the_event_loop(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    process = Process.start([PY, "-c", FAMILY, str(pid_file)], name="family")
    grandchild = int(wait_for_file(pid_file, process))
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    ticker = asyncio.create_task(tick())
    try:
        assert await process.stop_async(grace=0.5)
    finally:
        ticker.cancel()
    assert ticks >= 2  # the loop kept running while the grace period passed
    assert not running(process.pid) and not running(grandchild)


def test_stop_all_stops_several_together() -> None:
    processes = [Process.start([PY, "-c", "import time; time.sleep(300)"], name=f"p{i}")
                 for i in range(3)]
    assert stop_all(processes, grace=5)
    assert not any(running(p.pid) for p in processes)
