"""Running model-written Python where it can do no harm.

Each run gets a fresh scratch directory and a separate interpreter (``python -I -S -B``: no
site-packages, no environment variables read, no bytecode written) with a minimal environment,
its own session (so the whole process group can be killed), and a wall-clock deadline enforced
here. Inside, :mod:`kagent.runtime.tools._sandbox_child` applies the kernel-level isolation
(network namespace, Landlock, no capabilities), the resource limits and an audit hook before the
model's code starts; see that module for what each layer stops.

The agent pod runs as non-root, so nothing here needs privileges: where a kernel feature is
missing the run still goes ahead with the remaining layers, and the result says which were active.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kagent.api.base import parse_duration
from kagent.api.tool import CodeTool

_CHILD_SOURCE = (Path(__file__).parent / "_sandbox_child.py").read_text()
_STATUS_MARKER = "\x00kagent-sandbox:"
_MEMORY_UNITS = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}

SYSTEM_LIBRARY_DIRS = ("/lib", "/lib64", "/usr/lib", "/usr/lib64", "/usr/local/lib",
                       "/usr/share/zoneinfo")
"""Readable (never writable) inside the sandbox: extension modules load shared libraries."""
DEVICE_FILES_READ = ("/dev/urandom", "/dev/random")
DEVICE_FILES_READ_WRITE = ("/dev/null", "/dev/zero")


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
    file_size_bytes: int = 16 * 1024**2
    open_files: int = 64
    processes: int = 256
    """RLIMIT_NPROC counts every task of the user, so this is only a backstop against fork
    bombs (process creation is refused by the audit hook anyway); root is exempt from it."""
    output_bytes: int = 64 * 1024
    """How much of stdout and of stderr is kept; the rest is read and dropped."""

    @classmethod
    def from_spec(cls, spec: CodeTool) -> SandboxLimits:
        return cls(
            wall_seconds=parse_duration(spec.timeout).total_seconds(),
            cpu_seconds=max(1, math.ceil(parse_duration(spec.cpu_time).total_seconds())),
            memory_bytes=parse_memory(spec.memory),
            memory_text=spec.memory,
        )


@dataclass(frozen=True)
class SandboxLayers:
    """Which isolation layers to apply; all by default. Turning one off is for tests that show
    each layer holds on its own, and for diagnosing a kernel that refuses one."""

    namespaces: bool = True
    landlock: bool = True
    guard: bool = True


@dataclass
class SandboxResult:
    exit_code: int | None
    """The process's exit status; negative for a signal, as in :mod:`subprocess`."""
    stdout: str
    stderr: str
    limit: str | None = None
    """Which limit stopped the run, e.g. ``CPU time limit 10s exceeded``; None otherwise."""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    layers: dict[str, str] = field(default_factory=dict)
    """The isolation layers that took effect, as the child reported them."""
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


async def _read_capped(stream: asyncio.StreamReader, cap: int) -> tuple[bytes, bool]:
    kept = bytearray()
    truncated = False
    while chunk := await stream.read(65536):
        room = cap - len(kept)
        if room > 0:
            kept += chunk[:room]
        if len(chunk) > max(room, 0):
            truncated = True
    return bytes(kept), truncated


def _split_status(stderr: bytes) -> tuple[dict[str, str], bytes]:
    marker = _STATUS_MARKER.encode()
    if not stderr.startswith(marker):
        return {}, stderr
    line, _, rest = stderr.partition(b"\n")
    try:
        return json.loads(line[len(marker):]), rest
    except ValueError:
        return {}, rest


def _sandbox_root() -> str:
    return os.environ.get("KAGENT_SANDBOX_DIR") or tempfile.gettempdir()


