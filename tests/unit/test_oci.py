"""Reproducible OCI images (kagent.local.oci): same tree and epoch, same bytes; layers split by
path; archives that name the image and carry its settings."""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from kagent.local import oci

EPOCH = 1_700_000_000


def make_tree(root: Path) -> Path:
    for relative, content in {
        "etc/passwd": b"root:x:0:0::/root:/bin/sh\n",
        "opt/app/lib/dep/__init__.py": b"",
        "opt/app/lib/app/main.py": b"print('hi')\n",
        "opt/app/bin/app": b"#!/bin/sh\n",
        "dev/null-ish": b"runtime provides /dev",
    }.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    (root / "opt/app/bin/app").chmod(0o755)
    (root / "usr").mkdir()
    (root / "usr/sh").symlink_to("/bin/sh")
    return root


def layer_members(layer: oci.Layer) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer.path.read_bytes()))) as tar:
        return tar.getmembers()


def test_same_tree_same_digest_whatever_the_file_times(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "a")
    first = oci.write_layer(tree, list(oci.walk_tree(tree)), tmp_path / "blobs1", epoch=EPOCH)
    for path in tree.rglob("*"):
        if not path.is_symlink():
            os.utime(path, (EPOCH + 5000, EPOCH + 5000))  # files touched again after the epoch
    second = oci.write_layer(tree, list(oci.walk_tree(tree)), tmp_path / "blobs2", epoch=EPOCH)
    assert (first.digest, first.diff_id) == (second.digest, second.diff_id)
    later = oci.write_layer(tree, list(oci.walk_tree(tree)), tmp_path / "blobs3", epoch=EPOCH + 1)
    assert later.digest != first.digest


def test_layer_entries_are_sorted_clamped_and_anonymous(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    old = tree / "etc/passwd"
    os.utime(old, (1000, 1000))
    layer = oci.write_layer(tree, list(oci.walk_tree(tree)), tmp_path / "blobs", epoch=EPOCH)
    members = layer_members(layer)
    names = [m.name for m in members]
    assert names == sorted(names, key=lambda n: n.split("/"))
    assert "dev" in names and not any(n.startswith("dev/") for n in names)
    by_name = {m.name: m for m in members}
    assert by_name["etc/passwd"].mtime == 1000  # older than the epoch: kept
    assert by_name["opt/app/bin/app"].mtime == EPOCH and by_name["opt/app/bin/app"].mode & 0o111
    assert by_name["usr/sh"].issym() and by_name["usr/sh"].linkname == "/bin/sh"
    assert all(m.uname == "" and m.gname == "" for m in members)
    assert layer.path.name == layer.digest.split(":")[1]


def test_split_tree_gives_each_path_to_its_most_specific_layer(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    base, deps, app = oci.split_tree(tree, [[""], ["opt/app"], ["opt/app/lib/app", "opt/app/bin/app"]])
    assert "opt" in base and "opt/app" not in base and "etc/passwd" in base
    assert "opt/app" in deps and "opt/app/lib/dep/__init__.py" in deps
    assert app == ["opt/app/bin/app", "opt/app/lib/app", "opt/app/lib/app/main.py"]
    everything = base + deps + app
    assert len(everything) == len(set(everything)) == len(list(oci.walk_tree(tree)))


def test_archive_round_trip_names_the_image_and_keeps_its_settings(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    layer = oci.write_layer(tree, list(oci.walk_tree(tree)), tmp_path / "blobs", epoch=EPOCH)
    config = oci.ImageConfig(entrypoint=("/opt/app/bin/app",), cmd=("--help",), env=("A=1",),
                             user="65532:65532", working_dir="/home/app", labels={"x": "y"})
    image = oci.Image([layer], config, epoch=EPOCH)
    archive = image.write_archive(tmp_path / "image.oci.tar", "example.org/team/app:1.0")
    contents = oci.read_archive(archive)
    assert contents.reference == "example.org/team/app:1.0"
    assert contents.manifest_digest == image.digest
    assert oci.config_from_document(contents.config) == config
    assert contents.config["rootfs"]["diff_ids"] == [layer.diff_id]
    assert contents.config["created"] == "2023-11-14T22:13:20Z"
    with tarfile.open(archive) as tar:
        assert json.loads(tar.extractfile("oci-layout").read()) == {"imageLayoutVersion": "1.0.0"}
        index = json.loads(tar.extractfile("index.json").read())
    annotations = index["manifests"][0]["annotations"]
    assert annotations[oci.REF_NAME] == annotations[oci.CONTAINERD_NAME] == "example.org/team/app:1.0"
    again = image.write_archive(tmp_path / "again.oci.tar", "example.org/team/app:1.0")
    assert again.read_bytes() == archive.read_bytes()


def test_a_layer_on_top_changes_the_image_but_not_the_layers_below(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    layer = oci.write_layer(tree, list(oci.walk_tree(tree)), tmp_path / "blobs", epoch=EPOCH)
    original = oci.Image([layer], oci.ImageConfig(cmd=("run",)), epoch=EPOCH)
    archive = original.write_archive(tmp_path / "v1.oci.tar", "example.org/app:1")
    contents = oci.read_archive(archive)
    layers = oci.extract_layers(archive, tmp_path / "copied")
    extra = oci.layer_from_files({"etc/build-id": (b"2\n", 0o644)}, tmp_path / "copied", epoch=EPOCH)
    changed = oci.Image([*layers, extra], oci.config_from_document(contents.config), epoch=EPOCH)
    changed.write_archive(tmp_path / "v2.oci.tar", "example.org/app:2")
    assert changed.digest != original.digest
    assert [entry.digest for entry in changed.layers[:1]] == [layer.digest]
    assert oci.read_archive(tmp_path / "v2.oci.tar").config["config"]["Cmd"] == ["run"]


@pytest.mark.parametrize("reference", ["app:1", "example.org/app", "example.org/app:", "Example.org/app:1 "])
def test_incomplete_references_are_refused(reference: str) -> None:
    with pytest.raises(oci.ImageError, match="reference"):
        oci.validate_reference(reference)


def test_a_damaged_archive_is_named(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.tar"
    with tarfile.open(bogus, "w") as tar:
        info = tarfile.TarInfo("hello")
        tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(oci.ImageError, match="index.json"):
        oci.read_archive(bogus)
