"""Adapters from the runtime's streams to what `podvisor.streaming` serves.

* `RuntimeExecTarget`: an exec session — the client's stdin and terminal sizes go to the process, its
  output comes back on stdout/stderr, its exit code ends the session. The process is cancelled when
  the client goes away.
* `RuntimePortForward`: a connection to a port inside the pod VM (the guest agent connects to
  127.0.0.1:port), presented as an asyncio-like reader/writer pair.
* `RuntimeAttachTarget`: ``kubectl attach`` — the container's output from the moment of attaching
  until it exits, the client's stdin into the container's own stdin (a pipe, or its pty with resize).
  The client going away ends only this session (and, for a ``stdinOnce`` container, its stdin).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from podvisor.spherelet.aio import cancel_and_wait
from podvisor.spherelet.runtime import ProcessStream, RuntimeFailure, StreamingRuntime
from podvisor.streaming.target import ExecError, ExitStatus, OutputStream, TerminalSize

__all__ = ["RuntimeExecTarget", "RuntimePortForward", "RuntimeAttachTarget"]


class RuntimeExecTarget:
    def __init__(self, runtime: StreamingRuntime, sandbox_id: str, container_id: str, command: list[str]) -> None:
        self.runtime, self.sandbox_id, self.container_id, self.command = runtime, sandbox_id, container_id, command

    async def run(self, *, stdin: AsyncIterator[bytes] | None, stdout: OutputStream | None,
                  stderr: OutputStream | None, tty: bool, resize: AsyncIterator[TerminalSize]) -> ExitStatus:
        first = await _first_size(tty, resize)
        try:
            proc = await self.runtime.exec(self.sandbox_id, self.container_id, self.command, tty=tty,
                                           stdin=stdin is not None, rows=first.height if first else 24,
                                           cols=first.width if first else 80)
        except RuntimeFailure as exc:
            raise ExecError(str(exc)) from exc
        try:
            await _relay(proc, stdin=stdin, stdout=stdout, stderr=stderr, tty=tty, resize=resize)
            code = await proc.wait()
            return ExitStatus(code if code is not None else 0)
        except asyncio.CancelledError:
            await proc.cancel()
            raise


async def _first_size(tty: bool, resize: AsyncIterator[TerminalSize]) -> TerminalSize | None:
    """kubectl sends the terminal size first; start the session with it if it is there already."""
    if not tty:
        return None
    with contextlib.suppress(TimeoutError, StopAsyncIteration):
        return await asyncio.wait_for(resize.__anext__(), 0.2)
    return None


async def _relay(proc: ProcessStream, *, stdin: AsyncIterator[bytes] | None, stdout: OutputStream | None,
                 stderr: OutputStream | None, tty: bool, resize: AsyncIterator[TerminalSize]) -> None:
    """One session's plumbing, shared by exec and attach: stdin and resizes in, output out, until the
    process's output ends."""
    pumps = [asyncio.ensure_future(_pump_resize(proc, resize))]
    if stdin is not None:
        pumps.append(asyncio.ensure_future(_pump_stdin(proc, stdin)))
    try:
        async for fd, data in proc:
            out = stderr if fd == 2 and not tty else stdout
            if out is not None:
                await out.write(data)
    finally:
        await cancel_and_wait(pumps)


async def _pump_stdin(proc: ProcessStream, stdin: AsyncIterator[bytes]) -> None:
    with contextlib.suppress(RuntimeFailure, ConnectionError):
        async for chunk in stdin:
            await proc.write(chunk)
        await proc.close_input()


async def _pump_resize(proc: ProcessStream, resize: AsyncIterator[TerminalSize]) -> None:
    with contextlib.suppress(RuntimeFailure, ConnectionError):
        async for size in resize:
            await proc.resize(size.height, size.width)


class _Reader:
    def __init__(self, proc: ProcessStream) -> None:
        self._it = proc.__aiter__()
        self._buf = b""
        self._eof = False

    async def read(self, n: int = -1) -> bytes:
        if not self._buf and not self._eof:
            try:
                _, self._buf = await self._it.__anext__()
            except StopAsyncIteration:
                self._eof = True
        if n < 0 or n >= len(self._buf):
            out, self._buf = self._buf, b""
        else:
            out, self._buf = self._buf[:n], self._buf[n:]
        return out


class _Writer:
    def __init__(self, proc: ProcessStream) -> None:
        self.proc = proc
        self._pending = bytearray()
        self._closed = False

    def write(self, data: bytes) -> None:
        self._pending += data

    async def drain(self) -> None:
        if self._pending:
            data, self._pending = bytes(self._pending), bytearray()
            try:
                await self.proc.write(data)
            except RuntimeFailure as exc:
                raise ConnectionResetError(str(exc)) from exc

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        asyncio.ensure_future(self._eof())

    async def _eof(self) -> None:
        with contextlib.suppress(RuntimeFailure, ConnectionError):
            await self.drain()
            await self.proc.close_input()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            asyncio.ensure_future(self.proc.cancel())

    async def wait_closed(self) -> None:
        return None


class RuntimePortForward:
    def __init__(self, runtime: StreamingRuntime, sandbox_id: str) -> None:
        self.runtime, self.sandbox_id = runtime, sandbox_id

    async def connect(self, port: int) -> tuple[_Reader, _Writer]:
        try:
            proc = await self.runtime.port_forward(self.sandbox_id, port)
        except RuntimeFailure as exc:
            raise ConnectionRefusedError(str(exc)) from exc
        return _Reader(proc), _Writer(proc)


class RuntimeAttachTarget:
    def __init__(self, runtime: StreamingRuntime, sandbox_id: str, container_id: str) -> None:
        self.runtime, self.sandbox_id, self.container_id = runtime, sandbox_id, container_id

    async def run(self, *, stdin: AsyncIterator[bytes] | None, stdout: OutputStream | None,
                  stderr: OutputStream | None, tty: bool, resize: AsyncIterator[TerminalSize]) -> ExitStatus:
        first = await _first_size(tty, resize)
        try:
            proc = await self.runtime.attach(self.sandbox_id, self.container_id, stdin=stdin is not None,
                                             rows=first.height if first else None,
                                             cols=first.width if first else None)
        except RuntimeFailure as exc:
            raise ExecError(str(exc)) from exc
        try:
            await _relay(proc, stdin=stdin, stdout=stdout, stderr=stderr, tty=tty, resize=resize)
            return ExitStatus(0)
        finally:
            await proc.cancel()
