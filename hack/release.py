"""`make release`: the chart package and the image archive of one version, with checksums and an SBOM.

    dist/kagent-<version>.tgz          the Helm chart (helm package)
    dist/kagent-<version>.oci.tar      the image (make image), named <repository>:<version>
    dist/kagent-<version>.spdx.json    its SBOM (every Debian package and Python distribution)
    dist/SHA256SUMS                    checksums of the three

Refuses to package anything when the versions disagree: pyproject.toml's version, the chart's
version and appVersion, the image's tag and the chart's default image reference must all match.
docs/install.md says how to push the image to a registry and install the chart from it.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hack.image.build import archive_path, project_version
from kagent.local import oci
from kagent.local.binaries import helm

DIST = REPO / "dist"
CHART = REPO / "charts" / "kagent"


def version_problems(version: str, chart: dict, values: dict, image_reference: str) -> list[str]:
    """Every disagreement between the versions a release names (empty when they all match)."""
    problems = []
    if chart.get("version") != version:
        problems.append(f"Chart.yaml version {chart.get('version')!r} is not {version!r}")
    if str(chart.get("appVersion")) != version:
        problems.append(f"Chart.yaml appVersion {chart.get('appVersion')!r} is not {version!r}")
    default_tag = values["image"].get("tag") or chart.get("appVersion")
    default_image = f"{values['image']['repository']}:{default_tag}"
    if image_reference != default_image:
        problems.append(f"the image is {image_reference!r} but the chart installs {default_image!r}")
    return problems


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def main() -> None:
    version = project_version()
    archive = archive_path(version, DIST)
    sbom = archive.with_name(f"kagent-{version}.spdx.json")
    if not archive.is_file() or not sbom.is_file():
        raise SystemExit(f"{archive.name} or {sbom.name} is missing: run `make image` first")
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    reference = oci.read_archive(archive).reference
    problems = version_problems(version, chart, values, reference)
    if problems:
        raise SystemExit("versions disagree, nothing packaged:\n  " + "\n  ".join(problems))
    lint = subprocess.run([str(helm()), "lint", "--strict", str(CHART)], capture_output=True,
                          text=True, check=False)
    if lint.returncode != 0:
        raise SystemExit(f"helm lint failed:\n{lint.stdout}{lint.stderr}")
    packaged = subprocess.run([str(helm()), "package", str(CHART), "--destination", str(DIST)],
                              capture_output=True, text=True, check=False)
    if packaged.returncode != 0:
        raise SystemExit(f"helm package failed:\n{packaged.stderr}")
    chart_package = DIST / f"kagent-{version}.tgz"
    artifacts = [chart_package, archive, sbom]
    sums = "".join(f"{sha256(path)}  {path.name}\n" for path in artifacts)
    (DIST / "SHA256SUMS").write_text(sums)
    print(json.dumps({"version": version, "image": reference,
                      "image_digest": oci.read_archive(archive).manifest_digest,
                      "artifacts": [p.name for p in artifacts] + ["SHA256SUMS"]}, indent=2))


if __name__ == "__main__":
    main()
