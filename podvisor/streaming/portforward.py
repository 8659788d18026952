"""Port-forward: kubectl's SPDY protocol (plain or tunnelled in WebSocket) and the Python client's
WebSocket channels.

kubectl (``portforward.k8s.io`` over SPDY/3.1): one session carries every forwarded connection. For
each local connection kubectl opens two streams with headers ``streamType`` (``error`` or ``data``),
``port`` and ``requestID``. When both streams of a request are there we connect to the port and copy
bytes both ways: the client's FIN on the data stream half-closes the pod side, the pod's EOF becomes
our FIN; the error stream carries a message if forwarding fails and is closed when the connection is
done (kubectl waits for that). A pair still incomplete after the stream-creation timeout gets an error.

The Python client (``v4.channel.k8s.io`` with ``?ports=80,81``): channel 2i carries the data of the i-th
port and 2i+1 its errors; the first frame on each channel is the port number as two little-endian
bytes. Each port has exactly one connection, opened at once; the WebSocket closes when every port's
connection is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from podvisor.streaming.channel import ByteChannel, WebSocketChannel
from podvisor.streaming.execio import ByteFeed
from podvisor.streaming.spdy.session import SpdySession, SpdyStream, StreamResetError
from podvisor.streaming.target import PortForwardTarget, PortReader, PortWriter
from podvisor.streaming.wschannel import (
    PORTFORWARD_PROTOCOLS,
    ChannelCodec,
    negotiate,
    requested_protocols,
)

__all__ = [
    "PORTFORWARD_PROTOCOL",
    "TUNNEL_PROTOCOL",
    "serve_portforward_session",
    "serve_portforward_tunnel",
    "serve_portforward_channels",
    "parse_ports",
]

log = logging.getLogger("podvisor.streaming")

PORTFORWARD_PROTOCOL = "portforward.k8s.io"
TUNNEL_PROTOCOL = "SPDY/3.1+" + PORTFORWARD_PROTOCOL
_READ_SIZE = 32 * 1024


def parse_ports(values: Sequence[str]) -> list[int]:
    """``ports`` query values (each may be comma-separated); ValueError with the kubelet's wording."""
    if not values:
        raise ValueError('query parameter "ports" is required')
    ports: list[int] = []
    for value in values:
        if not value:
            raise ValueError('query parameter "ports" cannot be empty')
        for part in value.split(","):
            try:
                port = int(part)
            except ValueError:
                raise ValueError(f'unable to parse "{value}" as a port') from None
            if port < 1:
                raise ValueError(f'port "{value}" must be > 0')
            if port > 65535:
                raise ValueError(f'unable to parse "{value}" as a port')
            ports.append(port)
    return ports


async def _close_writer(writer: PortWriter) -> None:
    with contextlib.suppress(Exception):
        writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()


# ------------------------------------------------------------------------------------------- SPDY


@dataclass
class _Pair:
    request_id: str
    data: SpdyStream | None = None
    error: SpdyStream | None = None
    timer: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def complete(self) -> bool:
        return self.data is not None and self.error is not None


async def _forward_spdy(pair: _Pair, target: PortForwardTarget, label: str) -> None:
    data, error = pair.data, pair.error
    assert data is not None and error is not None
    port = int(data.header("port"))
    try:
        reader, writer = await target.connect(port)
    except (OSError, ValueError) as exc:
        message = f"error forwarding port {port} to pod {label}: {exc}"
        log.info("%s", message)
        with contextlib.suppress(ConnectionError):
            await error.write(message.encode())
            await error.close()
        data.discard()
        await data.reset()
        return

    async def upstream() -> None:  # client -> pod
        try:
            while chunk := await data.read():
                writer.write(chunk)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        except (ConnectionError, OSError):
            data.discard()

    async def downstream() -> None:  # pod -> client
        try:
            while True:
                try:
                    chunk = await reader.read(_READ_SIZE)
                except (ConnectionError, OSError):
                    chunk = b""
                if not chunk:
                    break
                await data.write(chunk)
            await data.close()
        except StreamResetError:
            pass

    try:
        await asyncio.gather(upstream(), downstream())
    finally:
        await _close_writer(writer)
        data.discard()
        with contextlib.suppress(ConnectionError):
            await error.close()
            await data.close()


def _request_id(stream: SpdyStream) -> str:
    rid = stream.header("requestid")
    if rid:
        return rid
    # clients older than requestID: error and data streams of one connection have consecutive ids
    return str(stream.id if stream.header("streamtype") == "error" else stream.id - 2)


def _stream_problem(stream: SpdyStream) -> str | None:
    port = stream.header("port")
    if not port:
        return '"port" header is required'
    try:
        value = int(port)
    except ValueError:
        return f'unable to parse "{port}" as a port'
    if not 1 <= value <= 65535:
        return f'port "{port}" must be > 0' if value < 1 else f'unable to parse "{port}" as a port'
    kind = stream.header("streamtype")
    if not kind:
        return '"streamType" header is required'
    if kind not in ("error", "data"):
        return f'invalid stream type "{kind}"'
    return None


