"""Test targets for the streaming protocols: local processes and local TCP servers.

They stand in for the pod VM's guest agent, which the spherelet will put behind the same interfaces;
here they only give the protocol layer something real to run: ``sh -c`` in a pipe or a pseudo-terminal,
and TCP connections to servers on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import pty
import struct
import termios
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from podvisor.streaming import ExitStatus, OutputStream, PortReader, PortWriter, TerminalSize


def _exit(returncode: int) -> ExitStatus:
    return ExitStatus(code=returncode)


@dataclass
class LocalExecTarget:
    """Runs ``command`` on this machine: with pipes, or in a new pseudo-terminal when ``tty``."""

    command: Sequence[str]
    cwd: str | None = None
    resizes: list[TerminalSize] = field(default_factory=list)
    resized: asyncio.Event = field(default_factory=asyncio.Event)
    pids: list[int] = field(default_factory=list)

    async def run(self, *, stdin: AsyncIterator[bytes] | None, stdout: OutputStream | None,
                  stderr: OutputStream | None, tty: bool, resize: AsyncIterator[TerminalSize]) -> ExitStatus:
        if tty:
            return await self._run_pty(stdin, stdout, resize)
        proc = await asyncio.create_subprocess_exec(
            *self.command, cwd=self.cwd,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE if stdout is not None else asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE if stderr is not None else asyncio.subprocess.DEVNULL,
        )
        self.pids.append(proc.pid)

        async def feed() -> None:
            assert proc.stdin is not None and stdin is not None
            try:
                async for chunk in stdin:
                    proc.stdin.write(chunk)
                    await proc.stdin.drain()
            except (BrokenPipeError, ConnectionResetError):
                pass
            finally:
                proc.stdin.close()

        async def pump(src: asyncio.StreamReader | None, dst: OutputStream | None) -> None:
            if src is None or dst is None:
                return
            while chunk := await src.read(65536):
                await dst.write(chunk)

        feeder = asyncio.create_task(feed()) if stdin is not None else None
        try:
            await asyncio.gather(pump(proc.stdout, stdout), pump(proc.stderr, stderr))
            return _exit(await proc.wait())
        finally:
            if feeder is not None:
                feeder.cancel()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

    async def _run_pty(self, stdin: AsyncIterator[bytes] | None, stdout: OutputStream | None,
                       resize: AsyncIterator[TerminalSize]) -> ExitStatus:
        master, slave = pty.openpty()
        sizes = resize.__aiter__()

        def apply(size: TerminalSize) -> None:
            self.resizes.append(size)
            fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", size.height, size.width, 0, 0))
            self.resized.set()

        # kubectl reports the terminal size right after connecting: start the shell with it
        with contextlib.suppress(TimeoutError, StopAsyncIteration):
            apply(await asyncio.wait_for(sizes.__anext__(), 2.0))

        def controlling_tty() -> None:
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        proc = await asyncio.create_subprocess_exec(
            *self.command, cwd=self.cwd, stdin=slave, stdout=slave, stderr=slave,
            start_new_session=True, preexec_fn=controlling_tty)
        self.pids.append(proc.pid)
        os.close(slave)
        loop = asyncio.get_running_loop()
        output: asyncio.Queue[bytes] = asyncio.Queue()

        def readable() -> None:
            try:
                data = os.read(master, 65536)
            except OSError:
                data = b""
            if not data:
                loop.remove_reader(master)
            output.put_nowait(data)

        loop.add_reader(master, readable)

        async def follow_resizes() -> None:
            async for size in sizes:
                apply(size)

        async def feed() -> None:
            if stdin is None:
                return
            async for chunk in stdin:
                with contextlib.suppress(OSError):
                    os.write(master, chunk)

        helpers = [asyncio.create_task(follow_resizes()), asyncio.create_task(feed())]
        try:
            while data := await output.get():
                if stdout is not None:
                    await stdout.write(data)
            return _exit(await proc.wait())
        finally:
            loop.remove_reader(master)
            for task in helpers:
                task.cancel()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            os.close(master)


@dataclass
class LocalPortTarget:
    """Pod ports mapped to local TCP ports on 127.0.0.1 (an unmapped port refuses)."""

    ports: dict[int, int]

    async def connect(self, port: int) -> tuple[PortReader, PortWriter]:
        local = self.ports.get(port)
        if local is None:
            raise ConnectionRefusedError(f"dial tcp 127.0.0.1:{port}: connect: connection refused")
        return await asyncio.open_connection("127.0.0.1", local)


async def start_echo_server() -> asyncio.Server:
    """Echoes everything; half-closes when the client does."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        except ConnectionError:
            pass
        finally:
            writer.close()

    return await asyncio.start_server(echo, "127.0.0.1", 0)


async def start_http_server(body: bytes) -> asyncio.Server:
    """Answers any request with ``body`` and closes the connection."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", 0)
