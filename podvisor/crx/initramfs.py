"""A deterministic initramfs writer (cpio "newc", the format the kernel unpacks).

Written here rather than shelling out to ``cpio`` so the archive is byte-for-byte reproducible (fixed
inode numbers, owners and times), which keeps the bundle's digests stable across rebuilds, and so device
nodes (``/dev/console``) can be added without root or mknod.

The archive is left uncompressed: under TCG the guest decompresses slower than QEMU copies a few
more megabytes into guest memory.
"""

from __future__ import annotations

import stat
from typing import BinaryIO

__all__ = ["CpioWriter"]


class CpioWriter:
    """Append entries, then ``close()`` to write the trailer. Parents must be added before children."""

    def __init__(self, out: BinaryIO, *, mtime: int = 0) -> None:
        self._out = out
        self._ino = 1
        self._mtime = mtime
        self._names: set[str] = set()
        self.size = 0

    def _entry(self, name: str, mode: int, data: bytes = b"", *, rdev: tuple[int, int] = (0, 0), nlink: int = 1) -> None:
        name = name.strip("/") or "."
        if name in self._names:
            raise ValueError(f"duplicate initramfs entry {name}")
        self._names.add(name)
        encoded = name.encode() + b"\0"
        fields = [self._ino, mode, 0, 0, nlink, self._mtime, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0]
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        self._ino += 1
        self._write(header + encoded)
        self._pad()
        if data:
            self._write(data)
            self._pad()

    def _write(self, b: bytes) -> None:
        self._out.write(b)
        self.size += len(b)

    def _pad(self) -> None:
        if self.size % 4:
            self._write(b"\0" * (4 - self.size % 4))

    def add_dir(self, name: str, mode: int = 0o755) -> None:
        self._entry(name, stat.S_IFDIR | mode, nlink=2)

    def add_file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | mode, data)

    def add_symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def add_char_device(self, name: str, major: int, minor: int, mode: int = 0o600) -> None:
        self._entry(name, stat.S_IFCHR | mode, rdev=(major, minor))

    def close(self) -> None:
        self._entry("TRAILER!!!", 0, nlink=1)
        # the kernel reads in 512-byte blocks; pad like cpio does
        if self.size % 512:
            self._write(b"\0" * (512 - self.size % 512))
