"""Reproducible OCI images from folders, with no container engine and no registry.

The Kagent image and a real node's pause image are built as plain root file systems (by
``mmdebstrap`` or a compiler) and packed here into an OCI image archive that podman
(``podman load``) and containerd (``ctr images import``) both take. The same tree and the same
``epoch`` always give the same bytes, hence the same layer and image digests: entries are sorted,
times clamped to ``epoch``, owners numeric, and gzip carries no name or time.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"
"""containerd's import names an image after this annotation (OCI's ref.name is often a tag)."""

_CHUNK = 1 << 20
_GZIP_LEVEL = 6
# What a container runtime provides itself; the folders stay, their contents do not.
RUNTIME_MOUNTS = ("dev", "proc", "sys")


class ImageError(ValueError):
    """An image archive or an image description that cannot be used."""


@dataclass(frozen=True)
class Layer:
    """A gzipped layer tarball on disk with its two digests."""

    path: Path
    digest: str
    """sha256 of the gzipped bytes (what the manifest names)."""
    diff_id: str
    """sha256 of the uncompressed tar (what the config's rootfs names)."""
    size: int
    created_by: str = ""
    diff_size: int = 0
    """Bytes of the uncompressed tar."""
    content_size: int = 0
    """Bytes of the files it holds: what it takes unpacked, before file system blocks."""


@dataclass(frozen=True)
class ImageConfig:
    """The run settings of an image (the ``config`` object of the OCI image configuration)."""

    entrypoint: Sequence[str] = ()
    cmd: Sequence[str] = ()
    env: Sequence[str] = ()
    user: str = ""
    working_dir: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    exposed_ports: Sequence[str] = ()

    def as_oci(self) -> dict[str, Any]:
        config: dict[str, Any] = {}
        if self.user:
            config["User"] = self.user
        if self.env:
            config["Env"] = list(self.env)
        if self.entrypoint:
            config["Entrypoint"] = list(self.entrypoint)
        if self.cmd:
            config["Cmd"] = list(self.cmd)
        if self.working_dir:
            config["WorkingDir"] = self.working_dir
        if self.labels:
            config["Labels"] = dict(sorted(self.labels.items()))
        if self.exposed_ports:
            config["ExposedPorts"] = {port: {} for port in sorted(self.exposed_ports)}
        return config


def canonical_json(document: Any) -> bytes:
    """The one byte form of a JSON document we hash: sorted keys, no spaces."""
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def rfc3339(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- layers -------------------------------------------------------------------------------------


class _HashingWriter(io.RawIOBase):
    """A write-only stream that hashes and counts what passes through to ``target``."""

    def __init__(self, target: IO[bytes]) -> None:
        self._target = target
        self.sha = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.sha.update(view)
        self.size += len(view)
        self._target.write(view)
        return len(view)


def walk_tree(root: Path, keep: Callable[[str], bool] = lambda _: True) -> Iterator[str]:
    """Relative paths under ``root`` in sorted order (a folder before what it holds), skipping
    what ``keep`` refuses; the contents of :data:`RUNTIME_MOUNTS` are never listed."""

    def visit(folder: Path, prefix: str) -> Iterator[str]:
        with os.scandir(folder) as entries:
            names = sorted(entry.name for entry in entries)
        for name in names:
            relative = f"{prefix}{name}"
            full = folder / name
            if keep(relative):
                yield relative
            if full.is_dir() and not full.is_symlink() and relative not in RUNTIME_MOUNTS:
                yield from visit(full, relative + "/")

    yield from visit(root, "")


def _normalised_info(tar: tarfile.TarFile, root: Path, relative: str, epoch: int) -> tarfile.TarInfo:
    info = tar.gettarinfo(str(root / relative), arcname=relative)
    info.mtime = min(int(info.mtime), epoch)
    info.uname = info.gname = ""
    info.pax_headers = {}
    if info.type in (tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE):
        raise ImageError(f"{relative}: device files and FIFOs do not belong in an image layer")
    return info


def write_layer(
    root: Path, paths: Sequence[str], out_dir: Path, *, epoch: int, created_by: str = ""
) -> Layer:
    """Pack ``paths`` (relative to ``root``, in the given order) into a gzipped layer in
    ``out_dir``, named by its digest."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=out_dir, delete=False, suffix=".partial") as raw:
        compressed = _HashingWriter(raw)
        with gzip.GzipFile(
            filename="", mode="wb", fileobj=compressed, mtime=0, compresslevel=_GZIP_LEVEL
        ) as gz:
            uncompressed = _HashingWriter(gz)
            # The tar stream goes through the hashing writer; a buffer keeps writes large.
            buffered = io.BufferedWriter(uncompressed, buffer_size=_CHUNK)
            content = 0
            with tarfile.open(fileobj=buffered, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for relative in paths:
                    info = _normalised_info(tar, root, relative, epoch)
                    if info.isreg():
                        content += info.size
                        with (root / relative).open("rb") as handle:
                            tar.addfile(info, handle)
                    else:
                        tar.addfile(info)
            buffered.flush()
    digest = "sha256:" + compressed.sha.hexdigest()
    target = out_dir / digest.split(":", 1)[1]
    Path(raw.name).replace(target)
    return Layer(
        path=target,
        digest=digest,
        diff_id="sha256:" + uncompressed.sha.hexdigest(),
        size=compressed.size,
        created_by=created_by,
        diff_size=uncompressed.size,
        content_size=content,
    )


def layer_from_files(
    files: Mapping[str, tuple[bytes, int]], out_dir: Path, *, epoch: int, created_by: str = ""
) -> Layer:
    """A layer holding ``files`` (path → (content, mode)); their folders must exist below."""
    with tempfile.TemporaryDirectory(prefix="kagent-layer-") as tmp:
        root = Path(tmp)
        for relative, (content, mode) in files.items():
            target = root / relative.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
            target.chmod(mode)
            os.utime(target, (epoch, epoch))
        paths = sorted(relative.lstrip("/") for relative in files)
        return write_layer(root, paths, out_dir, epoch=epoch, created_by=created_by)


def split_tree(root: Path, layer_prefixes: Sequence[Sequence[str]]) -> list[list[str]]:
    """Partition every path of ``root`` among layers: a path belongs to the last layer one of
    whose prefixes it equals or lies below (``""`` matches everything)."""

    def owner(relative: str) -> int:
        chosen = -1
        for index, prefixes in enumerate(layer_prefixes):
            for prefix in prefixes:
                if prefix == "" or relative == prefix or relative.startswith(prefix + "/"):
                    chosen = index
        return chosen

    layers: list[list[str]] = [[] for _ in layer_prefixes]
    for relative in walk_tree(root):
        index = owner(relative)
        if index >= 0:
            layers[index].append(relative)
    return layers


# --- images -------------------------------------------------------------------------------------


@dataclass
class Image:
    """An image being assembled: layers (bottom first), run settings and names."""

    layers: list[Layer]
    config: ImageConfig
    epoch: int
    architecture: str = "amd64"
    annotations: dict[str, str] = field(default_factory=dict)

    def config_document(self) -> dict[str, Any]:
        created = rfc3339(self.epoch)
        return {
            "architecture": self.architecture,
            "os": "linux",
            "created": created,
            "config": self.config.as_oci(),
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in self.layers]},
            "history": [
                {"created": created, "created_by": layer.created_by or "kagent.local.oci"}
                for layer in self.layers
            ],
        }

    def blobs(self) -> tuple[bytes, bytes]:
        """(config, manifest) in their canonical bytes."""
        config = canonical_json(self.config_document())
        manifest = {
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": {"mediaType": MEDIA_CONFIG, "digest": _sha256(config), "size": len(config)},
            "layers": [
                {"mediaType": MEDIA_LAYER, "digest": layer.digest, "size": layer.size}
                for layer in self.layers
            ],
        }
        if self.annotations:
            manifest["annotations"] = dict(sorted(self.annotations.items()))
        return config, canonical_json(manifest)

    @property
    def digest(self) -> str:
        """The manifest digest: what ``podman inspect`` and the kubelet call the image id."""
        return _sha256(self.blobs()[1])

    def index_document(self, reference: str) -> dict[str, Any]:
        _, manifest = self.blobs()
        return {
            "schemaVersion": 2,
            "mediaType": MEDIA_INDEX,
            "manifests": [
                {
                    "mediaType": MEDIA_MANIFEST,
                    "digest": _sha256(manifest),
                    "size": len(manifest),
                    "platform": {"architecture": self.architecture, "os": "linux"},
                    "annotations": {REF_NAME: reference, CONTAINERD_NAME: reference},
                }
            ],
        }

    def write_archive(self, path: Path, reference: str) -> Path:
        """Write an OCI image layout as one tar archive at ``path`` (named ``reference``)."""
        validate_reference(reference)
        config, manifest = self.blobs()
        members: list[tuple[str, bytes | Path]] = [
            ("oci-layout", canonical_json({"imageLayoutVersion": "1.0.0"})),
            ("index.json", canonical_json(self.index_document(reference))),
        ]
        blobs: dict[str, bytes | Path] = {
            _sha256(config): config,
            _sha256(manifest): manifest,
            **{layer.digest: layer.path for layer in self.layers},
        }
        members += [(f"blobs/sha256/{d.split(':', 1)[1]}", blob) for d, blob in sorted(blobs.items())]
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
            for folder in ("blobs", "blobs/sha256"):
                info = tarfile.TarInfo(folder)
                info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, self.epoch
                tar.addfile(info)
            for name, content in members:
                info = tarfile.TarInfo(name)
                info.mode, info.mtime = 0o644, self.epoch
                if isinstance(content, Path):
                    info.size = content.stat().st_size
                    with content.open("rb") as handle:
                        tar.addfile(info, handle)
                else:
                    info.size = len(content)
                    tar.addfile(info, io.BytesIO(content))
        partial.replace(path)
        return path


_REFERENCE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789._-/:@")


def validate_reference(reference: str) -> str:
    """A full image reference (``registry/name:tag``), as containerd and podman both need."""
    name, _, tag = reference.rpartition(":")
    if not name or "/" in tag or not tag or "/" not in name:
        raise ImageError(f"image reference {reference!r}: write it as registry/name:tag")
    if not set(reference.lower()) <= _REFERENCE_CHARS or reference != reference.strip():
        raise ImageError(f"image reference {reference!r} holds characters a reference may not")
    return reference


# --- reading archives ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ArchiveContents:
    """What an OCI image archive says about its (single) image."""

    reference: str
    manifest_digest: str
    manifest: dict[str, Any]
    config: dict[str, Any]


def read_archive(path: Path) -> ArchiveContents:
    """The name, manifest and configuration of the image in an OCI archive."""
    with tarfile.open(path) as tar:

        def member(name: str) -> bytes:
            try:
                extracted = tar.extractfile(name)
            except KeyError:
                raise ImageError(f"{path}: no {name} (not an OCI image archive)") from None
            if extracted is None:
                raise ImageError(f"{path}: {name} is not a file")
            return extracted.read()

        def blob(digest: str) -> bytes:
            data = member(f"blobs/sha256/{digest.split(':', 1)[1]}")
            if _sha256(data) != digest:
                raise ImageError(f"{path}: blob {digest} does not match its digest")
            return data

        index = json.loads(member("index.json"))
        manifests = index.get("manifests") or []
        if len(manifests) != 1:
            raise ImageError(f"{path}: expected one image, found {len(manifests)}")
        descriptor = manifests[0]
        manifest = json.loads(blob(descriptor["digest"]))
        config = json.loads(blob(manifest["config"]["digest"]))
        annotations = descriptor.get("annotations") or {}
        return ArchiveContents(
            reference=annotations.get(CONTAINERD_NAME) or annotations.get(REF_NAME, ""),
            manifest_digest=descriptor["digest"],
            manifest=manifest,
            config=config,
        )


def extract_layers(path: Path, out_dir: Path) -> list[Layer]:
    """Copy an archive's layers into ``out_dir``; with :func:`read_archive` they rebuild the
    image, e.g. to add a layer on top."""
    contents = read_archive(path)
    diff_ids = contents.config["rootfs"]["diff_ids"]
    history = contents.config.get("history") or []
    layers: list[Layer] = []
    out_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path) as tar:
        for position, descriptor in enumerate(contents.manifest["layers"]):
            digest = descriptor["digest"]
            source = tar.extractfile(f"blobs/sha256/{digest.split(':', 1)[1]}")
            if source is None:
                raise ImageError(f"{path}: layer {digest} is missing")
            target = out_dir / digest.split(":", 1)[1]
            with target.open("wb") as handle:
                while chunk := source.read(_CHUNK):
                    handle.write(chunk)
            created_by = history[position].get("created_by", "") if position < len(history) else ""
            layers.append(Layer(target, digest, diff_ids[position], descriptor["size"], created_by))
    return layers


def config_from_document(document: Mapping[str, Any]) -> ImageConfig:
    """The run settings of an OCI image configuration, as an :class:`ImageConfig`."""
    config = document.get("config") or {}
    return ImageConfig(
        entrypoint=tuple(config.get("Entrypoint") or ()),
        cmd=tuple(config.get("Cmd") or ()),
        env=tuple(config.get("Env") or ()),
        user=config.get("User", ""),
        working_dir=config.get("WorkingDir", ""),
        labels=dict(config.get("Labels") or {}),
        exposed_ports=tuple(sorted(config.get("ExposedPorts") or {})),
    )
