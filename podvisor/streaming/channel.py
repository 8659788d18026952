"""Byte pipes under the streaming protocols, and taking a raw connection over from aiohttp.

A SPDY session and the upgrade proxy only need a reliable, ordered byte pipe (`ByteChannel`). Three
carry one here:

- `RawConnection`: the client's TCP/TLS connection itself after ``101 Switching Protocols``. aiohttp
  has no public hijack, so we do what its own WebSocketResponse does: send the 101 through a normal
  response, then install a payload parser on the request's protocol that hands every later byte to us
  (`aiohttp.web.BaseRequest.protocol.set_parser`), and write through the response's writer, which
  applies the transport's flow control. aiohttp only treats ``Upgrade: websocket`` as an upgrade, but
  that does not matter here: the client sends nothing after its upgrade request until it has our 101,
  and from then on every byte goes to our parser.
- `WebSocketChannel`: binary WebSocket messages as a byte stream, as kubectl tunnels SPDY for
  port-forward (``SPDY/3.1+portforward.k8s.io``): message boundaries mean nothing, a normal close is
  the end of the stream.
- `StreamChannel`: an asyncio reader/writer pair (an outgoing connection to a node agent, tests).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Mapping
from typing import Protocol

from aiohttp import WSMsgType, web

__all__ = [
    "ByteChannel",
    "RawConnection",
    "UpgradedResponse",
    "WebSocketChannel",
    "StreamChannel",
    "upgrade_raw",
    "client_gone",
]

_READ_LIMIT = 1 << 20


class ByteChannel(Protocol):
    """An ordered byte pipe. `read` returns ``b""`` once the peer has closed."""

    async def read(self) -> bytes: ...

    async def write(self, data: bytes) -> None: ...

    async def close(self) -> None: ...


class UpgradedResponse(web.StreamResponse):
    """The 101 response of a connection we took over: once the handler returns, aiohttp must neither
    write to nor keep alive the connection - it is ours (and usually closed already)."""

    async def write_eof(self, data: bytes = b"") -> None:
        return None


class _Feeder:
    """The payload parser aiohttp feeds after the upgrade: buffers bytes for `RawConnection.read`
    and pauses the transport while the buffer is over its limit."""

    def __init__(self, transport: asyncio.Transport, limit: int) -> None:
        self._transport = transport
        self._limit = limit
        self._buf = bytearray()
        self._eof = False
        self._paused = False
        self._wakeup = asyncio.Event()

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        if data:
            self._buf += data
            self._wakeup.set()
            if len(self._buf) > self._limit and not self._paused:
                with contextlib.suppress(Exception):
                    self._transport.pause_reading()
                self._paused = True
        return False, b""

    def feed_eof(self) -> None:
        self._eof = True
        self._wakeup.set()

    async def read(self) -> bytes:
        while not self._buf and not self._eof:
            self._wakeup.clear()
            await self._wakeup.wait()
        data = bytes(self._buf)
        self._buf.clear()
        if self._paused:
            self._paused = False
            with contextlib.suppress(Exception):
                self._transport.resume_reading()
        return data


class RawConnection:
    """The client's connection after we answered 101 (see the module docstring)."""

    def __init__(self, request: web.BaseRequest, response: UpgradedResponse, transport: asyncio.Transport,
                 feeder: _Feeder) -> None:
        self.request = request
        self.response = response
        self._transport = transport
        self._feeder = feeder
        self._closed = False

    async def read(self) -> bytes:
        return await self._feeder.read()

    async def write(self, data: bytes) -> None:
        if self._closed or self._transport.is_closing():
            raise ConnectionResetError("connection closed")
        await self.response.write(data)

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._transport.close()


async def upgrade_raw(request: web.BaseRequest, headers: Mapping[str, str] | Iterable[tuple[str, str]], *,
                      status: int = 101, reason: str | None = None, read_limit: int = _READ_LIMIT) -> RawConnection:
    """Answer ``request`` with ``status`` (normally 101) and ``headers``, and take the connection
    over. Return the `RawConnection`; the handler must return ``conn.response`` when done."""
    transport = request.transport
    if transport is None or transport.is_closing():
        raise ConnectionResetError("client went away before the upgrade")
    response = UpgradedResponse(status=status, reason=reason)
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    for name, value in pairs:
        response.headers.add(name, value)
    response.force_close()
    feeder = _Feeder(transport, read_limit)
    await response.prepare(request)
    request.protocol.set_parser(feeder)  # type: ignore[arg-type]  # duck-typed like WebSocketReader
    request.protocol.keep_alive(False)
    return RawConnection(request, response, transport, feeder)


def client_gone(request: web.BaseRequest) -> bool:
    """True once the client's connection is closed (aiohttp does not cancel handlers by default)."""
    transport = request.transport
    return transport is None or transport.is_closing()


class WebSocketChannel:
    """Binary messages of an open WebSocket as a byte stream (SPDY tunnelled in WebSocket)."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self._ws = ws

    async def read(self) -> bytes:
        while True:
            msg = await self._ws.receive()
            if msg.type == WSMsgType.BINARY:
                if msg.data:
                    return bytes(msg.data)
                continue
            if msg.type in (WSMsgType.PING, WSMsgType.PONG):
                continue
            if msg.type == WSMsgType.TEXT:
                raise ConnectionError("unexpected text message in a binary tunnel")
            return b""  # CLOSE, CLOSING, CLOSED, ERROR

    async def write(self, data: bytes) -> None:
        if self._ws.closed:
            raise ConnectionResetError("websocket closed")
        await self._ws.send_bytes(data)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._ws.close()


class StreamChannel:
    """An asyncio (reader, writer) pair as a `ByteChannel`."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def read(self) -> bytes:
        try:
            return await self.reader.read(65536)
        except (ConnectionError, OSError):
            return b""

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()
