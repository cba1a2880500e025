"""Running model-written Python where it can do no harm, or not at all.

Each run is a fresh interpreter (``python -I -S -B``: no site-packages, no environment variables
read, no bytecode written) with a scrubbed environment, given its program on stdin. Inside,
:mod:`kagent.runtime.tools._sandbox_child` puts the isolation layers in place — user, PID, mount
and network namespaces, Landlock, a seccomp filter, resource limits, an audit hook — and runs the
program only when every one of them is in place. A sandbox that cannot have them refuses to run
(:class:`SandboxUnavailable`), unless the Tool explicitly accepts weaker isolation
(``isolation: best-effort``). Here, in the agent, the wall clock is enforced (killing the
sandbox's PID namespace kills every process in it), the seccomp filter is built (with libseccomp,
through pyseccomp), and concurrent runs are capped (:class:`Sandbox`).

Nothing here needs privileges: the agent pod runs as non-root and gets its namespaces from an
unprivileged user namespace. What the node and the pod must allow for that is in
docs/security.md.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import logging
import math
import os
import re
import shutil
import signal
import stat
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from kagent.api.base import parse_duration
from kagent.api.tool import CodeTool

logger = logging.getLogger("kagent.runtime.tools.sandbox")

_CHILD_SOURCE = (Path(__file__).parent / "_sandbox_child.py").read_text()
_MEMORY_UNITS = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}

Isolation = Literal["strict", "best-effort"]

STRICT_LAYERS = ("user", "pid", "network", "mount", "landlock", "seccomp", "limits", "guard")
"""Every layer a strict sandbox needs (the child checks the same list before running code)."""

SYSTEM_LIBRARY_DIRS = ("/lib", "/lib64", "/usr/lib", "/usr/lib64", "/usr/share/zoneinfo")
"""Readable (never writable) inside the sandbox: extension modules load shared libraries."""
READ_FILES = ("/dev/urandom", "/dev/random", "/etc/ld.so.cache")
READ_WRITE_FILES = ("/dev/null", "/dev/zero")
MAX_PROGRAM_BYTES = 1024 * 1024
"""The program and its input files together, as JSON."""
DISABLE_ENV = "KAGENT_SANDBOX_DISABLE"
"""Comma-separated layers to treat as unavailable (diagnosis and tests: a strict sandbox then
refuses to run). Read from the agent's own environment, which the model cannot set."""


class SandboxUnavailable(RuntimeError):
    """The sandbox refused to run the program: a layer it needs is not in place."""

    def __init__(self, missing: Mapping[str, str], layers: Mapping[str, str] | None = None):
        self.missing = dict(missing)
        self.layers = dict(layers or {})
        reasons = "; ".join(f"{name}: {why}" for name, why in self.missing.items())
        super().__init__(f"the code sandbox is not available here, so the program was not run "
                         f"(missing isolation: {reasons})")


class SandboxBusy(RuntimeError):
    """Every run slot stayed taken for as long as the caller would wait."""


def parse_memory(text: str) -> int:
    """``256Mi`` → bytes (the API's pattern allows Ki, Mi and Gi only)."""
    found = re.fullmatch(r"([0-9]+)(Ki|Mi|Gi)", text)
    if not found:
        raise ValueError(f"invalid memory size {text!r}: use forms like 256Mi or 1Gi")
    return int(found.group(1)) * _MEMORY_UNITS[found.group(2)]


def _format_seconds(seconds: float) -> str:
    return f"{seconds:g}s"


@dataclass(frozen=True)
class SandboxLimits:
    """What one run may use. Defaults match the Tool API's defaults for ``code``."""

    wall_seconds: float = 30.0
    cpu_seconds: int = 10
    memory_bytes: int = 256 * 1024**2
    memory_text: str = "256Mi"
    scratch_bytes: int = 64 * 1024**2
    """Size of the scratch file system (a tmpfs: it counts against the pod's memory)."""
    scratch_inodes: int = 4096
    file_size_bytes: int = 16 * 1024**2
    open_files: int = 64
    threads: int = 64
    """Tasks of the sandbox's user namespace (no processes can be started, so: threads)."""
    output_bytes: int = 64 * 1024
    """How much of stdout and of stderr is kept; the rest is read and dropped."""

    @classmethod
    def from_spec(cls, spec: CodeTool) -> SandboxLimits:
        return cls(
            wall_seconds=parse_duration(spec.timeout).total_seconds(),
            cpu_seconds=max(1, math.ceil(parse_duration(spec.cpu_time).total_seconds())),
            memory_bytes=parse_memory(spec.memory),
            memory_text=spec.memory,
            scratch_bytes=parse_memory(spec.scratch_size),
        )


