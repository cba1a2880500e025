"""The one process supervisor: how Kagent starts, waits for, and stops every child process.

The control plane's components, the detached processes of ``kagent dev``, the controller and
agent runtimes that tests launch, Redis and PostgreSQL, and the agent processes of local pods
all run through :class:`Process`:

- **start**: argv, environment, working folder, output to a log file, in a session (and so a
  process group) of its own, so a terminal's Ctrl-C does not reach it and stopping it reaches
  everything it started; optionally killed by the kernel when its parent dies (``prctl``
  ``PR_SET_PDEATHSIG``), so a test run that is SIGKILLed leaves nothing behind;
- **wait until ready**: a probe (a callable, or an HTTP URL) polled until it passes, with a
  timeout; if the process exits first the wait fails at once, with its exit code and the tail
  of its log;
- **stop**: SIGTERM to the whole group, a grace period, SIGKILL to what is left, and the leader
  reaped — no orphan and no zombie, grandchildren that stayed in the group included; stopping
  twice is harmless;
- **re-attach** by pid (and process group) to a process another command started detached, to
  check whether it is alive (zombies count as dead) or to stop its group. A recorded start time
  guards against signalling an unrelated process that reused the pid.

:func:`stop_all` stops several at once (the control plane stops its tiers that way) and
:func:`stop_all_async` / :meth:`Process.stop_async` do the same without blocking an event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO

Probe = Callable[[], bool] | str
"""A readiness check: a callable that returns True when ready (an exception counts as not
ready), or an HTTP URL that is ready when it answers 2xx or 3xx."""

DEFAULT_GRACE_SECONDS = 10.0
DEFAULT_KILL_WAIT_SECONDS = 5.0
FIRST_POLL_SECONDS = 0.002
POLL_SECONDS = 0.05
READY_POLL_SECONDS = 0.1
LOG_TAIL_LINES = 40
_TAIL_BYTES = 64 * 1024


class ProcessError(RuntimeError):
    """A supervised process failed: it exited early, or did not become ready in time."""


class ProcessExited(ProcessError):
    """The process exited while something waited for it to become ready."""

    def __init__(self, message: str, *, name: str, returncode: int | None, log_tail: str) -> None:
        super().__init__(message)
        self.name = name
        self.returncode = returncode
        self.log_tail = log_tail


class ReadinessTimeout(ProcessError, TimeoutError):
    """The process kept running but its readiness probe did not pass in time."""


# --- /proc ---------------------------------------------------------------------------------------

def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, process group, start time in clock ticks) of a process, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()  # the command name may contain spaces and ")"
    return fields[0], int(fields[2]), int(fields[19])


def start_ticks(pid: int) -> int | None:
    """When the process started (clock ticks since boot): with its pid, it names one process."""
    stat = _proc_stat(pid)
    return stat[2] if stat else None


def _live_member(pgid: int) -> bool:
    """Whether any process of the group is alive; zombies (waiting for a parent that may never
    reap them) do not count."""
    if not Path("/proc/self").exists():
        return True  # no /proc: the group exists, which is all we can tell
    with os.scandir("/proc") as entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            stat = _proc_stat(int(entry.name))
            if stat is not None and stat[1] == pgid and stat[0] not in ("Z", "X"):
                return True
    return False


def group_alive(pgid: int) -> bool:
    """Whether a live (not zombie) process is left in process group ``pgid``."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists; someone else's
    return _live_member(pgid)


