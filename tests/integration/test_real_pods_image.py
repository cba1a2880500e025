"""The Kagent image built by `make image` (hack/image/build.py), run with podman: `kagent version`,
an agent and the controller, each from the image with a read-only root file system and a
non-root user; its settings match hack/image/image.json and the Dockerfile says the same; the
same commit builds the same layers, and certificate authorities given for the downloads stay out.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from hack.image import build as image_build
from kagent.kube.certs import make_ca
from kagent.local import oci
from kagent.local.controlplane import ControlPlane
from kagent.local.services import free_port
from kagent.mockllm import MockLLM
from tests.helpers import EXAMPLES, REAL_POD_TIER, REPO, documents, wait_for

# Building the image (when its sources changed) and starting many pods on a busy 2-core machine
# outlast the suite's 10-minute default; each wait inside still has its own, named bound.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(2400), REAL_POD_TIER]

SPEC = json.loads((REPO / "hack/image/image.json").read_text())


@pytest.fixture(scope="session")
def image_archive() -> Path:
    """The image of this source tree (built now unless up to date)."""
    problem = image_build.why_not_buildable()
    if problem is not None:
        pytest.skip(f"the Kagent image cannot be built here: {problem}")
    return image_build.ensure_built()


@pytest.fixture(scope="session")
def podman(image_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """podman configured for this kind of host (runc on cgroupfs, open files within the hard
    limit), with the image loaded; yields the command prefix."""
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (hack/container-deps.sh installs it)")
    folder = tmp_path_factory.mktemp("podman")
    import resource

    def within_hard_limit(kind: int, wanted: int) -> int:
        hard = resource.getrlimit(kind)[1]
        return wanted if hard == resource.RLIM_INFINITY else min(hard, wanted)

    # podman asks runc for 1048576 open files and as many processes, which hosts with lower hard
    # limits (and no CAP_SYS_RESOURCE) refuse; modest limits are plenty for these containers.
    nofile = within_hard_limit(resource.RLIMIT_NOFILE, 65536)
    nproc = within_hard_limit(resource.RLIMIT_NPROC, 4096)
    conf = folder / "containers.conf"
    conf.write_text(
        "[containers]\n"
        f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
        "[engine]\n"
        'runtime = "runc"\n'
        'cgroup_manager = "cgroupfs"\n'
        'events_logger = "file"\n'
    )
    command = ["env", f"CONTAINERS_CONF={conf}", "podman"]
    subprocess.run([*command, "load", "--quiet", "--input", str(image_archive)], check=True,
                   capture_output=True, timeout=600)
    yield command


def reference(archive: Path) -> str:
    return oci.read_archive(archive).reference


def run_image(podman: list[str], archive: Path, *args: str, options: tuple[str, ...] = (),
              timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*podman, "run", "--rm", "--read-only", *options, reference(archive), *args],
        capture_output=True, text=True, timeout=timeout, check=False)


def test_kagent_version_runs_read_only_as_a_non_root_user(podman: list[str], image_archive: Path) -> None:
    result = run_image(podman, image_archive, "version", options=("--network=none",))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"kagent {image_build.project_version()}"
    whoami = run_image(podman, image_archive, "-c", "import os; print(os.getuid(), os.getgid())",
                       options=("--network=none", "--entrypoint=/opt/kagent/bin/python"))
    assert whoami.stdout.split() == [str(SPEC["user"]["uid"]), str(SPEC["user"]["gid"])], whoami.stderr
    write = run_image(podman, image_archive, "-c", "open('/opt/kagent/x', 'w')",
                      options=("--network=none", "--entrypoint=/opt/kagent/bin/python"))
    assert write.returncode != 0 and "Read-only file system" in write.stderr


def test_an_agent_runs_from_the_image(podman: list[str], image_archive: Path, tmp_path: Path) -> None:
    """`kagent runtime` in the image answers an OpenAI-compatible request with the scripted
    model's answer, with nothing writable but /tmp."""
    agent = next(d for d in documents(EXAMPLES / "research-report/agents.yaml")
                 if d["metadata"]["name"] == "researcher")
    with MockLLM(EXAMPLES / "research-report/mockllm.yaml") as model:
        agent["spec"]["model"]["endpoint"] = f"{model.url}/v1"
        api_key = "image-test-key-0123456789"
        agent["spec"]["auth"] = {"apiKeys": [{"name": "image-test", "secretKeyRef": {
            "name": "caller-keys", "key": "image-test"}}]}
        secret = {"apiVersion": "v1", "kind": "Secret",
                  "metadata": {"name": "openai-api-key", "namespace": "ai-agents"},
                  "stringData": {"api-key": "scripted"}}
        keys = {"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "caller-keys", "namespace": "ai-agents"},
                "stringData": {"image-test": api_key}}
        (tmp_path / "agent.yaml").write_text(yaml.safe_dump_all([agent, secret, keys]))
        (tmp_path / "agent.yaml").chmod(0o644)
        tmp_path.chmod(0o755)
        port = free_port()
        name = f"kagent-agent-{port}"
        process = subprocess.Popen(
            [*podman, "run", "--rm", "--read-only", "--network=host", "--name", name,
             "-v", f"{tmp_path}:/etc/kagent:ro", reference(image_archive),
             "runtime", "-f", "/etc/kagent/agent.yaml", "--port", str(port)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_for(lambda: _ok(f"{url}/readyz") or process.poll() is not None, timeout=120,
                     what="the agent's /readyz")
            assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
            answer = httpx.post(f"{url}/v1/chat/completions", timeout=60,
                                headers={"Authorization": f"Bearer {api_key}"}, json={
                "model": "researcher", "messages": [{"role": "user", "content": "AI agents"}]})
            assert answer.status_code == 200, answer.text
            assert "Kubernetes operators manage applications" in answer.json()["choices"][0]["message"]["content"]
        finally:
            subprocess.run([*podman, "stop", "--time", "5", name], capture_output=True, timeout=60,
                           check=False)
            process.wait(timeout=60)


def test_the_controller_runs_from_the_image(podman: list[str], image_archive: Path,
                                           control_plane: ControlPlane, tmp_path: Path) -> None:
    """`kagent controller` in the image takes the leader Lease of its namespace and serves
    /metrics, read-only and as a non-root user (the real-pod tests run it as a pod too)."""
    namespace = control_plane.create_namespace(f"image-controller-{free_port()}")
    kubeconfig = tmp_path / "kubeconfig"
    shutil.copy(control_plane.kubeconfig, kubeconfig)
    kubeconfig.chmod(0o644)  # readable by the image's user
    tmp_path.chmod(0o755)
    metrics, webhook = free_port(), free_port()
    name = f"kagent-controller-{metrics}"
    process = subprocess.Popen(
        [*podman, "run", "--rm", "--read-only", "--network=host", "--name", name,
         "-v", f"{tmp_path}:/etc/kube:ro", reference(image_archive), "controller",
         "--kubeconfig", "/etc/kube/kubeconfig", "--namespace", namespace, "--identity", name,
         "--metrics-port", str(metrics), "--webhook-port", str(webhook), "--no-webhook"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        def leader() -> str:
            result = control_plane.kubectl("get", "lease", "-n", namespace, "-o", "json", check=False)
            items = json.loads(result.stdout or "{}").get("items", []) if result.returncode == 0 else []
            return next((i["spec"].get("holderIdentity", "") for i in items), "")

        wait_for(lambda: leader() == name or process.poll() is not None, timeout=120,
                 what="the controller in the image to take the lease")
        assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
        assert "kagent" in httpx.get(f"http://127.0.0.1:{metrics}/metrics", timeout=10).text
    finally:
        subprocess.run([*podman, "stop", "--time", "10", name], capture_output=True, timeout=60,
                       check=False)
        process.wait(timeout=60)
        control_plane.delete_namespace(namespace)


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_image_settings_are_the_spec(image_archive: Path) -> None:
    contents = oci.read_archive(image_archive)
    config = oci.config_from_document(contents.config)
    assert contents.reference == f"{SPEC['repository']}:{image_build.project_version()}"
    assert list(config.entrypoint) == SPEC["entrypoint"] and list(config.cmd) == SPEC["cmd"]
    assert config.user == f"{SPEC['user']['uid']}:{SPEC['user']['gid']}"
    assert config.working_dir == SPEC["workdir"]
    assert dict(e.split("=", 1) for e in config.env) == SPEC["env"]
    assert config.labels["org.opencontainers.image.version"] == image_build.project_version()
    assert [h["created_by"] for h in contents.config["history"]] == [
        "kagent image: debian", "kagent image: dependencies", "kagent image: kagent"]


def test_image_size_and_build_report(image_archive: Path) -> None:
    report = json.loads(image_archive.with_name(image_archive.name.replace(".oci.tar", ".image.json")).read_text())
    print(f"\nimage {report['reference']}: {report['unpacked_bytes'] / 1e6:.0f} MB unpacked, "
          f"{report['compressed_layer_bytes'] / 1e6:.0f} MB compressed; build {report['seconds']}")
    assert report["digest"] == oci.read_archive(image_archive).manifest_digest
    assert report["unpacked_bytes"] < 300e6, "the image grew past its 300 MB budget"


def test_sbom_lists_every_package_with_its_version(image_archive: Path) -> None:
    sbom = json.loads(image_archive.with_name(image_archive.name.replace(".oci.tar", ".spdx.json")).read_text())
    assert sbom["spdxVersion"] == "SPDX-2.3"
    purls = {ref["referenceLocator"] for p in sbom["packages"] for ref in p.get("externalRefs", [])}
    locked = [line.split(" ")[0] for line in (REPO / "hack/image/requirements.lock").read_text().splitlines()
              if "==" in line and not line.startswith(" ")]
    for pin in locked:
        name, version = pin.split("==")
        assert f"pkg:pypi/{name.lower().replace('_', '-')}@{version}" in purls, pin
    assert any(p.startswith("pkg:deb/debian/python3.11@") for p in purls)
    assert any(p.startswith("pkg:pypi/kagent@") for p in purls)
    digest = oci.read_archive(image_archive).manifest_digest
    assert sbom["packages"][0]["versionInfo"] == digest


def test_same_commit_same_layers_and_build_authorities_stay_out(image_archive: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A second build from scratch (new root file system, new layers; the downloaded packages
    and wheels, checked against their hashes, are reused), in another work folder and through a
    CA bundle holding an extra authority, gives byte-identical layers: nothing of the build
    machine, of the time of the build or of its network's authorities enters the image. The
    first image may be from an earlier commit with the same sources (it is rebuilt only when they
    change): the second build takes that commit's time, as a rebuild of that commit would."""
    report = json.loads(image_archive.with_name(image_archive.name.replace(".oci.tar", ".image.json")).read_text())
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(report["source_date_epoch"]))
    authority = make_ca(tmp_path / "ca", common_name="build-network-proxy-ca")
    bundle = tmp_path / "bundle.pem"
    system = Path("/etc/ssl/certs/ca-certificates.crt")
    bundle.write_bytes((system.read_bytes() if system.exists() else b"") + authority.cert_file.read_bytes())
    second = image_build.ensure_built(
        "--force", "--no-podman", f"--out={tmp_path / 'out'}", f"--work={tmp_path / 'work'}",
        f"--ca-bundle={bundle}", "--tag=reproduced")  # the downloads: the shared cache
    first, again = oci.read_archive(image_archive), oci.read_archive(second)
    assert [l["digest"] for l in again.manifest["layers"]] == [l["digest"] for l in first.manifest["layers"]]
    marker = authority.cert_file.read_text().splitlines()[1]
    rootfs = tmp_path / "work" / "rootfs"
    found = subprocess.run(["grep", "-rlF", marker, str(rootfs / "etc"), str(rootfs / "usr/share/ca-certificates"),
                            str(rootfs / "opt")], capture_output=True, text=True, check=False)
    assert found.stdout == "", f"the build's CA reached the image: {found.stdout}"


def test_dockerfile_describes_the_same_image() -> None:
    """The Dockerfile installs the spec's Debian packages, builds the venv with the same install
    script, lock and strip step, and sets the same user, working folder, environment and
    entrypoint."""
    from dockerfile_parse import DockerfileParser

    parser = DockerfileParser(path=str(REPO / "Dockerfile"))
    stages: list[list[dict[str, Any]]] = []
    for instruction in parser.structure:
        if instruction["instruction"] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    build, final = stages
    assert f"ARG DEBIAN_SUITE={SPEC['debian']['suite']}" in parser.content
    assert final[0]["value"] == "debian:${DEBIAN_SUITE}-slim"
    assert build[0]["value"] == "debian:${DEBIAN_SUITE}-slim AS build"

    def runs(stage: list[dict[str, Any]]) -> str:
        return "\n".join(i["value"] for i in stage if i["instruction"] == "RUN")

    def apt_packages(stage: list[dict[str, Any]]) -> list[str]:
        text = runs(stage).replace("\\\n", " ")
        return text.split("--no-install-recommends", 1)[1].split("&&")[0].split()

    assert apt_packages(final) == SPEC["debian"]["packages"]
    assert set(SPEC["debian"]["packages"]) - {"tini"} <= set(apt_packages(build))
    assert "hack/image/install.py /wheels" in runs(build) and "hack/image/strip.sh /opt/kagent" in runs(build)
    assert "--require-hashes" in runs(build) and "hack/image/requirements.lock" in runs(build)
    assert any(i["instruction"] == "COPY" and i["value"] == f"--from=build {SPEC['venv']} {SPEC['venv']}"
               for i in final)
    assert "install.py --user-only" in runs(final)
    values = {i["instruction"]: i["value"] for i in final}
    assert values["USER"] == f"{SPEC['user']['uid']}:{SPEC['user']['gid']}"
    assert values["WORKDIR"] == SPEC["workdir"]
    assert json.loads(values["ENTRYPOINT"]) == SPEC["entrypoint"]
    assert json.loads(values["CMD"]) == SPEC["cmd"]
    env = dict(item.split("=", 1) for item in values["ENV"].replace("\\\n", " ").split())
    assert env == SPEC["env"]
    arg = next(i["value"] for i in final if i["instruction"] == "ARG" and i["value"].startswith("KAGENT_VERSION="))
    assert arg == f"KAGENT_VERSION={image_build.project_version()}"


def test_image_build_names_what_it_lacks(tmp_path: Path) -> None:
    """A bad CA bundle path is refused before anything is built."""
    if image_build.why_not_buildable():
        pytest.skip(image_build.why_not_buildable() or "")
    result = subprocess.run([sys.executable, str(REPO / "hack/image/build.py"),
                             f"--ca-bundle={tmp_path / 'missing.pem'}", f"--out={tmp_path}"],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode != 0 and "--ca-bundle" in result.stderr and "no such file" in result.stderr


def test_release_packages_chart_and_image_of_one_version(image_archive: Path) -> None:
    """`make release`: chart package, image archive and SBOM with one version and checksums."""
    result = subprocess.run([sys.executable, str(REPO / "hack/release.py")], capture_output=True,
                            text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    version = image_build.project_version()
    assert summary["image"] == f"{SPEC['repository']}:{version}"
    dist = image_archive.parent
    sums = dict(reversed(line.split("  ")) for line in (dist / "SHA256SUMS").read_text().splitlines())
    assert set(sums) == {f"kagent-{version}.tgz", f"kagent-{version}.oci.tar", f"kagent-{version}.spdx.json"}
    import hashlib

    for name, digest in sums.items():
        assert hashlib.sha256((dist / name).read_bytes()).hexdigest() == digest, name
    import tarfile

    with tarfile.open(dist / f"kagent-{version}.tgz") as chart:
        packaged = yaml.safe_load(chart.extractfile("kagent/Chart.yaml").read())
    assert packaged["version"] == packaged["appVersion"] == version


def test_release_refuses_versions_that_disagree() -> None:
    from hack.release import version_problems

    chart = {"version": "0.1.0", "appVersion": "0.1.0"}
    values = {"image": {"repository": "ghcr.io/kagent-operator/kagent", "tag": ""}}
    assert version_problems("0.1.0", chart, values, "ghcr.io/kagent-operator/kagent:0.1.0") == []
    problems = version_problems("0.2.0", chart, values, "ghcr.io/kagent-operator/kagent:0.2.0")
    assert any("Chart.yaml version" in p for p in problems)
    assert any("appVersion" in p for p in problems)
    assert any("chart installs" in p for p in problems)