@dataclass(frozen=True)
class SandboxLayers:
    """Which layers to attempt. Turning one off stands for a kernel or pod that refuses it: a
    strict run then refuses, a best-effort run goes on without it (tests use this to show each
    layer holds on its own)."""

    namespaces: bool = True
    """User, PID, network, IPC and UTS namespaces."""
    mount: bool = True
    """The mount namespace with its own root and the size-capped scratch tmpfs."""
    landlock: bool = True
    seccomp: bool = True
    guard: bool = True

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> SandboxLayers:
        """All layers, less those named in KAGENT_SANDBOX_DISABLE."""
        text = (os.environ if environ is None else environ).get(DISABLE_ENV, "")
        names = {n.strip() for n in text.split(",") if n.strip()}
        unknown = names - {"namespaces", "mount", "landlock", "seccomp", "guard"}
        if unknown:
            raise ValueError(f"{DISABLE_ENV}: unknown layers {sorted(unknown)}")
        return cls(**{name: False for name in names})


@dataclass
class SandboxResult:
    exit_code: int | None
    """The program's exit status; negative for a signal, as in :mod:`subprocess`."""
    stdout: str
    stderr: str
    limit: str | None = None
    """Which limit stopped the run, e.g. ``CPU time limit 10s exceeded``; None otherwise."""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    layers: dict[str, str] = field(default_factory=dict)
    """The isolation layers that took effect, as the child reported them."""
    missing: dict[str, str] = field(default_factory=dict)
    """Layers not in place (only a best-effort run gets this far with any), and why."""
    duration_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.limit is None

    def report(self) -> str:
        """What the model reads: the outcome first, then the output."""
        lines = []
        if self.limit is not None:
            killed = self.exit_code is None or self.exit_code < 0
            lines.append(f"{'killed' if killed else 'stopped'}: {self.limit}")
        elif self.exit_code != 0:
            lines.append(f"exit status {self.exit_code}")
        if self.stdout:
            lines.append("--- stdout ---" if lines or self.stderr else "")
            lines.append(self.stdout + ("\n[stdout truncated]" if self.stdout_truncated else ""))
        if self.stderr:
            lines.append("--- stderr ---")
            lines.append(self.stderr + ("\n[stderr truncated]" if self.stderr_truncated else ""))
        return "\n".join(line for line in lines if line != "").strip() or "(no output)"


# Rules for the seccomp filter (default: allow). Each denial answers EPERM (clone3: ENOSYS, so
# the C library falls back to clone, which is checked), and the guard has usually said why first.
_DENIED_SYSCALLS = (
    # no new programs or processes (clone is checked below: threads only)
    "execve", "execveat", "fork", "vfork",
    # nothing aimed at other processes
    "ptrace", "process_vm_readv", "process_vm_writev", "process_madvise", "process_mrelease",
    "kcmp", "pidfd_open", "pidfd_getfd", "pidfd_send_signal", "tkill",
    # no namespaces, mounts or root changes
    "unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "fsopen", "fsconfig",
    "fsmount", "fspick", "move_mount", "open_tree", "mount_setattr",
    # kernel interfaces with a history of escapes, or no use to a program
    "keyctl", "add_key", "request_key", "bpf", "perf_event_open", "userfaultfd",
    "io_uring_setup", "io_uring_enter", "io_uring_register", "name_to_handle_at",
    "open_by_handle_at", "personality", "acct", "swapon", "swapoff", "reboot", "syslog",
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load",
)
_SIGNAL_SYSCALLS = ("kill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo")
_CLONE_THREAD = 0x00010000
_CLONE_NAMESPACES = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000,
                     0x40000000)
_PR_SET_PDEATHSIG = 1


