"""The plumbing shared by exec over WebSocket and over SPDY: input feeds and running the target.

`ByteFeed` turns pushed chunks (WebSocket messages) into the ``stdin`` iterator an `ExecTarget`
pulls, bounded so a command that does not read its stdin eventually stops the connection's reader
(TCP back-pressure) instead of growing memory. `ResizeFeed` decodes the resize stream - a sequence
of JSON objects ``{"Width":..,"Height":..}`` with no separator, split across frames anywhere - into
`TerminalSize` values. `run_target` runs the target and cancels it if the client goes away first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import AsyncIterator

from podvisor.streaming.target import ExecTarget, ExitStatus, OutputStream, TerminalSize

__all__ = ["ByteFeed", "ResizeFeed", "run_target"]

log = logging.getLogger("podvisor.streaming")


class ByteFeed:
    """Chunks pushed by the protocol reader, pulled by the target as an async iterator."""

    def __init__(self, max_chunks: int = 64) -> None:
        self._chunks: deque[bytes] = deque()
        self._max = max_chunks
        self._closed = False
        self._discard = False
        self._changed = asyncio.Event()

    async def put(self, data: bytes) -> None:
        while len(self._chunks) >= self._max and not (self._discard or self._closed):
            self._changed.clear()
            await self._changed.wait()
        if data and not (self._discard or self._closed):
            self._chunks.append(data)
            self._changed.set()

    def close(self) -> None:
        """End of input (the client half-closed, or went away)."""
        self._closed = True
        self._changed.set()

    def discard(self) -> None:
        """Nobody reads any more: drop what is queued and what comes."""
        self._discard = True
        self._chunks.clear()
        self._changed.set()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        while not self._chunks:
            if self._closed or self._discard:
                raise StopAsyncIteration
            self._changed.clear()
            await self._changed.wait()
        data = self._chunks.popleft()
        self._changed.set()
        return data


class ResizeFeed:
    """Terminal sizes decoded from the resize stream's JSON objects."""

    def __init__(self) -> None:
        self._text = ""
        self._sizes: deque[TerminalSize] = deque()
        self._closed = False
        self._changed = asyncio.Event()
        self._decoder = json.JSONDecoder()

    def feed(self, data: bytes) -> None:
        self._text += data.decode("utf-8", "replace")
        while True:
            text = self._text.lstrip()
            if not text:
                self._text = ""
                return
            try:
                obj, end = self._decoder.raw_decode(text)
            except json.JSONDecodeError:
                self._text = text
                if len(text) > 4096:  # not JSON and never will be
                    self._text = ""
                return
            self._text = text[end:]
            if isinstance(obj, dict):
                try:
                    size = TerminalSize(width=int(obj.get("Width", 0)), height=int(obj.get("Height", 0)))
                except (TypeError, ValueError):
                    continue
                self._sizes.append(size)
                self._changed.set()

    def close(self) -> None:
        self._closed = True
        self._changed.set()

    def __aiter__(self) -> AsyncIterator[TerminalSize]:
        return self

    async def __anext__(self) -> TerminalSize:
        while not self._sizes:
            if self._closed:
                raise StopAsyncIteration
            self._changed.clear()
            await self._changed.wait()
        return self._sizes.popleft()


async def run_target(
    target: ExecTarget,
    *,
    stdin: AsyncIterator[bytes] | None,
    stdout: OutputStream | None,
    stderr: OutputStream | None,
    tty: bool,
    resize: AsyncIterator[TerminalSize],
    client_gone: asyncio.Event,
) -> ExitStatus | BaseException | None:
    """Run ``target``; its ExitStatus, or the exception it raised, or None when the client went away
    first (the run is then cancelled and nothing is left to report)."""
    run = asyncio.ensure_future(target.run(stdin=stdin, stdout=stdout, stderr=stderr, tty=tty, resize=resize))
    gone = asyncio.ensure_future(client_gone.wait())
    try:
        await asyncio.wait({run, gone}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        run.cancel()
        raise
    finally:
        gone.cancel()
    if not run.done():
        run.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await run
        return None
    if run.cancelled():
        return None
    exc = run.exception()
    if exc is not None:
        if isinstance(exc, ConnectionError) and client_gone.is_set():
            return None
        if not isinstance(exc, Exception):
            raise exc
        log.info("exec target failed: %s", exc)
        return exc
    return run.result()
