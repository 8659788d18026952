"""What the protocol layer asks of whoever really runs things: the narrow backend interfaces.

The protocol code (WebSocket channels, SPDY) never knows what a container is. For exec and attach it
calls an `ExecTarget` with plain byte streams; for port-forward it asks a `PortForwardTarget` for a
duplex byte connection to a port. The spherelet implements them on top of the pod VM's guest agent;
tests implement them with local processes and sockets.

Cancellation: when the client goes away, the protocol layer cancels ``run`` (and closes the
connections it got from ``connect``); implementations clean up (stop the exec'd process, close the
guest channel) on `asyncio.CancelledError`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "TerminalSize",
    "ExitStatus",
    "ExecError",
    "OutputStream",
    "ExecTarget",
    "PortReader",
    "PortWriter",
    "PortForwardTarget",
    "ExecOptions",
    "parse_bool",
]


@dataclass(frozen=True, slots=True)
class TerminalSize:
    """A terminal size the client reported (kubectl sends one at start and one per SIGWINCH)."""

    width: int
    height: int


@dataclass(frozen=True, slots=True)
class ExitStatus:
    """How the command ended. ``code`` 0 is success; otherwise kubectl exits with ``code`` (0-255;
    a process killed by signal N is reported as 128+N, as shells do). ``message`` is extra detail for
    the Status message."""

    code: int = 0
    message: str = ""


class ExecError(Exception):
    """The command could not be run at all (no such container, executable not found, the guest is
    unreachable). Sent to the client as an InternalError Status; kubectl prints the message."""


class OutputStream(Protocol):
    """Where the command's output goes. ``write`` returns once the bytes are handed to the
    connection (this is the back-pressure: a slow client slows the command's output)."""

    async def write(self, data: bytes) -> None: ...


class ExecTarget(Protocol):
    """Runs one exec (or attach) session. ``stdin`` ends when the client half-closes it (or goes
    away); it is None when the client asked for no stdin. ``stderr`` is None with a tty or when not
    asked for. ``resize`` yields terminal sizes while the session lasts (nothing without a tty)."""

    async def run(
        self,
        *,
        stdin: AsyncIterator[bytes] | None,
        stdout: OutputStream | None,
        stderr: OutputStream | None,
        tty: bool,
        resize: AsyncIterator[TerminalSize],
    ) -> ExitStatus: ...


class PortReader(Protocol):
    async def read(self, n: int = -1) -> bytes: ...


class PortWriter(Protocol):
    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...

    def can_write_eof(self) -> bool: ...

    def write_eof(self) -> None: ...

    def close(self) -> None: ...

    async def wait_closed(self) -> None: ...


class PortForwardTarget(Protocol):
    """Opens connections to a port of the pod. asyncio's (StreamReader, StreamWriter) from
    ``asyncio.open_connection`` fit as they are. Raise OSError (e.g. ConnectionRefusedError) when the
    port cannot be reached: its text goes to the client's error stream."""

    async def connect(self, port: int) -> tuple[PortReader, PortWriter]: ...


def parse_bool(value: str | None) -> bool:
    """A boolean query parameter as Go's ParseBool reads it (kubectl sends ``true``, the kubelet
    convention is ``1``)."""
    return (value or "").strip().lower() in ("1", "t", "true")


@dataclass(frozen=True, slots=True)
class ExecOptions:
    """The query of an exec or attach request (``command`` is empty for attach)."""

    command: tuple[str, ...] = ()
    container: str = ""
    stdin: bool = False
    stdout: bool = False
    stderr: bool = False
    tty: bool = False

    @classmethod
    def from_query(cls, query: Mapping[str, str], *, command: tuple[str, ...] | None = None) -> ExecOptions:
        """Parse kube's parameters; raise ValueError with the kubelet's message when no stream is
        asked for. With a tty there is no separate stderr (the kubelet drops it silently)."""
        if command is None:
            getall = getattr(query, "getall", None)
            command = tuple(getall("command", [])) if getall is not None else tuple(
                [query["command"]] if "command" in query else [])
        tty = parse_bool(query.get("tty"))
        opts = cls(
            command=command,
            container=query.get("container", ""),
            stdin=parse_bool(query.get("stdin")),
            stdout=parse_bool(query.get("stdout")),
            stderr=parse_bool(query.get("stderr")) and not tty,
            tty=tty,
        )
        if not (opts.stdin or opts.stdout or opts.stderr):
            raise ValueError("you must specify at least 1 of stdin, stdout, stderr")
        return opts