def _build_seccomp_program(highest_signal_target: int) -> bytes:
    """The BPF program, from libseccomp. Signals may reach pids up to ``highest_signal_target``
    (0 is the caller's own process group): in its PID namespace the program is pid 2 under a
    waiting pid 1; outside one, only its own group."""
    import pyseccomp as seccomp  # noqa: PLC0415 - loads libseccomp; only sandboxes need it

    denied = seccomp.ERRNO(1)
    rules = seccomp.SyscallFilter(seccomp.ALLOW)

    def deny(name: str, *args: Any, action: int = denied) -> None:
        try:
            rules.add_rule(action, name, *args)
        except (OSError, ValueError) as error:
            if "clone" in name or name in ("execve", "ptrace", "unshare", "mount", "kill"):
                raise  # the essential rules must exist on every architecture
            logger.debug("seccomp: no rule for %s here (%s)", name, error)

    for name in _DENIED_SYSCALLS:
        deny(name)
    deny("clone3", action=seccomp.ERRNO(38))
    deny("clone", seccomp.Arg(0, seccomp.MASKED_EQ, _CLONE_THREAD, 0))
    for flag in _CLONE_NAMESPACES:
        deny("clone", seccomp.Arg(0, seccomp.MASKED_EQ, flag, flag))
    deny("prlimit64", seccomp.Arg(0, seccomp.NE, 0))
    deny("prctl", seccomp.Arg(0, seccomp.MASKED_EQ, 0xFFFFFFFF, _PR_SET_PDEATHSIG))
    for name in _SIGNAL_SYSCALLS:
        deny(name, seccomp.Arg(0, seccomp.GT, highest_signal_target))
    with tempfile.TemporaryFile() as exported:
        rules.export_bpf(exported)
        exported.seek(0)
        return exported.read()


@functools.cache
def seccomp_programs() -> dict[str, str] | str:
    """Both variants of the filter, base64 for the child's JSON; or why there is none."""
    try:
        return {
            "pid_namespace": base64.b64encode(_build_seccomp_program(2)).decode(),
            "plain": base64.b64encode(_build_seccomp_program(0)).decode(),
        }
    except (ImportError, OSError, RuntimeError, ValueError) as error:
        return f"no seccomp filter: libseccomp is not usable ({error})"


def _make_tree_removable(path: str) -> None:
    for root, dirs, _ in os.walk(path):
        for name in dirs:
            full = os.path.join(root, name)
            try:
                if not os.path.islink(full):
                    os.chmod(full, stat.S_IRWXU)
            except OSError:
                pass


def remove_scratch(path: str) -> None:
    """Delete a host scratch directory whatever the program did to its permissions."""
    try:
        os.chmod(path, stat.S_IRWXU)
    except OSError:
        return
    _make_tree_removable(path)
    shutil.rmtree(path, ignore_errors=True)
    if os.path.exists(path):
        logger.warning("sandbox: could not remove scratch directory %s", path)


def _base_dir() -> str:
    return os.environ.get("KAGENT_SANDBOX_DIR") or tempfile.gettempdir()


async def run_python(
    code: str,
    limits: SandboxLimits | None = None,
    *,
    isolation: Isolation = "strict",
    layers: SandboxLayers | None = None,
    files: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
    python: str | None = None,
) -> SandboxResult:
    """Run ``code`` in a fresh sandbox and return what it printed and how it ended.

    ``files`` are written into the scratch directory first (name → text); ``env`` adds
    variables to the scrubbed environment (the code tool passes ``TRACEPARENT`` this way).
    Raises :class:`SandboxUnavailable` when a strict sandbox cannot have every layer.
    """
    limits = limits or SandboxLimits()
    layers = layers or SandboxLayers()
    strict = isolation == "strict"
    programs = seccomp_programs() if layers.seccomp else None
    if strict and not isinstance(programs, dict):
        raise SandboxUnavailable({"seccomp": programs or "disabled"})
    all_files = {**(files or {}), "main.py": code}
    for name in all_files:
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,100}", name) or name in (".", ".."):
            raise ValueError(f"file name {name!r} is not allowed: use a plain file name")
    host_scratch = None
    if not strict:
        # Only a run that may lack the mount layer needs a directory on the host.
        host_scratch = os.path.realpath(tempfile.mkdtemp(prefix="kagent-sandbox-",
                                                         dir=_base_dir()))
        os.chmod(host_scratch, 0o700)
    try:
        config = {
            "parent": os.getpid(),
            "strict": strict,
            "layers": {"namespaces": layers.namespaces, "mount": layers.mount,
                       "landlock": layers.landlock, "seccomp": layers.seccomp,
                       "guard": layers.guard},
            "base": _base_dir(),
            "host_scratch": host_scratch,
            "scratch_bytes": int(limits.scratch_bytes),
            "scratch_inodes": int(limits.scratch_inodes),
            "read_dirs": list(SYSTEM_LIBRARY_DIRS),
            "read_files": list(READ_FILES),
            "rw_files": list(READ_WRITE_FILES),
            "seccomp": programs if isinstance(programs, dict) else None,
            "seccomp_error": programs if isinstance(programs, str) else "disabled",
            "limits": {
                "cpu_seconds": int(limits.cpu_seconds),
                "memory_bytes": int(limits.memory_bytes),
                "file_size_bytes": int(limits.file_size_bytes),
                "open_files": int(limits.open_files),
                "threads": int(limits.threads),
            },
            "main": "main.py",
            "code": code,
            "files": all_files,
        }
        # Scrubbed: nothing of the agent's own environment (its API keys) is passed on. The
        # child points HOME and TMPDIR at the scratch directory.
        environment = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "TZ": "UTC",
            **(env or {}),
        }
        return await _run(python or sys.executable, config, environment, limits)
    finally:
        if host_scratch is not None:
            remove_scratch(host_scratch)


