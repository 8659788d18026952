"""What `podvisor image push` accepts, read into manifests and blob files ready to upload.

- an OCI image layout directory (``oci-layout`` + ``index.json`` + ``blobs/``), or a tar of one
  (``oci-archive``; recent ``docker save`` output is one too);
- a Docker archive (``docker save``: ``manifest.json`` naming a config and layer tars); its layers are
  gzip-compressed on the way, as ``docker push`` does;
- a plain root file system, as a directory or a tarball (``.tar``, ``.tar.gz``, ``.tar.zst``): it becomes
  a one-layer image whose config takes ``--cmd``, ``--entrypoint``, ``--env``, ``--workdir``, ``--user``.

Everything is checked against its digest as it is read, so a corrupt layout fails here, not in the
registry or on a host.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import shutil
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from podvisor.images.build import (
    BlobDir,
    BuiltLayer,
    image_config,
    layer_from_directory,
    layer_from_tar,
    write_image,
)
from podvisor.images.compression import LayerReader, detect_compression
from podvisor.images.errors import ImageError
from podvisor.images.manifest import (
    OCI_INDEX,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    ImageIndex,
    parse_manifest,
    verify_digest,
)

__all__ = ["LocalImage", "ImageSettings", "load_source", "SourceError", "parse_command"]


class SourceError(ImageError):
    reason = "InvalidSource"


@dataclass
class ImageSettings:
    """Config for an image made from a root file system."""

    cmd: list[str] = field(default_factory=list)
    entrypoint: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=list)
    workdir: str = ""
    user: str = ""

    def given(self) -> bool:
        return bool(self.cmd or self.entrypoint or self.env or self.workdir or self.user)


def parse_command(text: str | None) -> list[str]:
    """``--cmd`` as JSON (``["sh","-c","x"]``) or shell words (``sh -c 'x'``)."""
    if not text:
        return []
    if text.lstrip().startswith("["):
        value = json.loads(text)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise SourceError(f"--cmd JSON must be a list of strings: {text!r}")
        return list(value)
    return shlex.split(text)


@dataclass
class LocalImage:
    """Manifests in upload order (children before the index that names them) and where each blob is."""

    manifests: list[tuple[str, bytes, str]]
    blobs: dict[str, Path]
    kind: str
    notes: list[str] = field(default_factory=list)

    @property
    def top(self) -> tuple[str, bytes, str]:
        return self.manifests[-1]

    def blob_order(self) -> list[str]:
        """Each blob once, layers before configs (the registry wants blobs before the manifest)."""
        order: list[str] = []
        for _, body, media in self.manifests:
            parsed = parse_manifest(body, media)
            if isinstance(parsed, ImageIndex):
                continue
            for desc in (*parsed.layers, parsed.config):
                if desc.digest not in order:
                    order.append(desc.digest)
        return order


def load_source(source: Path, scratch: Path, settings: ImageSettings | None = None) -> LocalImage:
    """Read ``source`` (see module doc); ``scratch`` is an empty directory for blobs we make."""
    settings = settings or ImageSettings()
    if not source.exists():
        raise SourceError(f"{source}: no such file or directory")
    if source.is_dir():
        if (source / "oci-layout").exists() or (source / "index.json").exists():
            return _oci_layout(source, settings)
        if (source / "manifest.json").exists() and not (source / "bin").exists():
            return _docker_archive(source, scratch, settings)
        return _rootfs_dir(source, scratch, settings)
    kind = _archive_kind(source)
    if kind in ("oci-archive", "docker-archive"):
        unpacked = scratch / "archive"
        unpacked.mkdir(parents=True, exist_ok=True)
        with tarfile.open(source) as tf:
            tf.extractall(unpacked, filter="data")
        if kind == "oci-archive":
            image = _oci_layout(unpacked, settings)
        else:
            image = _docker_archive(unpacked, scratch, settings)
        image.kind = kind
        return image
    return _rootfs_tarball(source, scratch, settings)


def _archive_kind(path: Path) -> str:
    try:
        with tarfile.open(path) as tf:
            names = {m.name.lstrip("./") for m in tf.getmembers()[:4096]}
    except tarfile.TarError as exc:
        raise SourceError(f"{path}: neither a directory nor a tar archive ({exc})") from None
    if "oci-layout" in names and "index.json" in names:
        return "oci-archive"
    if "manifest.json" in names and not any(n.startswith(("bin/", "etc/", "usr/")) for n in names):
        return "docker-archive"
    return "rootfs"


def _note_ignored(settings: ImageSettings, kind: str) -> list[str]:
    return [f"--cmd/--entrypoint/--env/--workdir/--user apply to root file systems only; {kind} keeps its config"] \
        if settings.given() else []


def _oci_layout(layout: Path, settings: ImageSettings) -> LocalImage:
    blobs_root = layout / "blobs"
    try:
        index = json.loads((layout / "index.json").read_text())
    except (FileNotFoundError, ValueError) as exc:
        raise SourceError(f"{layout}: unreadable OCI layout index.json ({exc})") from None
    entries = index.get("manifests") or []
    if not entries:
        raise SourceError(f"{layout}: the OCI layout names no image")
    blobs: dict[str, Path] = {}

    def blob(digest: str) -> Path:
        algo, _, hexpart = digest.partition(":")
        path = blobs_root / algo / hexpart
        if not path.exists():
            raise SourceError(f"{layout}: blob {digest} is missing")
        blobs[digest] = path
        return path

    manifests: list[tuple[str, bytes, str]] = []

    def add_manifest(digest: str, media: str) -> None:
        body = blob(digest).read_bytes()
        verify_digest(body, digest, what=f"{layout}: manifest")
        parsed = parse_manifest(body, media)
        if isinstance(parsed, ImageIndex):
            for child in parsed.manifests:
                add_manifest(child.digest, child.media_type)
        else:
            for desc in (parsed.config, *parsed.layers):
                blob(desc.digest)
        manifests.append((digest, body, media or OCI_MANIFEST))

    if len(entries) == 1:
        add_manifest(entries[0]["digest"], entries[0].get("mediaType", OCI_MANIFEST))
    else:
        # several images: push them all under one index (a multi-platform image)
        for e in entries:
            add_manifest(e["digest"], e.get("mediaType", OCI_MANIFEST))
        index_body = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries},
                                separators=(",", ":")).encode()
        manifests.append(("sha256:" + hashlib.sha256(index_body).hexdigest(), index_body, OCI_INDEX))
    for digest, path in blobs.items():
        if digest not in {m[0] for m in manifests}:
            _verify_file(path, digest)
    return LocalImage(manifests, blobs, "oci-layout", _note_ignored(settings, "an OCI layout"))


def _docker_archive(root: Path, scratch: Path, settings: ImageSettings) -> LocalImage:
    try:
        entries = json.loads((root / "manifest.json").read_text())
        entry: dict[str, Any] = entries[0]
    except (FileNotFoundError, ValueError, IndexError, KeyError) as exc:
        raise SourceError(f"{root}: unreadable docker archive manifest.json ({exc})") from None
    out = BlobDir(scratch / "blobs")
    config = (root / entry["Config"]).read_bytes()
    diff_ids = json.loads(config).get("rootfs", {}).get("diff_ids") or []
    layers: list[BuiltLayer] = []
    for i, rel in enumerate(entry.get("Layers") or []):
        path = root / rel
        with path.open("rb") as f:
            compression = detect_compression(f.read(4))
            f.seek(0)
            if compression == "none":
                layer = layer_from_tar(out, f, compression="gzip")
            else:
                reader = LayerReader(f, compression)
                reader.drain()
                digest = _file_digest(path)
                shutil.copyfile(path, out.file(digest))
                layer = BuiltLayer(digest, f"sha256:{reader.hexdigest()}", path.stat().st_size, OCI_LAYER_GZIP)
        if i < len(diff_ids) and diff_ids[i] != layer.diff_id:
            raise SourceError(f"{root}: layer {rel} is {layer.diff_id}, its config says {diff_ids[i]}")
        layers.append(layer)
    digest, body = write_image(out, layers, config)
    blobs = {d: out.file(d) for d in [layer.digest for layer in layers] + [_bytes_digest(config)]}
    return LocalImage([(digest, body, OCI_MANIFEST)], blobs, "docker-archive",
                      _note_ignored(settings, "a docker archive"))


def _rootfs_dir(root: Path, scratch: Path, settings: ImageSettings) -> LocalImage:
    out = BlobDir(scratch / "blobs")
    layer = layer_from_directory(out, root)
    return _single_layer(out, layer, settings, "rootfs")


def _rootfs_tarball(path: Path, scratch: Path, settings: ImageSettings) -> LocalImage:
    out = BlobDir(scratch / "blobs")
    with path.open("rb") as f:
        compression = detect_compression(f.read(4))
        f.seek(0)
        source: Any = LayerReader(f, compression) if compression != "none" else f
        layer = layer_from_tar(out, source, compression="gzip")
    return _single_layer(out, layer, settings, "rootfs-tarball")


def _single_layer(out: BlobDir, layer: BuiltLayer, settings: ImageSettings, kind: str) -> LocalImage:
    config = image_config([layer], cmd=settings.cmd, entrypoint=settings.entrypoint, env=settings.env,
                          workdir=settings.workdir, user=settings.user)
    digest, body = write_image(out, [layer], config)
    blobs = {layer.digest: out.file(layer.digest), _bytes_digest(config): out.file(_bytes_digest(config))}
    return LocalImage([(digest, body, OCI_MANIFEST)], blobs, kind)


def _bytes_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def _verify_file(path: Path, digest: str) -> None:
    if _file_digest(path) != digest:
        raise SourceError(f"{path}: content does not match its digest {digest}")