async def serve_portforward_session(session: SpdySession, target: PortForwardTarget, *, label: str = "",
                                    stream_creation_timeout: float = 30.0) -> None:
    """Serve kubectl's port-forward streams on ``session`` until the client closes it."""
    pairs: dict[str, _Pair] = {}
    tasks: set[asyncio.Task[None]] = set()

    def spawn(coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def expire(pair: _Pair) -> None:
        await asyncio.sleep(stream_creation_timeout)
        if pairs.get(pair.request_id) is pair:
            del pairs[pair.request_id]
            message = f"timed out waiting for streams of request {pair.request_id}"
            log.info("%s", message)
            for stream in (pair.error, pair.data):
                if stream is not None:
                    stream.discard()
            with contextlib.suppress(ConnectionError):
                if pair.error is not None:
                    await pair.error.write(message.encode())
                    await pair.error.close()
                if pair.data is not None:
                    await pair.data.reset()

    try:
        while (stream := await session.accept()) is not None:
            problem = _stream_problem(stream)
            if problem is not None:
                log.info("refusing port-forward stream %d: %s", stream.id, problem)
                await stream.refuse()
                continue
            await stream.reply()
            rid = _request_id(stream)
            pair = pairs.get(rid)
            if pair is None:
                pair = pairs[rid] = _Pair(rid)
                pair.timer = asyncio.create_task(expire(pair))
            kind = stream.header("streamtype")
            if getattr(pair, kind) is not None:
                message = f"error processing stream for request {rid}: {kind} stream already assigned"
                stream.discard()
                with contextlib.suppress(ConnectionError):
                    if pair.error is not None:
                        await pair.error.write(message.encode())
                    await stream.reset()
                continue
            setattr(pair, kind, stream)
            if pair.complete:
                del pairs[rid]
                if pair.timer is not None:
                    pair.timer.cancel()
                spawn(_forward_spdy(pair, target, label), f"portforward-{rid}")
    finally:
        for pair in pairs.values():
            if pair.timer is not None:
                pair.timer.cancel()
        for task in list(tasks):
            task.cancel()
        for task in list(tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def serve_portforward_tunnel(request: web.Request, target: PortForwardTarget, *, label: str = "",
                                   stream_creation_timeout: float = 30.0) -> web.StreamResponse:
    """kubectl's SPDY session tunnelled in binary WebSocket messages."""
    ws = web.WebSocketResponse(protocols=(TUNNEL_PROTOCOL,), autoping=True, compress=False,
                               max_msg_size=16 * 1024 * 1024, timeout=5.0)
    await ws.prepare(request)
    channel: ByteChannel = WebSocketChannel(ws)
    session = SpdySession(channel)
    session.start()
    try:
        await serve_portforward_session(session, target, label=label,
                                        stream_creation_timeout=stream_creation_timeout)
    finally:
        await session.close()
    return ws


# -------------------------------------------------------------------------- the Python client's way


async def _forward_channel(ws: web.WebSocketResponse, codec: ChannelCodec, index: int, port: int,
                           feed: ByteFeed, target: PortForwardTarget, label: str) -> None:
    data_ch, error_ch = 2 * index, 2 * index + 1
    try:
        reader, writer = await target.connect(port)
    except (OSError, ValueError) as exc:
        feed.discard()
        message = f"error forwarding port {port} to pod {label}: {exc}"
        log.info("%s", message)
        with contextlib.suppress(ConnectionError):
            await codec.send(ws, error_ch, message.encode())
        return

    async def upstream() -> None:
        try:
            async for chunk in feed:
                writer.write(chunk)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        except (ConnectionError, OSError):
            feed.discard()

    async def downstream(reader: PortReader) -> None:
        while True:
            try:
                chunk = await reader.read(_READ_SIZE)
            except (ConnectionError, OSError):
                return
            if not chunk:
                return
            await codec.send(ws, data_ch, chunk)

    up = asyncio.create_task(upstream())
    try:
        await downstream(reader)  # the pod closing the connection ends this port
    finally:
        feed.discard()
        up.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await up
        await _close_writer(writer)


async def serve_portforward_channels(request: web.Request, target: PortForwardTarget, ports: Sequence[int], *,
                                     label: str = "") -> web.StreamResponse:
    """The Python client's port-forward: one connection per port, channels 2i (data) and 2i+1 (error)."""
    requested = requested_protocols(request)
    protocol = negotiate(requested, PORTFORWARD_PROTOCOLS)
    if protocol is None:
        return web.Response(status=400, text=(
            f"requested protocol(s) are not supported: {requested}; supports {list(PORTFORWARD_PROTOCOLS)}"))
    ws = web.WebSocketResponse(protocols=(protocol,) if protocol else (), autoping=True, compress=False,
                               timeout=5.0)
    await ws.prepare(request)
    codec = ChannelCodec(protocol or "channel.k8s.io")
    feeds = [ByteFeed() for _ in ports]
    for i, port in enumerate(ports):
        prefix = struct.pack("<H", port)
        await codec.send(ws, 2 * i, prefix)
        await codec.send(ws, 2 * i + 1, prefix)

    async def read_frames() -> None:
        try:
            while True:
                msg = await ws.receive()
                if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                    return
                frame = codec.decode(msg)
                if frame is None:
                    continue
                channel, data, close = frame
                if channel % 2 == 0 and channel // 2 < len(feeds):
                    if close:
                        feeds[channel // 2].close()
                    else:
                        await feeds[channel // 2].put(data)
        finally:
            for feed in feeds:
                feed.close()

    reader = asyncio.create_task(read_frames())
    forwards = [asyncio.create_task(_forward_channel(ws, codec, i, port, feeds[i], target, label))
                for i, port in enumerate(ports)]
    try:
        pending: set[asyncio.Task[None]] = {reader, *forwards}
        while not reader.done() and not all(task.done() for task in forwards):
            _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in forwards:
            task.cancel()
        for feed in feeds:
            feed.discard()
        with contextlib.suppress(Exception):
            await ws.close()
        reader.cancel()
        for task in (*forwards, reader):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    return ws
