"""Make images from files: layers from directories or tar streams, a config, a manifest, an OCI layout.

`podvisor image push ./rootfs ns/app:1` turns a plain root file system into a one-layer image with
this module, and the test image builders (tests/imagebuild.py) use it for theirs. Layers are written
deterministically (sorted names, numeric owners, no user/group names) so the same tree gives the same
digest, and a push of an unchanged tree uploads nothing.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

from podvisor.images.manifest import (
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_LAYER_GZIP,
    OCI_LAYER_ZSTD,
    OCI_MANIFEST,
)

__all__ = ["BuiltLayer", "BlobDir", "tar_directory", "layer_from_tar", "layer_from_directory", "image_config",
           "write_image", "write_oci_layout", "TarEntry", "tar_entries"]


@dataclass(frozen=True, slots=True)
class BuiltLayer:
    digest: str         # of the blob as stored (compressed)
    diff_id: str        # of the uncompressed tar
    size: int
    media_type: str


class BlobDir:
    """A ``blobs/sha256`` directory that content lands in by digest."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    def file(self, digest: str) -> Path:
        return self.path / digest.split(":", 1)[1]

    def put(self, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        dest = self.file(digest)
        if not dest.exists():
            tmp = dest.with_name(dest.name + ".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, dest)
        return digest


class _HashingWriter(io.RawIOBase):
    def __init__(self, out: IO[bytes]) -> None:
        self.out, self.hash, self.count = out, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        data = bytes(b)
        self.hash.update(data)
        self.count += len(data)
        self.out.write(data)
        return len(data)


def _clean(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uname = info.gname = ""
    return info


def tar_directory(root: Path, out: IO[bytes]) -> None:
    """Write ``root``'s content (not ``root`` itself) as a tar stream, names relative, sorted."""
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tf:
        for name in sorted(os.listdir(root)):
            tf.add(str(root / name), arcname=name, recursive=True, filter=_clean)


def layer_from_tar(blobs: BlobDir, source: IO[bytes], *, compression: str = "gzip", level: int = 1) -> BuiltLayer:
    """Store an uncompressed tar stream as a layer blob, compressed with ``compression``."""
    tmp = blobs.path / f".layer-{os.getpid()}-{time.monotonic_ns()}"
    with open(tmp, "wb") as raw:
        outer = _HashingWriter(raw)
        if compression == "gzip":
            sink: Any = gzip.GzipFile(fileobj=outer, mode="wb", compresslevel=level, mtime=0)
            media = OCI_LAYER_GZIP
        elif compression == "zstd":
            import zstandard

            sink = zstandard.ZstdCompressor(level=3).stream_writer(cast(IO[bytes], outer), closefd=False)
            media = OCI_LAYER_ZSTD
        else:
            sink, media = outer, OCI_LAYER
        inner = hashlib.sha256()
        while chunk := source.read(1 << 20):
            inner.update(chunk)
            sink.write(chunk)
        if sink is not outer:
            sink.close()
    digest = "sha256:" + outer.hash.hexdigest()
    os.replace(tmp, blobs.file(digest))
    return BuiltLayer(digest, "sha256:" + inner.hexdigest(), outer.count, media)


def layer_from_directory(blobs: BlobDir, root: Path, *, compression: str = "gzip", level: int = 1) -> BuiltLayer:
    buf = io.BytesIO()
    tar_directory(root, buf)
    buf.seek(0)
    return layer_from_tar(blobs, buf, compression=compression, level=level)


@dataclass(frozen=True, slots=True)
class TarEntry:
    """One member for `tar_entries`: a file (``data``), ``dir``, ``symlink``/``hardlink`` (``target``),
    ``fifo`` or ``chardev``."""

    name: str
    kind: str = "file"
    data: bytes = b""
    target: str = ""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime: int = 1_700_000_000
    xattrs: tuple[tuple[str, bytes], ...] = ()


_KINDS = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE,
          "fifo": tarfile.FIFOTYPE, "chardev": tarfile.CHRTYPE, "blockdev": tarfile.BLKTYPE}


def tar_entries(entries: Iterable[TarEntry]) -> bytes:
    """An uncompressed tar made of exactly these members (names are written as given, even unsafe ones)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for e in entries:
            info = tarfile.TarInfo(e.name)
            info.type = _KINDS[e.kind]
            info.mode, info.uid, info.gid, info.mtime = e.mode, e.uid, e.gid, e.mtime
            if e.kind in ("symlink", "hardlink"):
                info.linkname = e.target
            if e.xattrs:
                info.pax_headers = {f"SCHILY.xattr.{k}": v.decode("utf-8", "surrogateescape") for k, v in e.xattrs}
            if e.kind == "file":
                info.size = len(e.data)
                tf.addfile(info, io.BytesIO(e.data))
            else:
                tf.addfile(info)
    return buf.getvalue()


def image_config(layers: Sequence[BuiltLayer], *, cmd: Sequence[str] = (), entrypoint: Sequence[str] = (),
                 env: Sequence[str] = (), workdir: str = "", user: str = "", labels: dict[str, str] | None = None,
                 exposed_ports: Sequence[str] = (), created: str = "1970-01-01T00:00:00Z") -> bytes:
    cfg: dict[str, Any] = {"Env": list(env) or ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]}
    if cmd:
        cfg["Cmd"] = list(cmd)
    if entrypoint:
        cfg["Entrypoint"] = list(entrypoint)
    if workdir:
        cfg["WorkingDir"] = workdir
    if user:
        cfg["User"] = user
    if labels:
        cfg["Labels"] = dict(labels)
    if exposed_ports:
        cfg["ExposedPorts"] = {p: {} for p in exposed_ports}
    doc = {"created": created, "architecture": "amd64", "os": "linux", "config": cfg,
           "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
           "history": [{"created": created, "created_by": "podvisor"} for _ in layers]}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def write_image(blobs: BlobDir, layers: Sequence[BuiltLayer], config: bytes) -> tuple[str, bytes]:
    """Store the config and an OCI manifest; returns (manifest digest, manifest bytes)."""
    config_digest = blobs.put(config)
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
                "layers": [{"mediaType": layer.media_type, "digest": layer.digest, "size": layer.size}
                           for layer in layers]}
    body = json.dumps(manifest, separators=(",", ":")).encode()
    return blobs.put(body), body


def write_oci_layout(layout: Path, manifests: Sequence[tuple[str, bytes]], *, tag: str = "latest",
                     platforms: Sequence[dict[str, str]] | None = None) -> Path:
    """Write ``oci-layout`` and ``index.json`` naming ``manifests`` (already in ``layout/blobs``)."""
    layout.mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    entries = []
    for i, (digest, body) in enumerate(manifests):
        entry: dict[str, Any] = {"mediaType": OCI_MANIFEST, "digest": digest, "size": len(body),
                                 "annotations": {"org.opencontainers.image.ref.name": tag}}
        if platforms:
            entry["platform"] = platforms[i]
        entries.append(entry)
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                                                   "manifests": entries}))
    return layout
