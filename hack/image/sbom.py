"""An SPDX 2.3 software bill of materials for the Kagent image, read off its root file system:
every Debian package dpkg installed and every Python distribution in the image's venv, each
with a package URL (purl) that scanners match against vulnerability databases."""

from __future__ import annotations

import re
from email.parser import HeaderParser
from pathlib import Path
from typing import Any

from kagent.local.oci import rfc3339


def _paragraphs(text: str) -> list[dict[str, str]]:
    """deb822 paragraphs (dpkg's status file) as dicts; continuation lines are dropped."""
    found: list[dict[str, str]] = []
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if line and not line[0].isspace() and ":" in line:
                key, value = line.split(":", 1)
                fields[key] = value.strip()
        if fields:
            found.append(fields)
    return found


def debian_packages(rootfs: Path) -> list[dict[str, str]]:
    status = (rootfs / "var/lib/dpkg/status").read_text()
    return sorted(
        ({"name": p["Package"], "version": p["Version"], "arch": p.get("Architecture", "")}
         for p in _paragraphs(status) if p.get("Status", "").endswith(" installed")),
        key=lambda p: p["name"],
    )


def python_packages(rootfs: Path, venv: str) -> list[dict[str, str]]:
    found = []
    for metadata in sorted((rootfs / venv.lstrip("/")).glob("lib/python3*/site-packages/*.dist-info/METADATA")):
        headers = HeaderParser().parsestr(metadata.read_text(errors="replace"), headersonly=True)
        found.append({"name": headers["Name"], "version": headers["Version"],
                      "license": headers.get("License-Expression") or ""})
    return sorted(found, key=lambda p: p["name"].lower())


def _spdx_id(kind: str, name: str) -> str:
    return f"SPDXRef-{kind}-" + re.sub(r"[^A-Za-z0-9.-]+", "-", name)


def _pypi_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def spdx_document(rootfs: Path, venv: str, reference: str, digest: str, epoch: int,
                  suite: str = "bookworm") -> dict[str, Any]:
    image_id = "SPDXRef-image"
    packages: list[dict[str, Any]] = [{
        "SPDXID": image_id,
        "name": reference,
        "versionInfo": digest,
        "downloadLocation": "NOASSERTION",
        "primaryPackagePurpose": "CONTAINER",
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "Apache-2.0",
        "copyrightText": "NOASSERTION",
    }]
    for deb in debian_packages(rootfs):
        packages.append({
            "SPDXID": _spdx_id("deb", deb["name"]),
            "name": deb["name"],
            "versionInfo": deb["version"],
            "downloadLocation": "NOASSERTION",
            "licenseConcluded": "NOASSERTION",
            "copyrightText": "NOASSERTION",
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                "referenceLocator": f"pkg:deb/debian/{deb['name']}@{deb['version']}"
                                    f"?arch={deb['arch']}&distro=debian-{suite}",
            }],
        })
    for dist in python_packages(rootfs, venv):
        packages.append({
            "SPDXID": _spdx_id("pypi", dist["name"]),
            "name": dist["name"],
            "versionInfo": dist["version"],
            "downloadLocation": "NOASSERTION",
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": dist["license"] or "NOASSERTION",
            "copyrightText": "NOASSERTION",
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                "referenceLocator": f"pkg:pypi/{_pypi_name(dist['name'])}@{dist['version']}",
            }],
        })
    return {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": f"kagent-image-{reference}",
        "documentNamespace": f"https://kagent.dev/spdx/{reference}/{digest}",
        "creationInfo": {"created": rfc3339(epoch), "creators": ["Tool: kagent hack/image/build.py"]},
        "packages": packages,
        "relationships": [
            {"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES",
             "relatedSpdxElement": image_id},
            *({"spdxElementId": image_id, "relationshipType": "CONTAINS",
               "relatedSpdxElement": p["SPDXID"]} for p in packages[1:]),
        ],
    }
