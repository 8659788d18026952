"""The ephemeral disk: one sparse ext4 image per pod, sized by its ``ephemeral-storage``.

It holds what Kubernetes keeps on a node's disk for a pod: container logs (CRI format, readable after
the containers exit and after the VM stops), emptyDir volumes, configmap and secret files, and the
containers' writable layers. It is formatted on the host before the VM starts, with project quotas on
so the guest agent can enforce an emptyDir's ``sizeLimit`` inside the shared disk. Sparse: a 1 GiB disk
costs what is written to it. No journal: the disk lives and dies with one pod VM, and a journal costs
the guest boot time and write amplification under emulation; the inode tables stay unwritten (they
read as zeros from a sparse file, and the guest mounts with ``noinit_itable``).

While the VM runs only the guest touches the file system. After it stops, `read_disk_file` reads a
file out of the image with ``debugfs`` (no mount, no root needed) - how logs stay readable after a
pod VM is gone but its disk is not yet deleted.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

__all__ = [
    "DEFAULT_EPHEMERAL_BYTES",
    "MIN_EPHEMERAL_BYTES",
    "DiskError",
    "DiskFileNotFound",
    "create_ephemeral_disk",
    "delete_disk",
    "disk_usage",
    "ext4_image_from_dir",
    "read_disk_file",
]

DEFAULT_EPHEMERAL_BYTES = 1 << 30    # when the pod states no ephemeral-storage limit
MIN_EPHEMERAL_BYTES = 32 << 20       # ext4 with a journal and quota files needs a few MiB


class DiskError(RuntimeError):
    """A disk image could not be made or read."""


class DiskFileNotFound(DiskError, FileNotFoundError):
    """The image holds no such file (also a `FileNotFoundError`)."""


async def _run(*cmd: str) -> tuple[bytes, str]:
    if shutil.which(cmd[0]) is None:
        raise DiskError(f"{cmd[0]} is not installed (Debian package e2fsprogs)")
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise DiskError(f"{' '.join(cmd[:2])} failed: {err.decode(errors='replace').strip()[-400:]}")
    return out, err.decode(errors="replace")


async def create_ephemeral_disk(path: Path, size_bytes: int = DEFAULT_EPHEMERAL_BYTES, *, label: str = "ephemeral") -> Path:
    """Make a sparse ext4 image of ``size_bytes`` at ``path`` (replacing nothing: it must not exist)."""
    size_bytes = max(int(size_bytes), MIN_EPHEMERAL_BYTES)
    _sparse_file(path, size_bytes, exclusive=True)
    try:
        await _run("mkfs.ext4", "-q", "-F", "-m", "0", "-L", label[:16], "-O", "^has_journal,quota,project",
                   "-E", "quotatype=prjquota,lazy_itable_init=1,nodiscard", str(path))
    except BaseException:
        os.unlink(path)
        raise
    return path


def _sparse_file(path: Path, size_bytes: int, *, exclusive: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    fd = os.open(path, flags, 0o600)
    try:
        os.ftruncate(fd, size_bytes)
    finally:
        os.close(fd)


def _tree_size(src: Path) -> int:
    return sum(p.lstat().st_size for p in src.rglob("*"))


async def ext4_image_from_dir(src: Path, out: Path, *, size_bytes: int | None = None, label: str = "image") -> Path:
    """A read-only-use ext4 image holding ``src``'s tree (``mkfs.ext4 -d``), sized to fit with headroom."""
    if size_bytes is None:
        size_bytes = max(8 << 20, int(_tree_size(src) * 1.3) + (4 << 20))
    tmp = out.with_name(out.name + ".tmp")
    _sparse_file(tmp, size_bytes, exclusive=False)
    try:
        await _run("mkfs.ext4", "-q", "-F", "-m", "0", "-L", label[:16], "-O", "^has_journal",
                   "-E", "lazy_itable_init=0,nodiscard", "-d", str(src), str(tmp))
    except BaseException:
        os.unlink(tmp)
        raise
    os.replace(tmp, out)
    return out


async def read_disk_file(image: Path, path: str) -> bytes:
    """A file's bytes from an ext4 image that no VM is using (``debugfs -R cat``).

    Raises `DiskFileNotFound` (a `DiskError` and a `FileNotFoundError`) if the image has no such file,
    `DiskError` if it cannot be read."""
    inner = "/" + path.lstrip("/")
    if any(c in inner for c in "\"\n"):
        raise DiskError(f"bad path {path!r}")
    out, err = await _run("debugfs", "-R", f'cat "{inner}"', str(image))
    if "File not found" in err:
        raise DiskFileNotFound(f"{image}: no file {inner}")
    if not out and ("Bad magic" in err or "Couldn't find valid filesystem" in err or "No such file" in err):
        raise DiskError(f"{image}: {err.strip().splitlines()[-1]}")
    return out


def disk_usage(image: Path) -> tuple[int, int]:
    """(apparent size, bytes actually allocated on the host) of a sparse image."""
    st = image.stat()
    return st.st_size, st.st_blocks * 512


def delete_disk(image: Path) -> None:
    image.unlink(missing_ok=True)
