"""Proto wire primitives for `podvisor.schema.protobuf`: bounds-checked reads, writes, and the
two time encodings. Kept apart so the schema-driven codec reads as the mapping it is.

Every malformed input ends in `ProtobufDecodeError` (a 400 BadRequest); writing something that does
not fit raises `ProtobufEncodeError` (a ValueError: a bug of ours, not the client's).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from podvisor.apiserver.errors import BadRequestError

__all__ = [
    "ProtobufDecodeError",
    "ProtobufEncodeError",
    "Reader",
    "int32",
    "int64",
    "num",
    "text",
    "wire_error",
    "format_time",
    "varint_bytes",
    "varint_value",
    "tag",
    "len_field",
    "parse_time",
]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
GO_ZERO_SECONDS = -62135596800  # 0001-01-01T00:00:00Z, Go's zero time.Time


class ProtobufDecodeError(BadRequestError):
    """The body is not a well-formed Kubernetes protobuf message of a kind we know."""


class ProtobufEncodeError(ValueError):
    """An object does not fit its schema closely enough to be written as protobuf."""


def int32(v: int) -> int:
    return ((v + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def int64(v: int) -> int:
    return v - (1 << 64) if v >= (1 << 63) else v


def varint_value(kind: str, v: int) -> Any:
    if kind == "boolean":
        return v != 0
    return int32(v) if kind == "int32" else int64(v)


def num(v: int | bytes | None) -> int:
    return v if isinstance(v, int) else 0


def text(v: int | bytes | None) -> str:
    return v.decode("utf-8", errors="replace") if isinstance(v, bytes) else ""


def wire_error(path: str, wire: int, expected: int) -> ProtobufDecodeError:
    return ProtobufDecodeError(f"protobuf: field {path or '.'} has wire type {wire}, expected {expected}")


class Reader:
    """Proto wire primitives over one buffer; every read is bounds-checked."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def varint(self, pos: int, end: int) -> tuple[int, int]:
        result = shift = 0
        while True:
            if pos >= end:
                raise ProtobufDecodeError(f"protobuf: truncated varint at offset {pos}")
            b = self.data[pos]
            pos += 1
            result |= (b & 0x7F) << shift
            if b < 0x80:
                return result & 0xFFFFFFFFFFFFFFFF, pos
            shift += 7
            if shift >= 70:
                raise ProtobufDecodeError(f"protobuf: varint longer than 10 bytes at offset {pos}")

    def key(self, pos: int, end: int) -> tuple[int, int, int]:
        """(field number, wire type, position after the key)."""
        k, after = self.varint(pos, end)
        if not 0 < k >> 3 <= 0x1FFFFFFF:
            raise ProtobufDecodeError(f"protobuf: invalid field number at offset {pos}")
        return k >> 3, k & 7, after

    def length(self, pos: int, end: int) -> tuple[int, int]:
        """(start, end) of a length-delimited value."""
        n, pos = self.varint(pos, end)
        if n > end - pos:
            raise ProtobufDecodeError(
                f"protobuf: length {n} at offset {pos} runs past the end of its message"
            )
        return pos, pos + n

    def skip(self, wire: int, pos: int, end: int) -> tuple[int, bool]:
        """Skip one value; also say whether it was non-zero (worth reporting when unknown)."""
        if wire == 0:
            v, pos = self.varint(pos, end)
            return pos, v != 0
        if wire == 2:
            start, stop = self.length(pos, end)
            return stop, stop > start
        size = {1: 8, 5: 4}.get(wire)
        if size is None:
            raise ProtobufDecodeError(f"protobuf: unsupported wire type {wire} at offset {pos}")
        if pos + size > end:
            raise ProtobufDecodeError(f"protobuf: truncated fixed-size value at offset {pos}")
        return pos + size, any(self.data[pos : pos + size])

    def scalars(self, pos: int, end: int) -> dict[int, int | bytes]:
        """A tiny message of scalars (Time, Quantity, IntOrString, RawExtension): number -> value."""
        out: dict[int, int | bytes] = {}
        while pos < end:
            number, wire, pos = self.key(pos, end)
            if wire == 0:
                out[number], pos = self.varint(pos, end)
            elif wire == 2:
                start, pos = self.length(pos, end)
                out[number] = self.data[start:pos]
            else:
                pos, _ = self.skip(wire, pos, end)
        return out


def format_time(seconds: int, nanos: int, *, micro: bool) -> str | None:
    if seconds == GO_ZERO_SECONDS and nanos == 0:
        return None
    try:
        t = EPOCH + timedelta(seconds=seconds)
    except OverflowError as e:
        raise ProtobufDecodeError(f"protobuf: timestamp {seconds}s is out of range") from e
    text = f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:{t.second:02d}"
    if micro:  # MicroTime keeps microseconds; Time drops sub-second parts, as upstream does
        return text + f".{min(max(nanos, 0), 999_999_999) // 1000:06d}Z"
    return text + "Z"


def varint_bytes(n: int) -> bytes:
    n &= 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def tag(number: int, wire: int) -> bytes:
    return varint_bytes(number << 3 | wire)


def len_field(number: int, payload: bytes) -> bytes:
    return tag(number, 2) + varint_bytes(len(payload)) + payload


def parse_time(value: Any, path: str) -> tuple[int, int]:
    if not isinstance(value, str):
        raise ProtobufEncodeError(f"{path}: expected an RFC 3339 time string, got {type(value).__name__}")
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as e:
        raise ProtobufEncodeError(f"{path}: {value!r} is not an RFC 3339 time") from e
    delta = (t if t.tzinfo else t.replace(tzinfo=UTC)) - EPOCH
    return delta.days * 86400 + delta.seconds, delta.microseconds * 1000
