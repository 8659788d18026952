"""Turn an unpacked root directory into a read-only disk image a pod VM attaches.

Two builders, both from the distribution: ``mkfs.erofs`` (EROFS: made for read-only images; sized by
its content, compact metadata, no journal, nothing to guess) and ``mkfs.ext4 -d`` (copies the tree
into a fresh ext4 file; needs the size up front, so we size it from what was unpacked plus room for
metadata, as a sparse file). `podvisor bench images` measures both on the same tree; EROFS is the
default (see `DEFAULT_FS`). The guest kernel loads ``erofs`` and ``ext4`` either way.

Both builders write to a temporary name beside the destination; the caller fsyncs and renames.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

from podvisor.images.errors import StagingError

__all__ = ["DEFAULT_FS", "FS_TYPES", "build_disk", "estimate_ext4_bytes", "fsync_file", "fsync_dir"]

# Measured by `podvisor bench images` (200 MB, 5 layers, 12,100 files, same tree): mkfs.erofs 0.99 s for a
# 211.5 MB image, mkfs.ext4 -d 1.01 s for 253.7 MB of used blocks (and an ext4 image needs its size
# guessed first). Build times are a tie; EROFS wins on size, needs no sizing, and is read-only by design.
DEFAULT_FS = "erofs"
FS_TYPES = ("erofs", "ext4")
_BLOCK = 4096


def estimate_ext4_bytes(content_bytes: int, inodes: int) -> int:
    """Room for ``content_bytes`` of file data in ``inodes`` files (each rounded to a block), their
    inode table (256 B each, half again as spare) and ext4's own metadata; at least 16 MiB."""
    data = content_bytes + inodes * _BLOCK
    meta = int(inodes * 1.5) * 256 + data // 32
    return max(16 << 20, ((data + meta + (8 << 20)) // _BLOCK + 1) * _BLOCK)


async def build_disk(root: Path, dest: Path, *, fs: str = DEFAULT_FS, content_bytes: int = 0, inodes: int = 0,
                     as_root: bool | None = None, label: str = "pvimage") -> int:
    """Build ``dest`` from ``root`` with file system ``fs``; returns the image's apparent size."""
    as_root = os.geteuid() == 0 if as_root is None else as_root
    if fs == "erofs":
        tool = shutil.which("mkfs.erofs") or "/usr/bin/mkfs.erofs"
        argv = [tool, "--quiet"]
        if not as_root:
            argv.append("--all-root")
        argv += [str(dest), str(root)]
    elif fs == "ext4":
        tool = shutil.which("mkfs.ext4") or "/usr/sbin/mkfs.ext4"
        size = estimate_ext4_bytes(content_bytes, max(inodes, 64))
        argv = [tool, "-q", "-F", "-t", "ext4", "-b", str(_BLOCK), "-m", "0", "-L", label[:16],
                "-O", "^has_journal,^resize_inode", "-N", str(int(max(inodes, 64) * 1.5) + 64),
                "-E", "lazy_itable_init=0,root_owner=0:0" if not as_root else "lazy_itable_init=0",
                "-d", str(root), str(dest), f"{size // 1024}k"]
    else:
        raise StagingError(f"unknown disk file system {fs!r} (choose one of {', '.join(FS_TYPES)})")
    proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        tail = out.decode(errors="replace").strip().splitlines()[-3:]
        raise StagingError(f"{Path(argv[0]).name} failed ({proc.returncode}): {' | '.join(tail)}")
    return await asyncio.to_thread(_apparent_size, dest)


def _apparent_size(path: Path) -> int:
    return os.stat(path).st_size


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