async def _pipe_reader(fd: int) -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader),
                                 os.fdopen(fd, "rb", buffering=0))
    return reader


@dataclass
class _Capture:
    """Output kept so far: still there when the reader is cancelled at the deadline."""

    cap: int
    kept: bytearray = field(default_factory=bytearray)
    truncated: bool = False

    async def read(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(65536):
            room = self.cap - len(self.kept)
            if room > 0:
                self.kept += chunk[:room]
            if len(chunk) > max(room, 0):
                self.truncated = True


async def _read_status(stream: asyncio.StreamReader) -> list[dict[str, Any]]:
    events = []
    while len(events) < 16 and (line := await stream.readline()):
        try:
            events.append(json.loads(line))
        except ValueError:
            break
    return events


async def _run(python: str, config: dict[str, Any], environment: dict[str, str],
               limits: SandboxLimits) -> SandboxResult:
    started = time.monotonic()
    status_read, status_write = os.pipe()
    config["status_fd"] = status_write
    payload = json.dumps(config).encode()
    if len(payload) > MAX_PROGRAM_BYTES + 256 * 1024:
        os.close(status_read)
        os.close(status_write)
        raise ValueError(f"the program and its files are too large "
                         f"(at most {MAX_PROGRAM_BYTES // 1024} KiB)")
    try:
        process = await asyncio.create_subprocess_exec(
            python, "-I", "-S", "-B", "-c", _CHILD_SOURCE,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd="/",
            env=environment,
            start_new_session=True,
            pass_fds=(status_write,),
        )
    finally:
        os.close(status_write)
    status_stream = await _pipe_reader(status_read)
    assert process.stdin is not None and process.stdout is not None and process.stderr is not None
    out, err = _Capture(limits.output_bytes), _Capture(limits.output_bytes)
    events: list[dict[str, Any]] = []

    async def read_status() -> None:
        events.extend(await _read_status(status_stream))

    readers = asyncio.gather(out.read(process.stdout), err.read(process.stderr), read_status())
    timed_out = False
    try:
        # One deadline for everything: a program that closes its output and keeps running is
        # still stopped at the wall-clock limit.
        async with asyncio.timeout(limits.wall_seconds):
            try:
                process.stdin.write(payload)
                await process.stdin.drain()
                process.stdin.close()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the child died first: its status and stderr say why
            await asyncio.shield(readers)
            await process.wait()
    except TimeoutError:
        timed_out = True
        _kill(process)
        try:
            await asyncio.wait_for(readers, 5)
        except TimeoutError:  # something outside the sandbox still holds the pipes
            out.truncated = err.truncated = True
        await process.wait()
    except BaseException:
        _kill(process)
        readers.cancel()
        await process.wait()
        raise
    return _result(process.returncode, out, err, events, limits, timed_out,
                   time.monotonic() - started)


def _kill(process: asyncio.subprocess.Process) -> None:
    """Kill the child (the monitor of a PID namespace: its pid 1 dies with it, and with pid 1
    every process in the namespace) and, without a namespace, its session."""
    if process.returncode is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGKILL)  # not yet reaped: the group id is still ours
    except (ProcessLookupError, PermissionError):
        pass
    try:
        process.kill()
    except ProcessLookupError:
        pass