async def run_python(
    code: str,
    limits: SandboxLimits | None = None,
    *,
    layers: SandboxLayers | None = None,
    files: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
    python: str | None = None,
) -> SandboxResult:
    """Run ``code`` in a fresh sandbox and return what it printed and how it ended.

    ``files`` are written into the scratch directory first (name → text); ``env`` adds
    variables to the minimal environment (the code tool passes ``TRACEPARENT`` this way).
    The scratch directory is deleted afterwards.
    """
    limits = limits or SandboxLimits()
    layers = layers or SandboxLayers()
    scratch = os.path.realpath(tempfile.mkdtemp(prefix="kagent-sandbox-", dir=_sandbox_root()))
    try:
        os.chmod(scratch, 0o700)
        for name, text in (files or {}).items():
            target = Path(scratch, name).resolve()
            if not str(target).startswith(scratch + os.sep):
                raise ValueError(f"file name {name!r} leaves the scratch directory")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        Path(scratch, "main.py").write_text(code)
        config = {
            "scratch": scratch,
            "main": "main.py",
            "read_dirs": [os.path.join(sys.base_prefix, "lib"), *SYSTEM_LIBRARY_DIRS],
            "read_files": list(DEVICE_FILES_READ),
            "rw_files": list(DEVICE_FILES_READ_WRITE),
            "layers": {"namespaces": layers.namespaces, "landlock": layers.landlock,
                       "guard": layers.guard},
            "limits": {
                "cpu_seconds": int(limits.cpu_seconds),
                "memory_bytes": int(limits.memory_bytes),
                "file_size_bytes": int(limits.file_size_bytes),
                "open_files": int(limits.open_files),
                "processes": int(limits.processes),
            },
        }
        environment = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": scratch,
            "TMPDIR": scratch,
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "TZ": "UTC",
            **(env or {}),
        }
        return await _run(python or sys.executable, config, environment, limits, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


async def _run(python: str, config: dict[str, Any], environment: dict[str, str],
               limits: SandboxLimits, scratch: str) -> SandboxResult:
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        python, "-I", "-S", "-B", "-c", _CHILD_SOURCE, json.dumps(config),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=scratch,
        env=environment,
        start_new_session=True,
    )
    assert process.stdout is not None and process.stderr is not None
    # The status line comes before the model's output, so stderr keeps room for it.
    readers = asyncio.gather(
        _read_capped(process.stdout, limits.output_bytes),
        _read_capped(process.stderr, limits.output_bytes + 4096),
    )
    timed_out = False
    try:
        # One deadline for both: a program that closes its output and keeps running is still
        # stopped at the wall-clock limit. The readers are shielded so output read before the
        # deadline is kept.
        async with asyncio.timeout(limits.wall_seconds):
            (out, out_cut), (err, err_cut) = await asyncio.shield(readers)
            await process.wait()
    except TimeoutError:
        timed_out = True
        # Killed while the group leader is not yet reaped, so the group id cannot be reused.
        _kill_group(process.pid)
        try:
            (out, out_cut), (err, err_cut) = await asyncio.wait_for(readers, 5)
        except TimeoutError:  # something outside the group still holds the pipes
            (out, out_cut), (err, err_cut) = (b"", True), (b"", True)
        await process.wait()
    except BaseException:
        _kill_group(process.pid)
        readers.cancel()
        await process.wait()
        raise
    status, err = _split_status(err)
    if len(err) > limits.output_bytes:
        err, err_cut = err[: limits.output_bytes], True
    result = SandboxResult(
        exit_code=process.returncode,
        stdout=out.decode("utf-8", "replace"),
        stderr=err.decode("utf-8", "replace"),
        stdout_truncated=out_cut,
        stderr_truncated=err_cut,
        layers=status,
        duration_seconds=time.monotonic() - started,
    )
    result.limit = _limit_hit(result, limits, timed_out)
    return result


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


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
    if code not in (0, None) and "File too large" in tail:
        return f"file size limit {limits.file_size_bytes // 1024**2}Mi exceeded"
    if code == -signal.SIGXFSZ:
        return f"file size limit {limits.file_size_bytes // 1024**2}Mi exceeded"
    return None
