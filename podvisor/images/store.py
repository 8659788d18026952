"""The host's image cache on disk, content-addressed under ``DATA/images``::

    blobs/sha256/<hex>            verified manifests, configs and layers (shared by every image)
    disks/sha256/<hex>/           one staged image per manifest digest:
        disk.img                    the read-only disk (erofs or ext4)
        image.json                  config (entrypoint, cmd, env, workdir, user), sizes, blobs, names
        last-used                   its mtime is when a pod last asked for the image
    refs.json                     image names -> manifest digest (and index digests -> manifest digest)
    leases/<hex>/<holder>         "in use by holder" marks; an image with any is never removed
    tmp/                          downloads and builds in progress (<pid>-... so a dead one is cleaned)

Everything appears by rename after fsync, so a crash leaves at most a stale ``tmp/`` entry, never a half
image under ``disks/``. Several processes may share the cache (the node agent and `podvisor image`):
``refs.json`` is changed under an ``flock``, leases are files.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from podvisor.images.disk import fsync_dir, fsync_file
from podvisor.images.manifest import ImageConfig

__all__ = ["ImageStore", "StagedImage"]


@dataclass(frozen=True)
class StagedImage:
    """An image ready for a pod: its disk and what to run."""

    digest: str                     # the platform manifest digest ("image digest")
    disk_path: Path
    fs_type: str
    config: ImageConfig
    disk_size: int                  # bytes of the disk image
    download_size: int              # bytes of its blobs as fetched (compressed layers)
    unpacked_size: int              # bytes of file data in the root file system
    config_digest: str = ""
    index_digest: str = ""          # the manifest list it was picked from, if any
    names: tuple[str, ...] = ()
    blobs: tuple[str, ...] = ()
    built_at: float = 0.0
    last_used: float = 0.0
    pulled: bool = False            # True when this call downloaded or built it (not a cache hit)
    pull_seconds: float = 0.0

    @property
    def image_id(self) -> str:
        return self.config_digest

    def to_json(self) -> dict[str, Any]:
        return {"digest": self.digest, "fs_type": self.fs_type, "disk": self.disk_path.name,
                "config": self.config.to_json(), "disk_size": self.disk_size, "download_size": self.download_size,
                "unpacked_size": self.unpacked_size, "config_digest": self.config_digest,
                "index_digest": self.index_digest, "names": list(self.names), "blobs": list(self.blobs),
                "built_at": self.built_at}


class ImageStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.blobs = self.root / "blobs" / "sha256"
        self.disks = self.root / "disks" / "sha256"
        self.leases_dir = self.root / "leases"
        self.tmp = self.root / "tmp"
        for d in (self.blobs, self.disks, self.leases_dir, self.tmp):
            d.mkdir(parents=True, exist_ok=True)
        self._clean_tmp()

    # --- blobs ----------------------------------------------------------------------------------
    def blob_path(self, digest: str) -> Path:
        return self.blobs / _hex(digest)

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).exists()

    def temp_path(self, kind: str) -> Path:
        return self.tmp / f"{kind}-{os.getpid()}-{secrets.token_hex(6)}"

    def commit_blob(self, tmp: Path, digest: str) -> Path:
        """Move a verified, fsynced temporary file into place."""
        dest = self.blob_path(digest)
        os.replace(tmp, dest)
        return dest

    def write_blob(self, digest: str, data: bytes) -> Path:
        dest = self.blob_path(digest)
        if dest.exists():
            return dest
        tmp = self.temp_path("blob")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return self.commit_blob(tmp, digest)

    def read_blob(self, digest: str) -> bytes:
        return self.blob_path(digest).read_bytes()

    def remove_blob(self, digest: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.blob_path(digest).unlink()

    def all_blobs(self) -> list[str]:
        return [f"sha256:{p.name}" for p in self.blobs.iterdir()]

    # --- staged images --------------------------------------------------------------------------
    def image_dir(self, digest: str) -> Path:
        return self.disks / _hex(digest)

    def load(self, digest: str) -> StagedImage | None:
        d = self.image_dir(digest)
        try:
            meta = json.loads((d / "image.json").read_text())
        except (FileNotFoundError, NotADirectoryError, ValueError):
            return None
        try:
            used = (d / "last-used").stat().st_mtime
        except FileNotFoundError:
            used = float(meta.get("built_at") or 0)
        return StagedImage(
            digest=meta["digest"], disk_path=d / meta.get("disk", "disk.img"), fs_type=meta["fs_type"],
            config=ImageConfig.from_json(meta.get("config") or {}), disk_size=int(meta.get("disk_size") or 0),
            download_size=int(meta.get("download_size") or 0), unpacked_size=int(meta.get("unpacked_size") or 0),
            config_digest=str(meta.get("config_digest") or ""), index_digest=str(meta.get("index_digest") or ""),
            names=tuple(self.names_for(meta["digest"])), blobs=tuple(meta.get("blobs") or ()),
            built_at=float(meta.get("built_at") or 0), last_used=used)

    def publish(self, staging_dir: Path, image: StagedImage) -> StagedImage:
        """Write ``image.json`` into ``staging_dir`` (which holds the disk), fsync, rename into place.
        If another builder won the race, its image is kept and ours dropped."""
        meta = staging_dir / "image.json"
        meta.write_text(json.dumps(image.to_json(), indent=2) + "\n")
        fsync_file(meta)
        fsync_file(staging_dir / image.disk_path.name)
        fsync_dir(staging_dir)
        dest = self.image_dir(image.digest)
        try:
            os.rename(staging_dir, dest)
        except OSError:
            if not (dest / "image.json").exists():
                raise
            shutil.rmtree(staging_dir, ignore_errors=True)
        fsync_dir(self.disks)
        self.touch(image.digest)
        loaded = self.load(image.digest)
        assert loaded is not None
        return loaded

    def touch(self, digest: str) -> None:
        path = self.image_dir(digest) / "last-used"
        try:
            os.utime(path)
        except FileNotFoundError:
            with contextlib.suppress(FileNotFoundError):
                path.touch()

    def images(self) -> list[StagedImage]:
        out = []
        for d in sorted(self.disks.iterdir()):
            img = self.load("sha256:" + d.name)
            if img is not None:
                out.append(img)
        return out

    def delete_image(self, digest: str) -> None:
        d = self.image_dir(digest)
        if not d.exists():
            return
        trash = self.temp_path("trash")
        os.rename(d, trash)
        fsync_dir(self.disks)
        shutil.rmtree(trash, ignore_errors=True)
        self.update_refs(lambda refs: _drop_digest(refs, digest))

    # --- names ----------------------------------------------------------------------------------
    def refs(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads((self.root / "refs.json").read_text())
        except (FileNotFoundError, ValueError):
            data = {}
        data.setdefault("names", {})
        data.setdefault("aliases", {})
        return data

    def resolve_name(self, name: str) -> str | None:
        """The manifest digest a name (or an index digest) points at locally."""
        refs = self.refs()
        entry = refs["names"].get(name)
        if entry:
            return str(entry["digest"])
        alias = refs["aliases"].get(name)
        return str(alias) if alias else None

    def names_for(self, digest: str) -> list[str]:
        return sorted(n for n, e in self.refs()["names"].items() if e.get("digest") == digest)

    def set_name(self, name: str, digest: str, *, index_digest: str = "") -> None:
        def change(refs: dict[str, Any]) -> None:
            refs["names"][name] = {"digest": digest, "index": index_digest, "updated": time.time()}
            if index_digest:
                refs["aliases"][index_digest] = digest
        self.update_refs(change)

    def update_refs(self, change: Any) -> None:
        with self._locked():
            refs = self.refs()
            change(refs)
            tmp = self.temp_path("refs")
            tmp.write_text(json.dumps(refs, indent=2, sort_keys=True) + "\n")
            fsync_file(tmp)
            os.replace(tmp, self.root / "refs.json")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.root / "refs.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    # --- leases ---------------------------------------------------------------------------------
    def add_lease(self, digest: str, holder: str) -> None:
        d = self.leases_dir / _hex(digest)
        d.mkdir(parents=True, exist_ok=True)
        (d / _safe(holder)).write_text(f"{time.time()}\n")
        self.touch(digest)

    def remove_lease(self, digest: str, holder: str) -> None:
        d = self.leases_dir / _hex(digest)
        with contextlib.suppress(FileNotFoundError):
            (d / _safe(holder)).unlink()
        with contextlib.suppress(OSError):
            d.rmdir()
        self.touch(digest)

    def leases(self, digest: str) -> list[str]:
        d = self.leases_dir / _hex(digest)
        try:
            return sorted(p.name for p in d.iterdir())
        except FileNotFoundError:
            return []

    def all_leases(self) -> dict[str, list[str]]:
        return {f"sha256:{d.name}": sorted(p.name for p in d.iterdir()) for d in self.leases_dir.iterdir()
                if d.is_dir() and any(d.iterdir())}

    # --- housekeeping ---------------------------------------------------------------------------
    def _clean_tmp(self) -> None:
        """Remove what dead processes left in ``tmp/`` (names carry the writer's pid)."""
        for entry in self.tmp.iterdir():
            parts = entry.name.split("-")
            pid = int(parts[1]) if len(parts) > 2 and parts[1].isdigit() else 0
            if pid and pid != os.getpid() and _alive(pid):
                continue
            if pid == os.getpid():
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    entry.unlink()


def _hex(digest: str) -> str:
    algo, _, hexpart = digest.partition(":")
    if algo != "sha256" or len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart):
        raise ValueError(f"not a sha256 digest: {digest!r}")
    return hexpart


def _safe(holder: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.@" else "_" for c in holder)[:200] or "_"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _drop_digest(refs: dict[str, Any], digest: str) -> None:
    refs["names"] = {n: e for n, e in refs["names"].items() if e.get("digest") != digest}
    refs["aliases"] = {a: d for a, d in refs["aliases"].items() if d != digest}