def _result(returncode: int | None, out: _Capture, err: _Capture,
            events: list[dict[str, Any]], limits: SandboxLimits, timed_out: bool,
            duration: float) -> SandboxResult:
    by_kind = {e.get("event"): e for e in events if isinstance(e, dict)}
    if "refused" in by_kind:
        refused = by_kind["refused"]
        raise SandboxUnavailable(refused.get("missing") or {}, refused.get("layers"))
    ready = by_kind.get("ready")
    if ready is None and not timed_out:
        tail = bytes(err.kept).decode("utf-8", "replace")[-1000:].strip()
        raise SandboxUnavailable({"start": f"the sandbox failed before the program ran "
                                           f"(exit {returncode}): {tail or 'no output'}"})
    exit_code: int | None = returncode
    if "exit" in by_kind:
        ending = by_kind["exit"]
        exit_code = -int(ending["signal"]) if "signal" in ending else int(ending.get("code", 0))
    if timed_out:
        exit_code = -signal.SIGKILL
    result = SandboxResult(
        exit_code=exit_code,
        stdout=bytes(out.kept).decode("utf-8", "replace"),
        stderr=bytes(err.kept).decode("utf-8", "replace"),
        stdout_truncated=out.truncated,
        stderr_truncated=err.truncated,
        layers=dict((ready or {}).get("layers") or {}),
        missing=dict((ready or {}).get("missing") or {}),
        duration_seconds=duration,
    )
    result.limit = _limit_hit(result, limits, timed_out)
    return result


def _limit_hit(result: SandboxResult, limits: SandboxLimits, timed_out: bool) -> str | None:
    code = result.exit_code
    if timed_out:
        return f"wall-clock limit {_format_seconds(limits.wall_seconds)} exceeded"
    if code == -signal.SIGXCPU:
        return f"CPU time limit {limits.cpu_seconds}s exceeded"
    if code == -signal.SIGKILL:
        # The hard CPU limit (a second after the soft one) or the kernel's OOM killer.
        return f"CPU time limit {limits.cpu_seconds}s or memory limit {limits.memory_text} exceeded"
    tail = result.stderr[-2000:]
    if code not in (0, None) and ("MemoryError" in tail or "Cannot allocate memory" in tail):
        return f"memory limit {limits.memory_text} exceeded"
    if code not in (0, None) and "No space left on device" in tail:
        return f"scratch space {limits.scratch_bytes // 1024**2}Mi is full"
    if code not in (0, None) and "File too large" in tail:
        return f"file size limit {limits.file_size_bytes // 1024**2}Mi exceeded"
    if code == -signal.SIGXFSZ:
        return f"file size limit {limits.file_size_bytes // 1024**2}Mi exceeded"
    return None


class Sandbox:
    """The runs of one code Tool in this agent: its limits, its isolation setting, and a cap on
    how many run at once (each holds up to its memory limit plus its scratch size of the pod's
    memory). A run waits for a free slot at most its own wall-clock limit."""

    def __init__(self, limits: SandboxLimits, *, isolation: Isolation = "strict",
                 max_concurrent: int = 4, python: str | None = None):
        self.limits = limits
        self.isolation = isolation
        self.max_concurrent = max_concurrent
        self.python = python
        self._slots = asyncio.Semaphore(max_concurrent)

    async def run(self, code: str, *, files: Mapping[str, str] | None = None,
                  env: Mapping[str, str] | None = None) -> SandboxResult:
        try:
            async with asyncio.timeout(self.limits.wall_seconds):
                await self._slots.acquire()
        except TimeoutError:
            raise SandboxBusy(f"the sandbox is busy: {self.max_concurrent} programs were running "
                              f"for {_format_seconds(self.limits.wall_seconds)}; try again later"
                              ) from None
        try:
            try:
                layers = SandboxLayers.from_environment()
            except ValueError as error:
                raise SandboxUnavailable({"configuration": str(error)}) from None
            return await run_python(code, self.limits, isolation=self.isolation, layers=layers,
                                    files=files, env=env, python=self.python)
        finally:
            self._slots.release()
