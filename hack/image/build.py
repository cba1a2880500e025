"""Build the Kagent image from package registries alone: no container engine, no base image.

    python hack/image/build.py [--out dist] [--tag 0.1.0] [--ca-bundle FILE] [--no-podman]

1. the project's wheel, and every dependency wheel pinned by hash in requirements.lock;
2. a minimal Debian root file system (``mmdebstrap --variant=essential``) with Python, into
   which install.py installs those wheels offline, as the Dockerfile does;
3. three layers (Debian + Python, the dependencies, Kagent itself) packed reproducibly by
   :mod:`kagent.local.oci` into ``dist/kagent-<version>.oci.tar``, with an SPDX SBOM and a build
   report beside it; with podman on PATH, also loaded as a local image.

The same commit gives the same layers: every time is clamped to the commit's time
(SOURCE_DATE_EPOCH), entries are sorted and owners numeric. Debian's packages come from the
mirror's state on the build day (the SBOM lists their versions); Python's come from the lock.
``--ca-bundle`` names extra certificate authorities the build machine's network needs to reach
the registries; they are used for downloading only and never enter the image.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
HERE = REPO / "hack" / "image"
sys.path.insert(0, str(REPO))

from hack.image.sbom import spdx_document
from kagent.local import oci
from kagent.local.binaries import cache_root
from kagent.local.nodehost import mounts_below

MERGED_USR_HOOKS = Path("/usr/share/mmdebstrap/hooks/merged-usr")
# Documentation, manuals and translations are of no use in a container; copyright files stay.
DPKG_EXCLUDES = (
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/lintian/*",
)


def say(message: str) -> None:
    print(f"[image] {message}", file=sys.stderr, flush=True)


def run(*argv: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    result = subprocess.run([str(a) for a in argv], env=env, cwd=cwd, check=False,
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(str(a) for a in argv[:3])} … failed ({result.returncode}):\n"
                         f"{result.stderr[-6000:]}")
    return result.stdout


def spec() -> dict[str, Any]:
    return json.loads((HERE / "image.json").read_text())


def project_version() -> str:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def commit_epoch() -> int:
    """SOURCE_DATE_EPOCH if set, else the time of the checked-out commit."""
    if os.environ.get("SOURCE_DATE_EPOCH"):
        return int(os.environ["SOURCE_DATE_EPOCH"])
    out = subprocess.run(["git", "log", "-1", "--format=%ct"], cwd=REPO, capture_output=True,
                         text=True, check=False)
    return int(out.stdout.strip()) if out.returncode == 0 and out.stdout.strip() else 0


def commit_id() -> str:
    out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                         check=False)
    return out.stdout.strip() if out.returncode == 0 else "unknown"


IMAGE_SOURCES = ("pyproject.toml", "README.md", "kagent", "hack/image")


def source_files(*paths: str) -> list[str]:
    """The files under ``paths`` as the working tree has them: tracked ones and new ones git
    does not ignore (never build output, caches or virtualenvs)."""
    listed = run("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--",
                 *paths, cwd=REPO).split("\0")
    return sorted(relative for relative in listed if relative and (REPO / relative).is_file())


def source_digest() -> str:
    """A digest of every file the image is built from, as it is on disk now (edits not yet
    committed included): when it matches the last build's, the image is up to date."""
    digest = hashlib.sha256()
    for relative in source_files(*IMAGE_SOURCES):
        path = REPO / relative
        if path.is_file():
            digest.update(relative.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def up_to_date(report_file: Path, archive: Path, reference: str) -> bool:
    try:
        report = json.loads(report_file.read_text())
    except (OSError, ValueError):
        return False
    return (archive.is_file() and report.get("reference") == reference
            and report.get("source_digest") == source_digest())


def pip_env(ca_bundle: Path | None, epoch: int) -> dict[str, str]:
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(epoch), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    # A local wheelhouse may hold rebuilt wheels whose hashes differ from the lock's.
    env.pop("PIP_FIND_LINKS", None)
    if ca_bundle is not None:
        env["PIP_CERT"] = str(ca_bundle)
    return env


def gather_wheels(wheels: Path, ca_bundle: Path | None, epoch: int) -> None:
    """The project's wheel (rebuilt every time) and the locked wheels (downloaded once)."""
    wheels.mkdir(parents=True, exist_ok=True)
    for old in wheels.glob("kagent-*.whl"):
        old.unlink()
    env = pip_env(ca_bundle, epoch)
    python = sys.executable
    with tempfile.TemporaryDirectory(prefix="kagent-wheel-") as tmp:
        # Build from a copy of the tracked sources: no stray build/ or egg-info state leaks in.
        source = Path(tmp) / "src"
        for relative in source_files("pyproject.toml", "README.md", "kagent"):
            (source / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / relative, source / relative)
        run(python, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", wheels, source,
            env=env)
    for lock in ("requirements.lock", "tools.lock"):
        run(python, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
            "--require-hashes", "--dest", wheels, "-r", HERE / lock, env=env)


def host_sources(suite: str) -> list[str]:
    """The build machine's own Debian sources when it runs the same suite (they name the mirror
    its network reaches, updates and security included); otherwise mmdebstrap's default."""
    try:
        release = dict(line.split("=", 1) for line in
                       Path("/etc/os-release").read_text().splitlines() if "=" in line)
    except OSError:
        return []
    if release.get("VERSION_CODENAME", "").strip('"') != suite:
        return []
    deb822 = Path("/etc/apt/sources.list.d/debian.sources")
    if deb822.is_file():
        return [str(deb822)]
    classic = Path("/etc/apt/sources.list")
    return [str(classic)] if classic.is_file() and classic.read_text().strip() else []


def build_rootfs(rootfs: Path, wheels: Path, apt_cache: Path, epoch: int,
                 ca_bundle: Path | None, mirrors: list[str]) -> None:
    image = spec()
    if not shutil.which("mmdebstrap"):
        raise SystemExit("mmdebstrap is missing: run hack/container-deps.sh (or apt-get install "
                         "mmdebstrap)")
    if rootfs.exists():
        for point in mounts_below(rootfs):  # /proc, /sys, /dev of a build killed mid-way
            subprocess.run(["umount", "--lazy", point], check=False, capture_output=True)
        shutil.rmtree(rootfs)
    apt_cache.mkdir(parents=True, exist_ok=True)
    install = (
        'mkdir -p "$1/tmp/kagent-build" && '
        f'cp -r {wheels} "$1/tmp/kagent-build/wheels" && '
        f'cp {HERE}/install.py {HERE}/image.json {HERE}/requirements.lock "$1/tmp/kagent-build/" && '
        f'chroot "$1" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin SOURCE_DATE_EPOCH={epoch} '
        'python3 /tmp/kagent-build/install.py /tmp/kagent-build/wheels && '
        'rm -rf "$1/tmp/kagent-build" && '
        f'{HERE}/strip.sh "$1{image["venv"]}"'
    )
    argv: list[str] = [
        "mmdebstrap", "--variant=essential", "--mode=root", "--format=directory",
        f"--include={','.join(image['debian']['packages'])}",
        f"--hook-dir={MERGED_USR_HOOKS}",
        "--aptopt=Acquire::Languages \"none\"",
        *(f"--dpkgopt={option}" for option in DPKG_EXCLUDES),
        # Keep downloaded packages between builds (a warm build downloads nothing).
        "--skip=essential/unlink", "--skip=download/empty",
        '--setup-hook=mkdir -p "$1/var/cache/apt/archives/"',
        f"--setup-hook=sync-in {apt_cache} /var/cache/apt/archives/",
        f"--customize-hook=sync-out /var/cache/apt/archives {apt_cache}",
        f"--customize-hook={install}",
        # Files the build host would otherwise leak in; the runtime mounts its own.
        ('--customize-hook=: > "$1/etc/resolv.conf"; echo kagent > "$1/etc/hostname"; '
         'rm -f "$1/var/cache/ldconfig/aux-cache"'),
    ]
    if ca_bundle is not None:
        argv.append(f"--aptopt=Acquire::https::CaInfo \"{ca_bundle}\"")
    argv += [image["debian"]["suite"], str(rootfs), *mirrors]
    run(*argv, env={**os.environ, "SOURCE_DATE_EPOCH": str(epoch)})


# What mmdebstrap's own apt run leaves in the root file system: its options (a CA bundle's path
# among them), the build machine's sources, the download cache with times and owners of the day.
# The image has no apt (the essential variant) to use any of it.
BUILD_LEFTOVERS = ("etc/apt/apt.conf.d/99mmdebstrap", "etc/apt/sources.list.d", "etc/apt/sources.list",
                   "var/cache/apt", "var/lib/apt")


def remove_build_leftovers(rootfs: Path) -> None:
    for relative in BUILD_LEFTOVERS:
        path = rootfs / relative
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def image_config(image: dict[str, Any], version: str, revision: str, epoch: int) -> oci.ImageConfig:
    user = image["user"]
    return oci.ImageConfig(
        entrypoint=tuple(image["entrypoint"]),
        cmd=tuple(image["cmd"]),
        env=tuple(f"{k}={v}" for k, v in image["env"].items()),
        user=f"{user['uid']}:{user['gid']}",
        working_dir=image["workdir"],
        labels={
            "org.opencontainers.image.title": "kagent",
            "org.opencontainers.image.description":
                "Kagent: AI agents as Kubernetes resources (controller and agent runtime)",
            "org.opencontainers.image.version": version,
            "org.opencontainers.image.revision": revision,
            "org.opencontainers.image.licenses": "Apache-2.0",
            "org.opencontainers.image.created": oci.rfc3339(epoch),
        },
    )


def layer_prefixes(image: dict[str, Any], rootfs: Path) -> list[tuple[str, list[str]]]:
    """Debian + Python at the bottom, the dependencies above, Kagent's own files on top (a new
    Kagent commit changes only the top layer)."""
    venv = image["venv"].lstrip("/")
    site = next((rootfs / venv / "lib").glob("python3*/site-packages")).relative_to(rootfs)
    dist_info = [p.relative_to(rootfs).as_posix() for p in (rootfs / site).glob("kagent-*.dist-info")]
    return [
        ("debian", [""]),
        ("dependencies", [venv]),
        ("kagent", [f"{site.as_posix()}/kagent", *dist_info, f"{venv}/bin/kagent"]),
    ]


def pack(rootfs: Path, blobs: Path, out: Path, reference: str, version: str, epoch: int
         ) -> oci.Image:
    image_spec = spec()
    names_and_prefixes = layer_prefixes(image_spec, rootfs)
    partitions = oci.split_tree(rootfs, [prefixes for _, prefixes in names_and_prefixes])
    if blobs.exists():
        shutil.rmtree(blobs)
    layers = [
        oci.write_layer(rootfs, paths, blobs, epoch=epoch, created_by=f"kagent image: {name}")
        for (name, _), paths in zip(names_and_prefixes, partitions, strict=True)
    ]
    image = oci.Image(layers=layers, config=image_config(image_spec, version, commit_id(), epoch),
                      epoch=epoch)
    image.write_archive(out, reference)
    return image


def why_not_buildable() -> str | None:
    """Why this machine cannot build the image, or None."""
    if os.geteuid() != 0:
        return "building the image's root file system needs root (mmdebstrap --mode=root)"
    if not shutil.which("mmdebstrap"):
        return "mmdebstrap is missing (hack/container-deps.sh installs it)"
    return None


def archive_path(tag: str = "", out: Path = REPO / "dist") -> Path:
    return out / f"kagent-{tag or project_version()}.oci.tar"


def ensure_built(*args: str) -> Path:
    """Build the image unless it is up to date (in a child process, as `make image` does) and
    return its archive; for tests, which skip first when :func:`why_not_buildable` says so."""
    result = subprocess.run([sys.executable, str(Path(__file__).resolve()), *args],
                            capture_output=True, text=True, check=False, timeout=3600)
    if result.returncode != 0:
        raise RuntimeError(f"the image build failed:\n{result.stdout[-3000:]}{result.stderr[-6000:]}")
    tag = next((a.split("=", 1)[1] for a in args if a.startswith("--tag=")), "")
    out = next((Path(a.split("=", 1)[1]) for a in args if a.startswith("--out=")), REPO / "dist")
    return archive_path(tag, out)


def podman_load(archive: Path) -> str | None:
    if not shutil.which("podman"):
        return None
    return run("podman", "load", "--quiet", "--input", archive).strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "dist", help="output folder")
    parser.add_argument("--work", type=Path, default=REPO / "build" / "image",
                        help="work folder: the root file system and the layers")
    parser.add_argument("--cache", type=Path, default=cache_root() / "image",
                        help="where downloads are kept between builds, shared by every checkout "
                             "(default: the kagent cache folder, as the node binaries)")
    parser.add_argument("--tag", default="", help="image tag (default: the project version)")
    parser.add_argument("--repository", default="", help="image repository (default: image.json)")
    parser.add_argument("--ca-bundle", type=Path, default=None,
                        help="CA bundle for downloads only (never copied into the image)")
    parser.add_argument("--mirror", action="append", default=[],
                        help="Debian mirror or sources file for mmdebstrap (repeatable)")
    parser.add_argument("--no-podman", action="store_true", help="do not load into podman")
    parser.add_argument("--force", action="store_true", help="rebuild even when up to date")
    parser.add_argument("--best-effort", action="store_true",
                        help="say why the image cannot be built here and exit 0 (make test: the "
                             "real-pod tests then skip with that reason)")
    args = parser.parse_args()
    problem = why_not_buildable()
    if problem is not None:
        if args.best_effort:
            say(f"not built: {problem}")
            return
        raise SystemExit(problem)
    ca_bundle = args.ca_bundle.resolve() if args.ca_bundle else None
    if ca_bundle is not None and not ca_bundle.is_file():
        raise SystemExit(f"--ca-bundle {ca_bundle}: no such file")
    version = project_version()
    tag = args.tag or version
    reference = f"{args.repository or spec()['repository']}:{tag}"
    oci.validate_reference(reference)
    work = args.work.resolve()
    out = args.out.resolve()
    work.mkdir(parents=True, exist_ok=True)
    with (work / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time in one work folder
        build(args, work, out, reference, version, tag, ca_bundle)


def build(args: argparse.Namespace, work: Path, out: Path, reference: str, version: str, tag: str,
          ca_bundle: Path | None) -> None:
    image_spec = spec()
    epoch = commit_epoch()
    archive = out / f"kagent-{tag}.oci.tar"
    report_file = out / f"kagent-{tag}.image.json"
    sources = source_digest()
    if not args.force and up_to_date(report_file, archive, reference):
        say(f"{reference} is up to date ({archive})")
        return
    began = time.monotonic()
    steps: dict[str, float] = {}

    def step(name: str, started: float) -> None:
        steps[name] = round(time.monotonic() - started, 1)
        say(f"{name}: {steps[name]}s")

    cache = args.cache.resolve()
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / ".lock").open("w") as cache_lock:
        fcntl.flock(cache_lock, fcntl.LOCK_EX)  # checkouts share it: one build at a time uses it
        t = time.monotonic()
        gather_wheels(cache / "wheels", ca_bundle, epoch)
        step("wheels", t)
        t = time.monotonic()
        mirrors = args.mirror or host_sources(image_spec["debian"]["suite"])
        build_rootfs(work / "rootfs", cache / "wheels", cache / "apt-cache", epoch, ca_bundle,
                     mirrors)
        remove_build_leftovers(work / "rootfs")
        step("root file system", t)
    t = time.monotonic()
    image = pack(work / "rootfs", work / "blobs", archive, reference, version, epoch)
    step("layers", t)
    sbom = out / f"kagent-{tag}.spdx.json"
    sbom.write_text(json.dumps(spdx_document(work / "rootfs", image_spec["venv"], reference,
                                             image.digest, epoch), indent=2, sort_keys=True) + "\n")
    t = time.monotonic()
    loaded = podman_load(archive) if not args.no_podman else None
    if loaded is not None:
        step("podman load", t)
    report = {
        "reference": reference,
        "digest": image.digest,
        "archive": archive.name,
        "archive_bytes": archive.stat().st_size,
        "compressed_layer_bytes": sum(layer.size for layer in image.layers),
        "unpacked_bytes": sum(layer.content_size for layer in image.layers),
        "uncompressed_layer_bytes": sum(layer.diff_size for layer in image.layers),
        "layers": [{"digest": layer.digest, "diff_id": layer.diff_id, "bytes": layer.size,
                    "unpacked_bytes": layer.content_size, "created_by": layer.created_by}
                   for layer in image.layers],
        "source_date_epoch": epoch,
        "source_digest": sources,
        "sbom": sbom.name,
        "seconds": dict(steps, total=round(time.monotonic() - began, 1)),
        "podman": loaded,
    }
    report_file.write_text(json.dumps(report, indent=2) + "\n")
    size_mb = report["unpacked_bytes"] / 1e6
    say(f"{reference} {image.digest}: {size_mb:.0f} MB unpacked, "
        f"{report['compressed_layer_bytes'] / 1e6:.0f} MB compressed, "
        f"{report['seconds']['total']}s → {archive}")


if __name__ == "__main__":
    main()
