"""Container logs as ``kubectl logs`` wants them, from the CRI-format files the guest writes.

Each line of a log file is ``<RFC 3339 time with nanoseconds> <stdout|stderr> <F|P> <text>``; ``P``
marks a piece of a line too long for one write, ``F`` the piece that ends it. `LogFilter` turns those
lines into the user's text: the tag and stream are dropped, the time is kept in front when
``timestamps`` is asked for, and lines older than ``since`` are skipped. `tail` keeps the last N full
lines of what is already written, and `log_chunks` combines them: ``--tail`` over the existing file,
then ``--follow`` from where that read ended, so no line is shown twice or lost.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime

__all__ = ["LogOptions", "LogFilter", "parse_time", "tail", "log_chunks"]


@dataclass(frozen=True)
class LogOptions:
    follow: bool = False
    previous: bool = False
    timestamps: bool = False
    tail_lines: int | None = None
    since: float | None = None          # seconds since the epoch
    limit_bytes: int | None = None


def parse_time(text: str) -> float | None:
    """RFC 3339 with up to nanoseconds (Python's parser takes microseconds at most)."""
    t = text.strip()
    if not t:
        return None
    if t.endswith("Z"):
        t = t[:-1] + "+00:00"
    main, dot, rest = t.partition(".")
    if dot:
        digits = ""
        i = 0
        while i < len(rest) and rest[i].isdigit():
            digits += rest[i]
            i += 1
        t = f"{main}.{(digits + '000000')[:6]}{rest[i:]}"
    try:
        return datetime.fromisoformat(t).timestamp()
    except ValueError:
        return None


class LogFilter:
    """Feed raw CRI bytes in any chunking; get the text to show."""

    def __init__(self, *, timestamps: bool = False, since: float | None = None) -> None:
        self.timestamps, self.since = timestamps, since
        self._rest = b""

    def feed(self, data: bytes) -> bytes:
        buf = self._rest + data
        lines = buf.split(b"\n")
        self._rest = lines.pop()
        return b"".join(self._line(line) for line in lines)

    def flush(self) -> bytes:
        rest, self._rest = self._rest, b""
        return self._line(rest) if rest else b""

    def _line(self, line: bytes) -> bytes:
        parts = line.split(b" ", 3)
        if len(parts) < 3:
            return b""
        ts, _stream, tag = parts[0], parts[1], parts[2]
        text = parts[3] if len(parts) > 3 else b""
        if self.since is not None:
            when = parse_time(ts.decode(errors="replace"))
            if when is not None and when < self.since:
                return b""
        out = text + (b"\n" if tag != b"P" else b"")
        return ts + b" " + out if self.timestamps else out


def tail(data: bytes, n: int) -> bytes:
    """The raw CRI lines of the last ``n`` full lines (a full line may span several P pieces)."""
    if n <= 0:
        return b""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    full = 0
    start = len(lines)
    for i in range(len(lines) - 1, -1, -1):
        parts = lines[i].split(b" ", 3)
        if len(parts) >= 3 and parts[2] != b"P":
            if full == n:
                break
            full += 1
        start = i
    return b"".join(line + b"\n" for line in lines[start:])


async def log_chunks(read: Callable[[bool, int], AsyncIterator[bytes]], opts: LogOptions) -> AsyncIterator[bytes]:
    """The user's log text. ``read(follow, offset)`` yields the raw file from ``offset``."""
    filt = LogFilter(timestamps=opts.timestamps, since=opts.since)
    offset = 0
    if opts.tail_lines is not None or not opts.follow:
        raw = bytearray()
        async for chunk in read(False, 0):
            raw += chunk
        offset = len(raw)
        data = bytes(raw)
        if opts.tail_lines is not None:
            data = tail(data, opts.tail_lines)
        out = filt.feed(data)
        if out:
            yield out
        if not opts.follow:
            last = filt.flush()
            if last:
                yield last
            return
    async for chunk in read(True, offset):
        out = filt.feed(chunk)
        if out:
            yield out
    last = filt.flush()
    if last:
        yield last
