"""SPDY/3.1 frames: their wire layout, and the zlib-compressed header blocks.

kubectl's port-forward (always) and its exec/attach fallback speak SPDY/3.1 through Go's spdystream,
so this is the subset of the SPDY/3 draft that a server needs, written from the draft's layout:

- every frame starts with 8 bytes. A control frame has the high bit set, a 15-bit version (3) and a
  16-bit type, then 8 bits of flags and a 24-bit length; a data frame has the high bit clear, a 31-bit
  stream id, then flags (``FIN``) and length.
- SYN_STREAM (1), SYN_REPLY (2) and HEADERS (8) carry a header block: a 32-bit count of pairs, each a
  32-bit length + lower-case name and a 32-bit length + value (several values joined by NUL). Blocks
  are compressed with ONE zlib stream per direction for the whole session, primed with the SPDY/3
  dictionary and sync-flushed after every block - so encoding and decoding are stateful and must
  happen in wire order.
- RST_STREAM (3), SETTINGS (4), PING (6), GOAWAY (7) and WINDOW_UPDATE (9) are fixed layouts.
  Unknown control types are kept as `UnknownControl` so the session can ignore them, as the draft
  asks.

`FrameDecoder` is incremental (feed it whatever the socket delivered); `FrameEncoder` turns frames into
bytes. Neither does I/O.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from enum import IntEnum

from podvisor.streaming.spdy.dictionary import HEADER_DICTIONARY

__all__ = [
    "VERSION",
    "FLAG_FIN",
    "FLAG_UNIDIRECTIONAL",
    "FrameType",
    "RstStatus",
    "GoAwayStatus",
    "SETTINGS_INITIAL_WINDOW_SIZE",
    "Headers",
    "DataFrame",
    "SynStream",
    "SynReply",
    "RstStream",
    "Settings",
    "Ping",
    "GoAway",
    "HeadersFrame",
    "WindowUpdate",
    "UnknownControl",
    "Frame",
    "FrameDecoder",
    "FrameEncoder",
    "SpdyProtocolError",
    "MAX_FRAME_PAYLOAD",
]

VERSION = 3
FLAG_FIN = 0x01
FLAG_UNIDIRECTIONAL = 0x02
FLAG_SETTINGS_CLEAR = 0x01
MAX_FRAME_PAYLOAD = (1 << 24) - 1
SETTINGS_INITIAL_WINDOW_SIZE = 7
_MAX_HEADER_BLOCK = 256 * 1024  # decompressed; a bound against zlib bombs
_HEADER = struct.Struct(">II")
_U32 = struct.Struct(">I")


class FrameType(IntEnum):
    SYN_STREAM = 1
    SYN_REPLY = 2
    RST_STREAM = 3
    SETTINGS = 4
    PING = 6
    GOAWAY = 7
    HEADERS = 8
    WINDOW_UPDATE = 9


class RstStatus(IntEnum):
    PROTOCOL_ERROR = 1
    INVALID_STREAM = 2
    REFUSED_STREAM = 3
    UNSUPPORTED_VERSION = 4
    CANCEL = 5
    INTERNAL_ERROR = 6
    FLOW_CONTROL_ERROR = 7
    STREAM_IN_USE = 8
    STREAM_ALREADY_CLOSED = 9
    INVALID_CREDENTIALS = 10
    FRAME_TOO_LARGE = 11


class GoAwayStatus(IntEnum):
    OK = 0
    PROTOCOL_ERROR = 1
    INTERNAL_ERROR = 2


class SpdyProtocolError(Exception):
    """The peer sent something that is not SPDY/3; the session cannot continue."""


Headers = dict[str, list[str]]
"""Header names in lower case, each with its values in order."""


@dataclass(frozen=True, slots=True)
class DataFrame:
    stream_id: int
    data: bytes
    fin: bool = False


@dataclass(frozen=True, slots=True)
class SynStream:
    stream_id: int
    headers: Headers
    associated_id: int = 0
    priority: int = 0
    fin: bool = False
    unidirectional: bool = False


@dataclass(frozen=True, slots=True)
class SynReply:
    stream_id: int
    headers: Headers = field(default_factory=dict)
    fin: bool = False


@dataclass(frozen=True, slots=True)
class RstStream:
    stream_id: int
    status: int


@dataclass(frozen=True, slots=True)
class Settings:
    entries: tuple[tuple[int, int, int], ...]  # (flags, id, value)
    clear: bool = False

    def value(self, setting_id: int) -> int | None:
        for _, sid, val in self.entries:
            if sid == setting_id:
                return val
        return None


@dataclass(frozen=True, slots=True)
class Ping:
    ping_id: int


@dataclass(frozen=True, slots=True)
class GoAway:
    last_good_stream_id: int
    status: int = GoAwayStatus.OK


@dataclass(frozen=True, slots=True)
class HeadersFrame:
    stream_id: int
    headers: Headers
    fin: bool = False


@dataclass(frozen=True, slots=True)
class WindowUpdate:
    stream_id: int
    delta: int


@dataclass(frozen=True, slots=True)
class UnknownControl:
    version: int
    type: int
    flags: int
    payload: bytes


Frame = (
    DataFrame | SynStream | SynReply | RstStream | Settings | Ping | GoAway | HeadersFrame | WindowUpdate
    | UnknownControl
)


# ----------------------------------------------------------------------------------- header blocks


def _pack_block(headers: Headers) -> bytes:
    out = bytearray(_U32.pack(len(headers)))
    for name, values in headers.items():
        raw_name = name.lower().encode("utf-8")
        raw_value = "\x00".join(values).encode("utf-8")
        out += _U32.pack(len(raw_name)) + raw_name + _U32.pack(len(raw_value)) + raw_value
    return bytes(out)


def _unpack_block(raw: bytes) -> Headers:
    def take(pos: int) -> tuple[bytes, int]:
        if pos + 4 > len(raw):
            raise SpdyProtocolError("truncated header block")
        (n,) = _U32.unpack_from(raw, pos)
        pos += 4
        if pos + n > len(raw):
            raise SpdyProtocolError("truncated header block")
        return raw[pos:pos + n], pos + n

    if len(raw) < 4:
        raise SpdyProtocolError("truncated header block")
    (count,) = _U32.unpack_from(raw, 0)
    pos = 4
    headers: Headers = {}
    for _ in range(count):
        name_b, pos = take(pos)
        value_b, pos = take(pos)
        name = name_b.decode("utf-8", "replace").lower()
        headers.setdefault(name, []).extend(value_b.decode("utf-8", "replace").split("\x00"))
    if pos != len(raw):
        raise SpdyProtocolError("header block has trailing bytes")
    return headers


# ----------------------------------------------------------------------------------------- decode


class FrameDecoder:
    """Bytes in, frames out. Keeps the partial frame and the inbound zlib stream between calls."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._inflate = zlib.decompressobj(zdict=HEADER_DICTIONARY)

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        frames: list[Frame] = []
        while len(self._buf) >= 8:
            first, second = _HEADER.unpack_from(self._buf, 0)
            length = second & 0xFFFFFF
            if len(self._buf) < 8 + length:
                break
            flags = second >> 24
            payload = bytes(self._buf[8:8 + length])
            del self._buf[:8 + length]
            if first & 0x80000000:
                frames.append(self._control((first >> 16) & 0x7FFF, first & 0xFFFF, flags, payload))
            else:
                frames.append(DataFrame(first & 0x7FFFFFFF, payload, bool(flags & FLAG_FIN)))
        return frames

    def _headers(self, block: bytes) -> Headers:
        try:
            raw = self._inflate.decompress(block, _MAX_HEADER_BLOCK)
        except zlib.error as exc:
            raise SpdyProtocolError(f"header block does not decompress: {exc}") from exc
        if self._inflate.unconsumed_tail:
            raise SpdyProtocolError("header block too large")
        return _unpack_block(raw)

    def _control(self, version: int, ftype: int, flags: int, p: bytes) -> Frame:
        if version != VERSION:
            raise SpdyProtocolError(f"unsupported SPDY version {version}")

        def need(n: int) -> None:
            if len(p) < n:
                raise SpdyProtocolError(f"control frame type {ftype} too short ({len(p)} bytes)")

        fin = bool(flags & FLAG_FIN)
        if ftype == FrameType.SYN_STREAM:
            need(10)
            sid, assoc = struct.unpack_from(">II", p, 0)
            return SynStream(sid & 0x7FFFFFFF, self._headers(p[10:]), assoc & 0x7FFFFFFF, p[8] >> 5, fin,
                             bool(flags & FLAG_UNIDIRECTIONAL))
        if ftype == FrameType.SYN_REPLY:
            need(4)
            return SynReply(_U32.unpack_from(p, 0)[0] & 0x7FFFFFFF, self._headers(p[4:]), fin)
        if ftype == FrameType.HEADERS:
            need(4)
            return HeadersFrame(_U32.unpack_from(p, 0)[0] & 0x7FFFFFFF, self._headers(p[4:]), fin)
        if ftype == FrameType.RST_STREAM:
            need(8)
            sid, status = struct.unpack_from(">II", p, 0)
            return RstStream(sid & 0x7FFFFFFF, status)
        if ftype == FrameType.SETTINGS:
            need(4)
            (count,) = _U32.unpack_from(p, 0)
            need(4 + 8 * count)
            entries = []
            for i in range(count):
                flag_id, value = struct.unpack_from(">II", p, 4 + 8 * i)
                entries.append((flag_id >> 24, flag_id & 0xFFFFFF, value))
            return Settings(tuple(entries), bool(flags & FLAG_SETTINGS_CLEAR))
        if ftype == FrameType.PING:
            need(4)
            return Ping(_U32.unpack_from(p, 0)[0])
        if ftype == FrameType.GOAWAY:
            need(4)
            last = _U32.unpack_from(p, 0)[0] & 0x7FFFFFFF
            status = _U32.unpack_from(p, 4)[0] if len(p) >= 8 else GoAwayStatus.OK
            return GoAway(last, status)
        if ftype == FrameType.WINDOW_UPDATE:
            need(8)
            sid, delta = struct.unpack_from(">II", p, 0)
            return WindowUpdate(sid & 0x7FFFFFFF, delta & 0x7FFFFFFF)
        return UnknownControl(version, ftype, flags, p)


