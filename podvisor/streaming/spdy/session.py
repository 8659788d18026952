"""A SPDY/3.1 session, server side: streams the peer opens, their data both ways, and the session's
housekeeping (PING, SETTINGS, WINDOW_UPDATE, RST_STREAM, GOAWAY).

One task reads the `ByteChannel`, decodes frames and routes them; writers send frames under one lock
(header compression is a single zlib stream, so frames must be encoded in the order they are sent).
The peer opens streams (odd ids, increasing); the application takes them from `accept` and answers
each with `SpdyStream.reply` (SYN_REPLY) or `SpdyStream.refuse` (RST_STREAM).

Flow control. SPDY/3.1 gives every stream and the session a 64 KiB send window that the receiver
re-opens with WINDOW_UPDATE. Go's spdystream (kubectl, client-go) neither sends nor honours
WINDOW_UPDATE, so a sender that waited for one would stall after 64 KiB. We therefore:
- always account both windows and acknowledge what the application has consumed with WINDOW_UPDATE
  (a peer that enforces windows keeps sending; spdystream ignores the frames);
- honour the peer's windows only once it has shown it does flow control (sent WINDOW_UPDATE or an
  initial-window SETTINGS);
- bound what we buffer per stream: past ``stream_buffer`` unread bytes on one stream the read loop
  stops reading the connection until the application catches up. That is head-of-line blocking, as
  spdystream's own unbuffered stream channels do; the application must keep reading (or
  `SpdyStream.discard` a stream it does not want).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque

from podvisor.streaming.channel import ByteChannel
from podvisor.streaming.spdy.frames import (
    SETTINGS_INITIAL_WINDOW_SIZE,
    DataFrame,
    Frame,
    FrameDecoder,
    FrameEncoder,
    GoAway,
    GoAwayStatus,
    Headers,
    HeadersFrame,
    Ping,
    RstStatus,
    RstStream,
    Settings,
    SpdyProtocolError,
    SynReply,
    SynStream,
    WindowUpdate,
)

__all__ = ["SpdySession", "SpdyStream", "StreamResetError", "DEFAULT_WINDOW"]

log = logging.getLogger("podvisor.streaming.spdy")

DEFAULT_WINDOW = 64 * 1024
MAX_DATA_CHUNK = 32 * 1024


class StreamResetError(ConnectionResetError):
    """The stream was reset (by either side) or its session ended; it cannot be written."""


class SpdyStream:
    """One stream the peer opened. Reads return ``b""`` at the peer's FIN, on reset and when the
    session ends; writes raise `StreamResetError` once the stream is reset or closed locally."""

    def __init__(self, session: SpdySession, stream_id: int, headers: Headers, *, remote_fin: bool) -> None:
        self._session = session
        self.id = stream_id
        self.headers = headers
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._data_ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self.remote_closed = remote_fin
        self.local_closed = False
        self.was_reset = False
        self.replied = False
        self._discard = False
        self.send_window = session._initial_send_window
        self._unacked = 0
        if remote_fin:
            self._data_ready.set()

    def header(self, name: str) -> str:
        """The first value of a request header ("" when absent)."""
        values = self.headers.get(name.lower())
        return values[0] if values else ""

    def __repr__(self) -> str:
        return f"<SpdyStream {self.id} {self.headers}>"

    # -- answering --------------------------------------------------------------------------------

    async def reply(self, headers: Headers | None = None) -> None:
        """Accept the stream (SYN_REPLY)."""
        if not self.replied and not self.was_reset:
            self.replied = True
            await self._session._send(SynReply(self.id, headers or {}))

    async def refuse(self, status: int = RstStatus.REFUSED_STREAM) -> None:
        await self.reset(status)

    # -- reading ----------------------------------------------------------------------------------

    async def read(self) -> bytes:
        while not self._chunks:
            if self.remote_closed or self.was_reset or self._session.peer_gone:
                return b""
            self._data_ready.clear()
            await self._data_ready.wait()
        data = self._chunks.popleft()
        self._buffered -= len(data)
        if self._buffered <= self._session._stream_buffer:
            self._room.set()
        await self._session._consumed(self, len(data))
        return data

    async def read_all(self, limit: int = 1 << 20) -> bytes:
        out = bytearray()
        while chunk := await self.read():
            out += chunk
            if len(out) > limit:
                break
        return bytes(out)

    def discard(self) -> None:
        """Drop what is buffered and whatever arrives later: nobody will read this stream."""
        self._discard = True
        self._chunks.clear()
        self._buffered = 0
        self._room.set()

    def _feed(self, data: bytes, fin: bool) -> None:
        if data and not self._discard and not self.was_reset:
            self._chunks.append(data)
            self._buffered += len(data)
            if self._buffered > self._session._stream_buffer:
                self._room.clear()
        if fin:
            self.remote_closed = True
        self._data_ready.set()

    # -- writing ----------------------------------------------------------------------------------

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        session = self._session
        while view:
            n = min(len(view), MAX_DATA_CHUNK)
            if session._flow_enforced:
                n = await session._reserve(self, n)
            self._check_writable()
            self.send_window -= n
            session._session_send_window -= n
            await session._send(DataFrame(self.id, bytes(view[:n])))
            view = view[n:]

    async def close(self) -> None:
        """Half-close our side (DATA with FIN); reading goes on until the peer's FIN."""
        if self.local_closed or self.was_reset or self._session.peer_gone:
            return
        self.local_closed = True
        with contextlib.suppress(ConnectionError):
            await self._session._send(DataFrame(self.id, b"", fin=True))
        self._session._maybe_forget(self)

    async def reset(self, status: int = RstStatus.CANCEL) -> None:
        if self.was_reset:
            return
        self._mark_reset()
        if not self._session.peer_gone:
            with contextlib.suppress(ConnectionError):
                await self._session._send(RstStream(self.id, status))

    def _check_writable(self) -> None:
        if self.was_reset or self.local_closed or self._session.peer_gone:
            raise StreamResetError(f"stream {self.id} is closed")

    def _mark_reset(self) -> None:
        self.was_reset = True
        self._chunks.clear()
        self._buffered = 0
        self._data_ready.set()
        self._room.set()
        self._session._forget(self)


