"""Layer streams: a file-like reader that decompresses gzip, zstd or nothing, and hashes what it yields.

The hash of the uncompressed stream is the layer's ``diff_id`` (in the image config); checking it while
unpacking costs one pass we already make. gzip is inflated in large steps with ``zlib`` (faster than
``gzip.GzipFile``, and multi-member streams work); zstd uses the ``zstandard`` package.
"""

from __future__ import annotations

import hashlib
import zlib
from typing import BinaryIO

from podvisor.images.errors import StagingError, UnsupportedImageError

__all__ = ["LayerReader", "detect_compression"]

_IN_CHUNK = 1 << 20
_OUT_MAX = 4 << 20


def detect_compression(head: bytes) -> str:
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head[:4] == b"\x28\xb5\x2f\xfd":
        return "zstd"
    return "none"


class LayerReader:
    """``read(n)`` over the decompressed bytes of ``source``; ``hexdigest()`` once fully read."""

    def __init__(self, source: BinaryIO, compression: str) -> None:
        self._src = source
        self._hash = hashlib.sha256()
        self._buf = b""
        self._pos = 0
        self._eof = False
        self.bytes_out = 0
        self._zstd: BinaryIO | None = None
        self._pending = b""
        self._zlib: zlib._Decompress | None = None
        if compression == "gzip":
            self._zlib = zlib.decompressobj(wbits=47)   # 32+15: gzip or zlib header, auto
        elif compression == "zstd":
            try:
                import zstandard
            except ImportError as exc:   # pragma: no cover - a dependency of the package
                raise UnsupportedImageError("zstd layers need the 'zstandard' package") from exc
            self._zstd = zstandard.ZstdDecompressor().stream_reader(source, read_across_frames=True,
                                                                    read_size=_IN_CHUNK)
        elif compression != "none":
            raise UnsupportedImageError(f"unsupported layer compression {compression!r}")

    def _fill(self) -> bytes:
        if self._zstd is not None:
            return self._zstd.read(_IN_CHUNK * 2)
        if self._zlib is None:
            return self._src.read(_IN_CHUNK)
        while True:
            if not self._pending:
                self._pending = self._src.read(_IN_CHUNK)
                if not self._pending:
                    if self._zlib.eof:
                        return b""
                    raise StagingError("layer: truncated gzip stream")
            if self._zlib.eof:
                if not self._pending.strip(b"\0"):     # zero padding after the last member
                    self._pending = b""
                    continue
                self._zlib = zlib.decompressobj(wbits=47)   # another member: concatenated gzip is legal
            out = self._zlib.decompress(self._pending, _OUT_MAX)
            self._pending = self._zlib.unconsumed_tail or self._zlib.unused_data
            if out:
                return out

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            parts = [self._buf[self._pos:]]
            while chunk := self._next():
                parts.append(chunk)
            self._buf, self._pos = b"", 0
            data = b"".join(parts)
            return data
        avail = len(self._buf) - self._pos
        if avail >= n:
            data = self._buf[self._pos:self._pos + n]
            self._pos += n
            return data
        parts = [self._buf[self._pos:]] if avail else []
        need = n - avail
        self._buf, self._pos = b"", 0
        while need > 0:
            chunk = self._next()
            if not chunk:
                break
            if len(chunk) <= need:
                parts.append(chunk)
                need -= len(chunk)
            else:
                parts.append(chunk[:need])
                self._buf, self._pos = chunk, need
                need = 0
        return b"".join(parts)

    def _next(self) -> bytes:
        if self._eof:
            return b""
        chunk = self._fill()
        if not chunk:
            self._eof = True
            return b""
        self._hash.update(chunk)
        self.bytes_out += len(chunk)
        return chunk

    def tell(self) -> int:
        """Bytes handed out so far (what `tarfile` compares offsets against)."""
        return self.bytes_out - (len(self._buf) - self._pos)

    def seek(self, offset: int, whence: int = 0) -> int:
        """Forward only (skipping by reading): enough for `tarfile` reading one member after another."""
        here = self.tell()
        target = offset if whence == 0 else here + offset if whence == 1 else -1
        if target < here:
            raise OSError("a layer stream cannot seek backwards")
        while here < target:
            chunk = self.read(min(target - here, _IN_CHUNK))
            if not chunk:
                break
            here += len(chunk)
        return here

    def seekable(self) -> bool:
        return True

    def drain(self) -> None:
        """Read (and hash) to the end, e.g. the zero blocks after a tar's end marker."""
        self._buf, self._pos = b"", 0
        while self._next():
            pass

    def hexdigest(self) -> str:
        return self._hash.hexdigest()
