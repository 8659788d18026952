"""SPDY/3.1 framing and the server session, driven by a hand-written peer over a socket pair.

kubectl exercises the common path (see the kubectl tests); these pin what it does not: the header
dictionary, every frame type, decoding from arbitrary splits, and flow control with a peer that
enforces windows."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import zlib
from collections.abc import AsyncIterator

import pytest

from podvisor.streaming.channel import StreamChannel
from podvisor.streaming.spdy import frames as f
from podvisor.streaming.spdy.dictionary import HEADER_DICTIONARY
from podvisor.streaming.spdy.session import DEFAULT_WINDOW, SpdySession


def test_header_dictionary_is_spdy3s() -> None:
    assert len(HEADER_DICTIONARY) == 1423
    assert zlib.adler32(HEADER_DICTIONARY) == 3821447106
    assert hashlib.sha256(HEADER_DICTIONARY).hexdigest().startswith("51d27341373f923f")


ALL_FRAMES: list[f.Frame] = [
    f.SynStream(1, {"streamtype": ["error"], "port": ["80"], "requestid": ["0"]}, priority=3),
    f.SynStream(3, {"streamtype": ["data"], "multi": ["a", "b"]}, associated_id=1, fin=True, unidirectional=True),
    f.SynReply(1, {}),
    f.HeadersFrame(3, {"x": ["y"]}, fin=True),
    f.DataFrame(1, b"payload" * 1000),
    f.DataFrame(1, b"", fin=True),
    f.RstStream(3, f.RstStatus.CANCEL),
    f.Settings(((0, f.SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20), (1, 4, 100))),
    f.Ping(7),
    f.WindowUpdate(0, 12345),
    f.GoAway(3, f.GoAwayStatus.OK),
    f.UnknownControl(3, 0x55, 0, b"ignored"),
]


def test_every_frame_round_trips_through_arbitrary_splits() -> None:
    enc = f.FrameEncoder()
    wire = b"".join(enc.encode(frame) for frame in ALL_FRAMES)
    dec = f.FrameDecoder()
    out: list[f.Frame] = []
    for i in range(0, len(wire), 5):  # a few bytes at a time: frames and header blocks split anywhere
        out += dec.feed(wire[i:i + 5])
    assert out == ALL_FRAMES


def test_header_compression_is_one_stream_per_direction() -> None:
    enc, dec = f.FrameEncoder(), f.FrameDecoder()
    first = enc.encode(f.SynReply(1, {"streamtype": ["stdout"]}))
    second = enc.encode(f.SynReply(3, {"streamtype": ["stdout"]}))
    assert len(second) < len(first)  # the second block refers back into the first
    with pytest.raises(f.SpdyProtocolError):
        f.FrameDecoder().feed(second)  # alone it cannot be decoded
    assert [fr.headers for fr in dec.feed(first + second)] == [{"streamtype": ["stdout"]}] * 2  # type: ignore[union-attr]


def test_other_versions_are_refused() -> None:
    frame = bytearray(f.FrameEncoder().encode(f.Ping(1)))
    frame[1] = 2  # SPDY/2
    with pytest.raises(f.SpdyProtocolError):
        f.FrameDecoder().feed(bytes(frame))


class Peer:
    """The client end: writes frames, reads frames."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.enc, self.dec = f.FrameEncoder(), f.FrameDecoder()
        self.pending: list[f.Frame] = []

    async def send(self, *frames: f.Frame) -> None:
        for frame in frames:
            self.writer.write(self.enc.encode(frame))
        await self.writer.drain()

    async def next(self, kind: type | None = None) -> f.Frame:
        while True:
            while self.pending:
                frame = self.pending.pop(0)
                if kind is None or isinstance(frame, kind):
                    return frame
            data = await self.reader.read(65536)
            assert data, "connection closed"
            self.pending += self.dec.feed(data)


@pytest.fixture
async def pair() -> AsyncIterator[tuple[SpdySession, Peer]]:
    a, b = socket.socketpair()
    server = SpdySession(StreamChannel(*await asyncio.open_connection(sock=a)))
    server.start()
    peer = Peer(*await asyncio.open_connection(sock=b))
    yield server, peer
    await server.close()
    peer.writer.close()


async def test_streams_data_and_half_close(pair: tuple[SpdySession, Peer]) -> None:
    server, peer = pair
    await peer.send(f.SynStream(1, {"streamtype": ["data"]}), f.DataFrame(1, b"hello"), f.DataFrame(1, b"", fin=True))
    stream = await server.accept()
    assert stream is not None and stream.header("streamType") == "data"
    await stream.reply()
    assert await peer.next() == f.SynReply(1, {})
    assert await stream.read_all() == b"hello"
    await stream.write(b"world")
    await stream.close()
    assert await peer.next() == f.DataFrame(1, b"world")
    assert await peer.next() == f.DataFrame(1, b"", fin=True)


async def test_pings_are_echoed_and_goaway_ends_accept(pair: tuple[SpdySession, Peer]) -> None:
    server, peer = pair
    await peer.send(f.Ping(5))
    assert await peer.next() == f.Ping(5)
    await peer.send(f.GoAway(0))
    assert await server.accept() is None
    await peer.send(f.SynStream(1, {}))  # too late
    assert await peer.next() == f.RstStream(1, f.RstStatus.REFUSED_STREAM)


async def test_bad_stream_ids_are_refused(pair: tuple[SpdySession, Peer]) -> None:
    server, peer = pair
    await peer.send(f.SynStream(2, {}))
    assert await peer.next() == f.RstStream(2, f.RstStatus.PROTOCOL_ERROR)


async def test_consumed_data_is_acknowledged(pair: tuple[SpdySession, Peer]) -> None:
    server, peer = pair
    await peer.send(f.SynStream(1, {}), f.DataFrame(1, b"x" * DEFAULT_WINDOW))
    stream = await server.accept()
    assert stream is not None
    await stream.reply()
    got = 0
    while got < DEFAULT_WINDOW:
        got += len(await stream.read())
    updates: dict[int, int] = {}
    while len(updates) < 2:
        frame = await peer.next(f.WindowUpdate)
        assert isinstance(frame, f.WindowUpdate)
        updates[frame.stream_id] = updates.get(frame.stream_id, 0) + frame.delta
    assert updates == {0: DEFAULT_WINDOW, 1: DEFAULT_WINDOW}


async def test_windows_are_honoured_once_the_peer_uses_them(pair: tuple[SpdySession, Peer]) -> None:
    server, peer = pair
    await peer.send(f.SynStream(1, {}), f.WindowUpdate(0, 0))  # a flow-controlling peer, nothing granted
    stream = await server.accept()
    assert stream is not None
    await stream.reply()
    writer = asyncio.create_task(stream.write(b"y" * (DEFAULT_WINDOW + 1000)))
    received = 0
    while received < DEFAULT_WINDOW:
        frame = await peer.next(f.DataFrame)
        received += len(frame.data)  # type: ignore[union-attr]
    assert received == DEFAULT_WINDOW
    await asyncio.sleep(0.05)
    assert not writer.done()  # blocked on the window, not on the socket
    await peer.send(f.WindowUpdate(1, 1000), f.WindowUpdate(0, 1000))
    frame = await peer.next(f.DataFrame)
    assert len(frame.data) == 1000  # type: ignore[union-attr]
    await asyncio.wait_for(writer, 10)