def tail(path: Path | None, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a log file (reading at most its last 64 KiB)."""
    if path is None:
        return "(no log)"
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - _TAIL_BYTES))
            text = handle.read().decode(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


# --- dying with the parent -----------------------------------------------------------------------
# prctl(PR_SET_PDEATHSIG) makes the kernel kill a child when the thread that forked it dies. It is
# resolved before forking so the child does no dynamic loading between fork and exec.
_PR_SET_PDEATHSIG = 1
try:
    _prctl: Callable[..., int] | None = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):
    _prctl = None


def _die_with_parent(parent_pid: int) -> Callable[[], None] | None:
    if _prctl is None or threading.current_thread() is not threading.main_thread():
        return None  # the signal follows the forking *thread*; only the main thread is safe
    prctl = _prctl

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def http_probe(url: str, timeout: float = 1.0) -> Callable[[], bool]:
    """A probe that passes when ``url`` answers 2xx or 3xx (proxies from the environment are
    ignored: the processes we start listen on this machine)."""
    import httpx

    def probe() -> bool:
        return httpx.get(url, timeout=timeout, trust_env=False).status_code < 400

    return probe


# --- the process ---------------------------------------------------------------------------------

class Process:
    """One supervised process: the leader of its own process group.

    Create it with :meth:`start` (a child of this process) or :meth:`attach` (one started by
    another process, known by its pid).
    """

    def __init__(self, *, name: str, pid: int, pgid: int | None = None,
                 log_file: Path | None = None, start_ticks: int | None = None,
                 popen: subprocess.Popen[bytes] | None = None) -> None:
        self.name = name
        self.pid = pid
        self.pgid = pid if pgid is None else pgid
        self.log_file = log_file
        self.start_ticks = start_ticks
        self._popen = popen

    def __repr__(self) -> str:
        return f"<Process {self.name} pid={self.pid} pgid={self.pgid}>"

    @classmethod
    def start(
        cls,
        argv: Sequence[str | os.PathLike[str]],
        *,
        name: str | None = None,
        log_file: Path | None = None,
        append_log: bool = False,
        env: Mapping[str, str] | None = None,
        cwd: Path | str | None = None,
        die_with_parent: bool = False,
        user: str | None = None,
    ) -> Process:
        """Start ``argv`` in a new session, stdout and stderr to ``log_file`` (else discarded).

        ``env`` is the whole environment (None: this process's). With ``die_with_parent`` the
        kernel kills it when this process dies (only possible from the main thread; elsewhere
        it is silently not applied).
        """
        args = [os.fspath(part) for part in argv]
        preexec = _die_with_parent(os.getpid()) if die_with_parent else None
        output: IO[bytes] | int = subprocess.DEVNULL
        if log_file is not None:
            log_file.parent.mkdir(parents=True, exist_ok=True)
            output = log_file.open("ab" if append_log else "wb")
        try:
            popen = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=dict(env) if env is not None else None,
                start_new_session=True,
                preexec_fn=preexec,  # noqa: PLW1509 - only calls prctl, resolved before fork
                user=user,
            )
        finally:
            if not isinstance(output, int):
                output.close()  # the child has its own copy
        return cls(name=name or Path(args[0]).name, pid=popen.pid, log_file=log_file,
                   start_ticks=start_ticks(popen.pid), popen=popen)

    @classmethod
    def attach(cls, pid: int, *, name: str | None = None, pgid: int | None = None,
               log_file: Path | None = None, start_ticks: int | None = None) -> Process:
        """A handle on a process started elsewhere (e.g. detached by an earlier command). Give
        its recorded ``start_ticks`` so a pid reused by an unrelated process is left alone."""
        return cls(name=name or f"pid {pid}", pid=pid, pgid=pgid, log_file=log_file,
                   start_ticks=start_ticks)

    # --- state -----------------------------------------------------------------------------------

    @property
    def returncode(self) -> int | None:
        """The exit status (negative: killed by that signal); None while it runs, and for an
        attached process, whose status only its parent learns."""
        return self._popen.poll() if self._popen is not None else None

    def _reap(self) -> None:
        if self._popen is not None:
            self._popen.poll()
            return
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(self.pid, os.WNOHANG)  # our child after all (detached, stopped by us)

    def _replaced(self) -> bool:
        """The pid now names another process (the one we knew exited and the pid was reused)."""
        if self.start_ticks is None:
            return False
        stat = _proc_stat(self.pid)
        return stat is not None and stat[2] != self.start_ticks

    def alive(self) -> bool:
        """Whether the leader runs (a zombie does not)."""
        if self._popen is not None:
            return self._popen.poll() is None
        self._reap()
        stat = _proc_stat(self.pid)
        if stat is None:
            if Path("/proc/self").exists():
                return False
            try:  # no /proc: ask the kernel
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return False
            except PermissionError:
                return True
            return True
        if self.start_ticks is not None and stat[2] != self.start_ticks:
            return False
        return stat[0] not in ("Z", "X")

    def group_alive(self) -> bool:
        """Whether the leader or anything it left in its group runs."""
        if self.alive():
            return True
        if self._replaced():
            return False  # the pid, and so the group id, belong to someone else now
        return group_alive(self.pgid)

    def exit_description(self) -> str:
        code = self.returncode
        if code is None:
            return "exited"
        if code < 0:
            with contextlib.suppress(ValueError):
                return f"was killed by {signal.Signals(-code).name}"
        return f"exited with code {code}"

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return tail(self.log_file, lines)

    # --- waiting ---------------------------------------------------------------------------------

    def wait_ready(self, probe: Probe, *, timeout: float, what: str | None = None,
                   also_watch: Iterable[Process] = ()) -> None:
        """Poll ``probe`` until it passes. Raises :class:`ProcessExited` as soon as this process
        (or one in ``also_watch``) exits, :class:`ReadinessTimeout` after ``timeout`` seconds."""
        label = what or (probe if isinstance(probe, str) else "readiness")
        wait_until_ready({label: probe}, watch=[self, *also_watch], owners={label: self},
                         timeout=timeout)

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the leader to exit (only for a process this one started); its status."""
        if self._popen is None:
            raise ProcessError(f"{self.name} was not started by this process")
        try:
            return self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    # --- stopping --------------------------------------------------------------------------------

    def send(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the whole process group."""
        if self._replaced():
            return
        try:
            os.killpg(self.pgid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def stop(self, grace: float = DEFAULT_GRACE_SECONDS,
             kill_wait: float = DEFAULT_KILL_WAIT_SECONDS,
             first_signal: signal.Signals = signal.SIGTERM) -> bool:
        """``first_signal`` (SIGTERM) to the group, ``grace`` seconds, then SIGKILL; True when
        nothing of the group is left. Harmless on a stopped process."""
        return stop_all([self], grace=grace, kill_wait=kill_wait, first_signal=first_signal)

    async def stop_async(self, grace: float = DEFAULT_GRACE_SECONDS,
                         kill_wait: float = DEFAULT_KILL_WAIT_SECONDS,
                         first_signal: signal.Signals = signal.SIGTERM) -> bool:
        """:meth:`stop` for an event loop: waits with ``asyncio.sleep``."""
        return await stop_all_async([self], grace=grace, kill_wait=kill_wait,
                                    first_signal=first_signal)

    def kill(self, kill_wait: float = DEFAULT_KILL_WAIT_SECONDS) -> bool:
        """SIGKILL the group at once (no chance to clean up: a crash), then reap."""
        return self.stop(grace=kill_wait, kill_wait=kill_wait, first_signal=signal.SIGKILL)


# --- several at once ---------------------------------------------------------------------------

def _stop_steps(processes: Sequence[Process], grace: float, kill_wait: float,
                first_signal: signal.Signals) -> Generator[float, None, bool]:
    """The stop sequence, yielding how long to sleep between checks, so a thread and an event
    loop drive the same code. Returns True when no group has a live process left."""
    for sig, budget in ((first_signal, grace), (signal.SIGKILL, kill_wait)):
        live = [p for p in processes if p.group_alive()]
        if not live:
            break
        for process in live:
            process.send(sig)
        deadline = time.monotonic() + budget
        delay = FIRST_POLL_SECONDS  # most processes exit at once: look again soon, then less often
        while any(p.group_alive() for p in live) and time.monotonic() < deadline:
            yield delay
            delay = min(delay * 2, POLL_SECONDS)
    for process in processes:
        process._reap()  # same module
    return not any(p.group_alive() for p in processes)


def stop_all(processes: Sequence[Process], *, grace: float = DEFAULT_GRACE_SECONDS,
             kill_wait: float = DEFAULT_KILL_WAIT_SECONDS,
             first_signal: signal.Signals = signal.SIGTERM) -> bool:
    """Stop several processes together (they share the grace period); True when all are gone."""
    steps = _stop_steps(processes, grace, kill_wait, first_signal)
    while True:
        try:
            time.sleep(next(steps))
        except StopIteration as done:
            return bool(done.value)


async def stop_all_async(processes: Sequence[Process], *, grace: float = DEFAULT_GRACE_SECONDS,
                         kill_wait: float = DEFAULT_KILL_WAIT_SECONDS,
                         first_signal: signal.Signals = signal.SIGTERM) -> bool:
    """:func:`stop_all` for an event loop."""
    steps = _stop_steps(processes, grace, kill_wait, first_signal)
    while True:
        try:
            delay = next(steps)
        except StopIteration as done:
            return bool(done.value)
        await asyncio.sleep(delay)


def wait_until_ready(
    checks: Mapping[str, Probe],
    *,
    watch: Iterable[Process],
    timeout: float,
    owners: Mapping[str, Process] | None = None,
    deadline: float | None = None,
) -> None:
    """Poll every check until all pass; fail at once if a watched process exits.

    ``owners`` names the process whose log explains each check when it times out; ``deadline``
    (monotonic) overrides ``timeout`` when several waits share one budget.
    """
    pending: dict[str, Callable[[], bool]] = {
        name: http_probe(check) if isinstance(check, str) else check
        for name, check in checks.items()}
    watched: list[Process] = []
    for process in watch:
        if all(process is not seen for seen in watched):
            watched.append(process)
    end = deadline if deadline is not None else time.monotonic() + timeout
    last_error: dict[str, str] = {}
    while True:
        for name, check in list(pending.items()):
            try:
                passed = check()
            except Exception as error:  # noqa: BLE001 - a failing probe means "not yet"
                passed = False
                last_error[name] = f"{type(error).__name__}: {error}"
            if passed:
                del pending[name]
        if not pending:
            return
        for process in watched:
            if not process.alive():
                process._reap()  # same module: learn the exit status
                log_tail = process.log_tail()
                where = f"; last lines of {process.log_file}:\n{log_tail}" if process.log_file \
                    else " (its output was not kept)"
                raise ProcessExited(
                    f"{process.name} {process.exit_description()} while waiting for "
                    f"{', '.join(pending)}{where}",
                    name=process.name, returncode=process.returncode, log_tail=log_tail)
        if time.monotonic() > end:
            details = []
            for name in pending:
                if name in last_error:
                    details.append(f"--- {name}: last probe error: {last_error[name]}")
                owner = (owners or {}).get(name)
                if owner is not None and owner.log_file is not None:
                    details.append(f"--- last lines of {owner.log_file}:\n{owner.log_tail()}")
            raise ReadinessTimeout(f"timed out after {timeout:.0f}s waiting for "
                                   f"{', '.join(pending)}\n" + "\n".join(details))
        time.sleep(READY_POLL_SECONDS)

