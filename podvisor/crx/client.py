"""The host side of the guest protocol (see `podvisor.crx.protocol`): an asyncio client.

`AgentClient` runs over any byte `Transport`: the VM's virtio-serial unix socket (hostd's own
connection) or hostd's WebSocket relay (what the node agent uses, `podvisor.hostd.client`). One reader
task matches responses to requests by id, routes Output/End events to `Stream` objects and hands
ContainerExit broadcasts to listeners. When the transport closes, every pending call fails with
`AgentDisconnected` and every stream ends.

Error tree::

    AgentError (code, message)          the agent answered ok=false
    └── AgentDisconnected               the connection went away (code "Unavailable")
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Protocol

from podvisor.crx.protocol import (
    PROTOCOL_VERSION,
    ContainerStatus,
    CreateContainer,
    FrameDecoder,
    SetupSandbox,
    encode_frame,
)
from podvisor.crx.qemu import open_unix

__all__ = ["AgentClient", "AgentError", "AgentDisconnected", "Stream", "Transport", "UnixTransport"]


class AgentError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class AgentDisconnected(AgentError):
    def __init__(self, message: str = "the guest agent connection closed") -> None:
        super().__init__("Unavailable", message)


class Transport(Protocol):
    async def send(self, data: bytes) -> None: ...

    async def recv(self) -> bytes: ...  # b"" at the end

    async def close(self) -> None: ...


class UnixTransport:
    """The VM's agent port as QEMU exposes it: a unix stream socket."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer

    @classmethod
    async def connect(cls, path: str | os.PathLike[str], *, timeout_s: float = 10.0) -> UnixTransport:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                r, w = await open_unix(Path(path))
                return cls(r, w)
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > deadline:
                    raise AgentDisconnected(f"agent socket {path} is not there") from None
                await asyncio.sleep(0.005)

    async def send(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()

    async def recv(self) -> bytes:
        try:
            return await self._reader.read(1 << 16)
        except (ConnectionError, OSError):
            return b""

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()


_END = object()


class Stream:
    """One stream: iterate ``(fd, bytes)``; ``exit_code`` is set when it ends (exec only)."""

    def __init__(self, client: AgentClient, sid: str) -> None:
        self.client = client
        self.id = sid
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self.ended = asyncio.Event()
        self.exit_code: int | None = None

    def _deliver(self, header: dict[str, Any], payload: bytes) -> None:
        if header.get("type") == "Output":
            self._queue.put_nowait((int(header.get("fd", 1)), payload))
        elif header.get("type") == "End":
            if "exitCode" in header:
                self.exit_code = int(header["exitCode"])
            self._finish()

    def _finish(self) -> None:
        if not self.ended.is_set():
            self.ended.set()
            self._queue.put_nowait(_END)
            self.client._streams.pop(self.id, None)

    def __aiter__(self) -> AsyncIterator[tuple[int, bytes]]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[tuple[int, bytes]]:
        while True:
            item = await self._queue.get()
            if item is _END:
                self._queue.put_nowait(_END)
                return
            yield item

    async def read_all(self) -> tuple[bytes, bytes]:
        out, err = bytearray(), bytearray()
        async for fd, data in self:
            (err if fd == 2 else out).extend(data)
        return bytes(out), bytes(err)

    async def write(self, data: bytes) -> None:
        for i in range(0, len(data), 1 << 16):
            await self.client.notify({"type": "Input", "stream": self.id}, data[i:i + (1 << 16)])

    async def close_input(self) -> None:
        await self.client.notify({"type": "CloseInput", "stream": self.id})

    async def resize(self, rows: int, cols: int) -> None:
        await self.client.call("Resize", stream=self.id, rows=rows, cols=cols)

    async def signal(self, signal: int) -> None:
        await self.client.call("SignalExec", stream=self.id, signal=signal)

    async def cancel(self) -> None:
        if not self.ended.is_set():
            with contextlib.suppress(AgentError):
                await self.client.notify({"type": "CancelStream", "stream": self.id})
            self._finish()

    async def wait(self) -> int | None:
        await self.ended.wait()
        return self.exit_code


class AgentClient:
    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self._ids = itertools.count(secrets.randbelow(1 << 30) + 1)
        self._stream_prefix = secrets.token_hex(3)
        self._stream_ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[tuple[dict[str, Any], bytes]]] = {}
        self._streams: dict[str, Stream] = {}
        self._send_lock = asyncio.Lock()
        self.exit_listeners: list[Callable[[ContainerStatus], None]] = []
        self.raw_listeners: list[Callable[[dict[str, Any], bytes], None]] = []
        self.closed = asyncio.Event()
        self.hello_info: dict[str, Any] = {}
        self._reader = asyncio.create_task(self._read_loop(), name="pv-agent-reader")

    @classmethod
    async def connect_unix(cls, path: str | os.PathLike[str], *, timeout_s: float = 10.0) -> AgentClient:
        return cls(await UnixTransport.connect(path, timeout_s=timeout_s))

    # ---- plumbing ----

    async def _read_loop(self) -> None:
        decoder = FrameDecoder()
        try:
            while True:
                data = await self.transport.recv()
                if not data:
                    break
                for header, payload in decoder.feed(data):
                    self._dispatch(header, payload)
        except asyncio.CancelledError:
            pass
        finally:
            self.closed.set()
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(AgentDisconnected())
            self._pending.clear()
            for s in list(self._streams.values()):
                s._finish()

    def _dispatch(self, header: dict[str, Any], payload: bytes) -> None:
        kind = header.get("type")
        for listener in list(self.raw_listeners):
            listener(header, payload)
        if kind == "Response":
            fut = self._pending.pop(int(header.get("id", 0)), None)
            if fut is not None and not fut.done():
                fut.set_result((header, payload))
        elif kind in ("Output", "End"):
            stream = self._streams.get(str(header.get("stream")))
            if stream is not None:
                stream._deliver(header, payload)
        elif kind == "ContainerExit":
            for cb in list(self.exit_listeners):
                cb(header["status"])

    async def _send(self, header: dict[str, Any], payload: bytes = b"") -> None:
        if self.closed.is_set():
            raise AgentDisconnected()
        frame = encode_frame(header, payload)
        async with self._send_lock:
            try:
                await self.transport.send(frame)
            except (ConnectionError, OSError) as exc:
                raise AgentDisconnected(str(exc)) from exc

    async def request(self, header: dict[str, Any], payload: bytes = b"", *,
                      timeout_s: float | None = 30.0) -> tuple[dict[str, Any], bytes]:
        """Send one request (an id is assigned) and return the response header and payload."""
        rid = next(self._ids)
        fut: asyncio.Future[tuple[dict[str, Any], bytes]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        try:
            await self._send({**header, "id": rid}, payload)
            resp, rpayload = await asyncio.wait_for(fut, timeout_s) if timeout_s else await fut
        finally:
            self._pending.pop(rid, None)
        if not resp.get("ok"):
            err = resp.get("error") or {}
            raise AgentError(str(err.get("code", "Internal")), str(err.get("message", "")))
        return resp, rpayload

    async def call(self, type_: str, payload: bytes = b"", *, timeout_s: float | None = 30.0, **fields: Any) -> dict[str, Any]:
        resp, _ = await self.request({"type": type_, **fields}, payload, timeout_s=timeout_s)
        return resp

    async def notify(self, header: dict[str, Any], payload: bytes = b"") -> None:
        await self._send(header, payload)

    def open_stream(self, sid: str | None = None) -> Stream:
        sid = sid or f"{self._stream_prefix}-{next(self._stream_ids)}"
        stream = Stream(self, sid)
        self._streams[sid] = stream
        return stream

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader
        await self.transport.close()

    # ---- the calls ----

    async def hello(self, *, timeout_s: float | None = 30.0) -> dict[str, Any]:
        resp = await self.call("Hello", secrets.token_bytes(32), timeout_s=timeout_s, version=PROTOCOL_VERSION,
                               hostTime=time.time_ns())
        if int(resp.get("version", 0)) != PROTOCOL_VERSION:
            raise AgentError("FailedPrecondition", f"guest agent speaks protocol v{resp.get('version')}, "
                             f"host v{PROTOCOL_VERSION}")
        self.hello_info = resp
        return resp

    async def ping(self, *, timeout_s: float = 5.0) -> None:
        await self.call("Ping", timeout_s=timeout_s)

    async def setup_sandbox(self, spec: SetupSandbox) -> dict[str, Any]:
        return await self.call("SetupSandbox", timeout_s=60.0, **spec)

    async def attach_disk(self, disk_id: str, kind: str = "image") -> dict[str, Any]:
        return await self.call("AttachDisk", id=disk_id, kind=kind)

    async def create_volume(self, name: str, *, medium: str = "", size_limit_bytes: int = 0) -> dict[str, Any]:
        return await self.call("CreateVolume", name=name, medium=medium, sizeLimitBytes=size_limit_bytes)

    async def write_file(self, path: str, data: bytes, *, mode: int = 0o644, uid: int | None = None,
                         gid: int | None = None) -> None:
        fields: dict[str, Any] = {"path": path, "mode": mode}
        if uid is not None:
            fields.update(uid=uid, gid=gid if gid is not None else 0)
        await self.call("WriteFile", data, **fields)

    async def make_dir(self, path: str, *, mode: int = 0o755) -> None:
        await self.call("WriteFile", path=path, mode=mode, directory=True)

    async def symlink(self, path: str, target: str) -> None:
        await self.call("WriteFile", path=path, symlink=target)

    async def remove_path(self, path: str) -> None:
        await self.call("RemovePath", path=path)

    async def create_container(self, spec: CreateContainer) -> None:
        await self.call("CreateContainer", **spec)

    async def start_container(self, container_id: str) -> dict[str, Any]:
        return await self.call("StartContainer", timeout_s=60.0, containerId=container_id)

    async def signal_container(self, container_id: str, signal: int, *, all_processes: bool = False) -> bool:
        resp = await self.call("SignalContainer", containerId=container_id, signal=signal, all=all_processes)
        return bool(resp.get("delivered"))

    async def wait_container(self, container_id: str, *, timeout_s: float | None = None) -> ContainerStatus:
        resp = await self.call("WaitContainer", timeout_s=timeout_s, containerId=container_id)
        status: ContainerStatus = resp["status"]
        return status

    async def remove_container(self, container_id: str) -> None:
        await self.call("RemoveContainer", containerId=container_id)

    async def list_containers(self) -> list[ContainerStatus]:
        resp = await self.call("ListContainers")
        containers: list[ContainerStatus] = resp["containers"]
        return containers

    async def stats(self) -> dict[str, Any]:
        return await self.call("Stats")

    async def exec(self, container_id: str, args: list[str], *, tty: bool = False, stdin: bool = False,
                   env: list[str] | None = None, rows: int = 24, cols: int = 80, working_dir: str = "",
                   user: dict[str, Any] | None = None) -> Stream:
        """Start a process in a running container; read its output from the returned stream."""
        stream = self.open_stream()
        fields: dict[str, Any] = {"stream": stream.id, "containerId": container_id, "args": args, "tty": tty,
                                  "stdin": stdin, "rows": rows, "cols": cols}
        if env is not None:
            fields["env"] = env
        if working_dir:
            fields["workingDir"] = working_dir
        if user is not None:
            fields["user"] = user
        try:
            await self.call("Exec", **fields)
        except BaseException:
            stream._finish()
            raise
        return stream

    async def port_forward(self, port: int) -> Stream:
        stream = self.open_stream()
        try:
            await self.call("PortForward", stream=stream.id, port=port)
        except BaseException:
            stream._finish()
            raise
        return stream

    async def read_log(self, *, container_id: str | None = None, path: str | None = None, follow: bool = False,
                       offset: int = 0) -> Stream:
        """The CRI log bytes from ``offset``; with ``follow`` the stream stays open until the container exits."""
        stream = self.open_stream()
        fields: dict[str, Any] = {"stream": stream.id, "follow": follow, "offset": offset}
        if container_id:
            fields["containerId"] = container_id
        if path:
            fields["path"] = path
        try:
            await self.call("ReadLog", **fields)
        except BaseException:
            stream._finish()
            raise
        return stream

    async def attach(self, container_id: str, *, stdin: bool = False, rows: int | None = None,
                     cols: int | None = None) -> Stream:
        """The container's output as it is produced (fd 1/2; a tty container has only 1) and, with
        ``stdin``, its standard input: ``write`` feeds it, ``resize`` sizes a tty container's terminal
        (``rows``/``cols`` set it at once), ``close_input``/``cancel`` end it only for a container
        created with ``stdinOnce``."""
        stream = self.open_stream()
        fields: dict[str, Any] = {"stream": stream.id, "containerId": container_id, "stdin": stdin}
        if rows is not None and cols is not None:
            fields.update(rows=rows, cols=cols)
        try:
            await self.call("Attach", **fields)
        except BaseException:
            stream._finish()
            raise
        return stream

    async def resize_container(self, container_id: str, rows: int, cols: int) -> None:
        await self.call("Resize", containerId=container_id, rows=rows, cols=cols)

    async def shutdown(self) -> None:
        with contextlib.suppress(AgentDisconnected, asyncio.TimeoutError):
            await self.call("Shutdown", timeout_s=10.0)
