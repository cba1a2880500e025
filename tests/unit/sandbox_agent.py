"""Stands in for the agent server in the sandbox escape tests: one process, running as a
non-root user like the agent pod (uid 65532), that runs one sandboxed program and reports the
result — and its own state afterwards — as JSON on stdout.

Started as root (the tests run as root here), it loads what it needs, then becomes uid 65532
for good and makes itself dumpable again, so that its /proc files are as readable to a process
of its own uid as an agent's are. The program's text may name ``AGENT_PID``: it is replaced by
this process's pid, the target of the escapes.

Input: one JSON request a line on stdin (code, isolation, layers as SandboxLayers fields,
limits as SandboxLimits fields, env); output: one JSON report a line on stdout, until stdin ends.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import resource
import shutil
import sys
from typing import Any

from kagent.runtime.tools.sandbox import (
    SandboxLayers,
    SandboxLimits,
    SandboxUnavailable,
    run_python,
    seccomp_programs,
)

AGENT_UID = 65532
PR_SET_DUMPABLE = 4


def become_agent_user() -> None:
    if os.getuid() != 0:
        return
    os.setgroups([])
    os.setresgid(AGENT_UID, AGENT_UID, AGENT_UID)
    os.setresuid(AGENT_UID, AGENT_UID, AGENT_UID)
    ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)


def sandbox_python() -> str:
    """This interpreter, or the same version elsewhere when this one is out of reach of the
    agent user (an interpreter under root's home directory)."""
    if os.access(sys.executable, os.X_OK):
        return sys.executable
    name = f"python{sys.version_info.major}.{sys.version_info.minor}"
    found = shutil.which(name, path="/usr/local/bin:/usr/bin:/bin")
    if found is None:
        print(json.dumps({"skip": f"no {name} the agent user may run"}))
        sys.exit(0)
    return found


async def serve(request: dict[str, Any], python: str) -> dict[str, Any]:
    code = request["code"].replace("AGENT_PID", str(os.getpid()))
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    report: dict[str, Any] = {"agent_pid": os.getpid(), "agent_uid": os.getuid()}
    try:
        result = await run_python(
            code, SandboxLimits(**request.get("limits", {})),
            isolation=request.get("isolation", "strict"),
            layers=SandboxLayers(**request.get("layers", {})),
            env=request.get("env"), python=python)
    except SandboxUnavailable as refused:
        report["refused"] = refused.missing
    else:
        report.update(exit_code=result.exit_code, stdout=result.stdout, stderr=result.stderr,
                      limit=result.limit, layers=result.layers, missing=result.missing)
    report["nofile_before"] = list(before)
    report["nofile_after"] = list(resource.getrlimit(resource.RLIMIT_NOFILE))
    return report


async def main() -> None:
    seccomp_programs()  # built once, like the agent does before its first run
    become_agent_user()
    os.chdir("/")
    python = sandbox_python()
    for line in sys.stdin:
        print(json.dumps(await serve(json.loads(line), python)), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
