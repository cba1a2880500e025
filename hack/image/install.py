"""Install Kagent into an image's root file system.

Runs *inside* that root file system, with its own Python (mmdebstrap's chroot in
hack/image/build.py, or the Dockerfile's build stage), so both builds install the same way:
``python3 install.py WHEELS`` where WHEELS holds the Kagent wheel, every wheel of
requirements.lock and the pip wheel of tools.lock. Offline: nothing is downloaded here, and
every dependency is checked against the lock's hashes. Standard library only.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run(*argv: str | Path, env: dict[str, str] | None = None) -> None:
    subprocess.run([str(a) for a in argv], check=True, env=env)


def add_user(spec: dict) -> None:
    """The image's non-root user, appended to /etc/passwd and /etc/group (no shadow tools in
    a minimal root file system), with a home folder it owns."""
    user = spec["user"]
    passwd, group = Path("/etc/passwd"), Path("/etc/group")
    if f"\n{user['name']}:" not in "\n" + passwd.read_text():
        with passwd.open("a") as handle:
            handle.write(f"{user['name']}:x:{user['uid']}:{user['gid']}:Kagent:{user['home']}:"
                         "/usr/sbin/nologin\n")
    if f"\n{user['name']}:" not in "\n" + group.read_text():
        with group.open("a") as handle:
            handle.write(f"{user['name']}:x:{user['gid']}:\n")
    home = Path(user["home"])
    home.mkdir(parents=True, exist_ok=True)
    os.chown(home, user["uid"], user["gid"])
    home.chmod(0o755)


def prune(site_packages: Path, rules: dict[str, list[str]]) -> None:
    """Delete what a folder of an installed package holds except the names matching ``keep``
    (image.json's ``prune``: data Kagent never reads)."""
    for folder, keep in rules.items():
        if folder.startswith("_"):
            continue
        target = site_packages / folder
        if not target.is_dir():
            sys.exit(f"prune: {target} does not exist (image.json names a folder the locked "
                     "packages no longer have)")
        for entry in target.iterdir():
            if any(fnmatch.fnmatch(entry.name, pattern) for pattern in keep):
                continue
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()


IMPORTED_FILES = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
print(json.dumps(sorted({m.__file__ for m in list(sys.modules.values())
                         if (getattr(m, "__file__", None) or "").endswith(".py")})))
"""


def compile_bytecode(python: Path, venv: Path, imports: list[str], env: dict[str, str]) -> None:
    """Byte code, compiled once here (a read-only root file system cannot cache it at run time),
    for every module that ``imports`` load and all of Kagent's own. Hash-based .pyc files: their
    bytes do not depend on file times."""
    quiet = {**env, "PYTHONDONTWRITEBYTECODE": "1", "HOME": "/nonexistent"}
    listed = subprocess.run([python, "-c", IMPORTED_FILES, *imports], env=quiet, check=True,
                            stdout=subprocess.PIPE, text=True).stdout  # errors go to stderr
    files = {Path(f) for f in json.loads(listed) if Path(f).is_relative_to(venv)}
    files |= set(next((venv / "lib").glob("python3*/site-packages")).glob("kagent/**/*.py"))
    script = ("import py_compile, sys\n"
              "for path in sys.argv[1:]:\n"
              "    py_compile.compile(path, doraise=True,\n"
              "        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)\n")
    ordered = sorted(str(f) for f in files)
    for start in range(0, len(ordered), 500):
        run(python, "-c", script, *ordered[start:start + 500], env=env)


def main(wheels: Path) -> None:
    spec = json.loads((HERE / "image.json").read_text())
    venv = Path(spec["venv"])
    python = venv / "bin" / "python"
    pip_wheels = sorted(wheels.glob("pip-*.whl"))
    kagent_wheels = sorted(wheels.glob("kagent-*.whl"))
    if len(pip_wheels) != 1 or len(kagent_wheels) != 1:
        sys.exit(f"{wheels} must hold exactly one pip wheel and one kagent wheel")
    # Same bytes from the same inputs: hashed byte code, a fixed hash seed (set order in
    # marshalled constants), and SOURCE_DATE_EPOCH for anything that stamps times.
    env = {**os.environ, "PYTHONHASHSEED": "0", "PIP_NO_CACHE_DIR": "1",
           "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_ROOT_USER_ACTION": "ignore"}
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    pip = [python, pip_wheels[0] / "pip"]
    common = ["install", "--no-index", "--find-links", wheels, "--no-deps", "--no-compile"]
    run(*pip, *common, "--require-hashes", "-r", HERE / "requirements.lock", env=env)
    run(*pip, *common, kagent_wheels[0], env=env)
    run(*pip, "check", env=env)
    site_packages = next((venv / "lib").glob("python3*/site-packages"))
    prune(site_packages, spec.get("prune", {}))
    compile_bytecode(python, venv, spec.get("bytecode", {}).get("imports", []), env)
    for leftover in (venv / "bin").glob("[Aa]ctivate*"):
        leftover.unlink()  # shell activation scripts: nothing in a container sources them
    shutil.rmtree(venv / "include", ignore_errors=True)
    add_user(spec)


if __name__ == "__main__":
    if sys.argv[1:] == ["--user-only"]:
        # The Dockerfile builds the venv in a build stage; its final stage needs only the user.
        add_user(json.loads((HERE / "image.json").read_text()))
    elif len(sys.argv) == 2:
        main(Path(sys.argv[1]))
    else:
        sys.exit("usage: python3 install.py WHEELS_FOLDER | --user-only")