# ----------------------------------------------------------------------------------------- encode


class FrameEncoder:
    """Frames in, bytes out. Keeps the outbound zlib stream: encode in the order frames are sent."""

    def __init__(self) -> None:
        self._deflate = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, 15, 9,
                                         zlib.Z_DEFAULT_STRATEGY, HEADER_DICTIONARY)

    def _block(self, headers: Headers) -> bytes:
        raw = _pack_block(headers)
        return self._deflate.compress(raw) + self._deflate.flush(zlib.Z_SYNC_FLUSH)

    @staticmethod
    def _control(ftype: int, flags: int, payload: bytes) -> bytes:
        if len(payload) > MAX_FRAME_PAYLOAD:
            raise ValueError("control frame too large")
        return _HEADER.pack(0x80000000 | (VERSION << 16) | ftype, (flags << 24) | len(payload)) + payload

    def encode(self, frame: Frame) -> bytes:
        if isinstance(frame, DataFrame):
            if len(frame.data) > MAX_FRAME_PAYLOAD:
                raise ValueError("data frame too large")
            flags = FLAG_FIN if frame.fin else 0
            return _HEADER.pack(frame.stream_id & 0x7FFFFFFF, (flags << 24) | len(frame.data)) + frame.data
        if isinstance(frame, SynStream):
            flags = (FLAG_FIN if frame.fin else 0) | (FLAG_UNIDIRECTIONAL if frame.unidirectional else 0)
            body = struct.pack(">IIBB", frame.stream_id, frame.associated_id, (frame.priority & 7) << 5, 0)
            return self._control(FrameType.SYN_STREAM, flags, body + self._block(frame.headers))
        if isinstance(frame, SynReply):
            body = _U32.pack(frame.stream_id) + self._block(frame.headers)
            return self._control(FrameType.SYN_REPLY, FLAG_FIN if frame.fin else 0, body)
        if isinstance(frame, HeadersFrame):
            body = _U32.pack(frame.stream_id) + self._block(frame.headers)
            return self._control(FrameType.HEADERS, FLAG_FIN if frame.fin else 0, body)
        if isinstance(frame, RstStream):
            return self._control(FrameType.RST_STREAM, 0, struct.pack(">II", frame.stream_id, frame.status))
        if isinstance(frame, Settings):
            body = _U32.pack(len(frame.entries)) + b"".join(
                struct.pack(">II", (fl << 24) | (sid & 0xFFFFFF), val) for fl, sid, val in frame.entries)
            return self._control(FrameType.SETTINGS, FLAG_SETTINGS_CLEAR if frame.clear else 0, body)
        if isinstance(frame, Ping):
            return self._control(FrameType.PING, 0, _U32.pack(frame.ping_id))
        if isinstance(frame, GoAway):
            return self._control(FrameType.GOAWAY, 0, struct.pack(">II", frame.last_good_stream_id, frame.status))
        if isinstance(frame, WindowUpdate):
            return self._control(FrameType.WINDOW_UPDATE, 0, struct.pack(">II", frame.stream_id, frame.delta))
        return self._control(frame.type, frame.flags, frame.payload)