class SpdySession:
    """The server side of one SPDY/3.1 connection over ``channel``. Call `start`, then `accept`
    streams until it returns None (the peer said GOAWAY or went away); `close` when done."""

    def __init__(self, channel: ByteChannel, *, stream_buffer: int = 1 << 20) -> None:
        self._ch = channel
        self._stream_buffer = stream_buffer
        self._decoder = FrameDecoder()
        self._encoder = FrameEncoder()
        self._write_lock = asyncio.Lock()
        self._streams: dict[int, SpdyStream] = {}
        self._incoming: asyncio.Queue[SpdyStream | None] = asyncio.Queue()
        self._last_peer_stream = 0
        self._initial_send_window = DEFAULT_WINDOW
        self._session_send_window = DEFAULT_WINDOW
        self._session_unacked = 0
        self._flow_enforced = False
        self._window_changed = asyncio.Event()
        self._pings: dict[int, asyncio.Future[None]] = {}
        self._next_ping = 2
        self.goaway_received = False
        self._goaway_sent = False
        self.peer_gone = False
        self._ended = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._reader is None:
            self._reader = asyncio.create_task(self._read_loop(), name="spdy-read")

    async def accept(self) -> SpdyStream | None:
        """The next stream the peer opened, or None once it will open no more."""
        stream = await self._incoming.get()
        if stream is None:
            self._incoming.put_nowait(None)  # keep answering None
        return stream

    async def wait_closed(self) -> None:
        """Until the peer has closed the connection (or it broke)."""
        await self._ended.wait()

    async def ping(self) -> None:
        """Send a PING and wait for its echo."""
        ping_id = self._next_ping
        self._next_ping += 2
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pings[ping_id] = fut
        try:
            await self._send(Ping(ping_id))
            await fut
        finally:
            self._pings.pop(ping_id, None)

    async def close(self, status: int = GoAwayStatus.OK) -> None:
        """GOAWAY (unless the peer is gone) and close the channel."""
        if not self._goaway_sent and not self.peer_gone:
            self._goaway_sent = True
            with contextlib.suppress(Exception):
                await self._send(GoAway(self._last_peer_stream, status))
        with contextlib.suppress(Exception):
            await self._ch.close()
        if self._reader is not None and not self._reader.done():
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        self._end()

    # -- internals --------------------------------------------------------------------------------

    async def _send(self, frame: Frame) -> None:
        if self.peer_gone:
            raise StreamResetError("SPDY connection closed")
        async with self._write_lock:
            data = self._encoder.encode(frame)
            try:
                await self._ch.write(data)
            except (ConnectionError, OSError, RuntimeError) as exc:
                self._end()
                raise StreamResetError(f"SPDY connection lost: {exc}") from exc

    async def _reserve(self, stream: SpdyStream, want: int) -> int:
        while True:
            stream._check_writable()
            room = min(stream.send_window, self._session_send_window)
            if room > 0:
                return min(room, want)
            self._window_changed.clear()
            await self._window_changed.wait()

    async def _consumed(self, stream: SpdyStream, n: int) -> None:
        stream._unacked += n
        self._session_unacked += n
        updates = []
        if stream._unacked >= DEFAULT_WINDOW // 2 and not stream.remote_closed and not stream.was_reset:
            updates.append(WindowUpdate(stream.id, stream._unacked))
            stream._unacked = 0
        if self._session_unacked >= DEFAULT_WINDOW // 2:
            updates.append(WindowUpdate(0, self._session_unacked))
            self._session_unacked = 0
        for frame in updates:
            with contextlib.suppress(ConnectionError):
                await self._send(frame)

    def _forget(self, stream: SpdyStream) -> None:
        self._streams.pop(stream.id, None)
        self._window_changed.set()

    def _maybe_forget(self, stream: SpdyStream) -> None:
        if stream.local_closed and stream.remote_closed:
            self._forget(stream)

    def _end(self) -> None:
        if self.peer_gone:
            return
        self.peer_gone = True
        for stream in list(self._streams.values()):
            stream._data_ready.set()
            stream._room.set()
        self._streams.clear()
        self._window_changed.set()
        self._incoming.put_nowait(None)
        for fut in self._pings.values():
            if not fut.done():
                fut.set_exception(StreamResetError("SPDY connection closed"))
        self._ended.set()

    async def _read_loop(self) -> None:
        try:
            while True:
                data = await self._ch.read()
                if not data:
                    break
                for frame in self._decoder.feed(data):
                    await self._dispatch(frame)
        except SpdyProtocolError as exc:
            log.info("closing SPDY connection: %s", exc)
            if not self._goaway_sent:
                self._goaway_sent = True
                with contextlib.suppress(Exception):
                    await self._send(GoAway(self._last_peer_stream, GoAwayStatus.PROTOCOL_ERROR))
        except (ConnectionError, OSError):
            pass
        finally:
            self._end()

    async def _dispatch(self, frame: Frame) -> None:
        if isinstance(frame, DataFrame):
            stream = self._streams.get(frame.stream_id)
            if stream is None:
                return  # late data for a stream already gone: ignore, as spdystream does
            stream._feed(frame.data, frame.fin)
            if frame.fin:
                self._maybe_forget(stream)
            if not stream._room.is_set():
                await stream._room.wait()
        elif isinstance(frame, SynStream):
            await self._on_syn_stream(frame)
        elif isinstance(frame, RstStream):
            stream = self._streams.get(frame.stream_id)
            if stream is not None:
                stream._mark_reset()
        elif isinstance(frame, Ping):
            if frame.ping_id % 2 == 1:
                await self._send(frame)  # the peer's ping: echo it
            else:
                fut = self._pings.get(frame.ping_id)
                if fut is not None and not fut.done():
                    fut.set_result(None)
        elif isinstance(frame, Settings):
            window = frame.value(SETTINGS_INITIAL_WINDOW_SIZE)
            if window is not None:
                self._flow_enforced = True
                delta = window - self._initial_send_window
                self._initial_send_window = window
                for stream in self._streams.values():
                    stream.send_window += delta
                self._window_changed.set()
        elif isinstance(frame, WindowUpdate):
            self._flow_enforced = True
            if frame.stream_id == 0:
                self._session_send_window += frame.delta
            elif (stream := self._streams.get(frame.stream_id)) is not None:
                stream.send_window += frame.delta
            self._window_changed.set()
        elif isinstance(frame, GoAway):
            self.goaway_received = True
            self._incoming.put_nowait(None)
        elif isinstance(frame, HeadersFrame):
            stream = self._streams.get(frame.stream_id)
            if stream is not None and frame.fin:
                stream._feed(b"", True)
                self._maybe_forget(stream)
        elif isinstance(frame, SynReply):
            pass  # we open no streams
        # UnknownControl: ignored, as the draft asks

    async def _on_syn_stream(self, frame: SynStream) -> None:
        sid = frame.stream_id
        if sid % 2 == 0 or sid <= self._last_peer_stream:
            await self._send(RstStream(sid, RstStatus.PROTOCOL_ERROR))
            return
        self._last_peer_stream = sid
        if self._goaway_sent or self.goaway_received:
            await self._send(RstStream(sid, RstStatus.REFUSED_STREAM))
            return
        stream = SpdyStream(self, sid, frame.headers, remote_fin=frame.fin or frame.unidirectional)
        self._streams[sid] = stream
        self._incoming.put_nowait(stream)
