"""Kubernetes protobuf bodies, read and written from our own schema.

kubectl sends ``create <kind>``, ``auth can-i`` and ``create token`` bodies as
``application/vnd.kubernetes.protobuf`` and does not retry as JSON after a 415, so the API server must
read them. A body is ``k8s\\0`` then a ``runtime.Unknown`` message (1 typeMeta {1 apiVersion, 2 kind},
2 raw = the object's own message, 3 contentEncoding, 4 contentType).

No generated code: one small proto wire reader/writer is driven by the field numbers of our `Struct`s,
so a kind is readable as soon as the schema knows it. The result is exactly the dict kubectl would
have sent as JSON for the same Go object, so what follows decoding (defaulting, validation, storage)
sees one shape whatever the wire format:

- client-go writes every non-pointer scalar even when zero; JSON drops zero ``omitempty`` values but
  keeps pointer fields and fields without ``omitempty`` (facts in `podvisor.schema._presence`);
- Time is {1 seconds, 2 nanos}, an empty message being the zero time (JSON ``null``); MicroTime keeps
  microseconds; Quantity is {1 string}; IntOrString is {1 type, 2 intVal, 3 strVal}; RawExtension and
  FieldsV1 are {1 raw} holding JSON; ``[]byte`` is base64 in JSON;
- maps are repeated {1 key, 2 value} entries; list values of maps (and meta.v1 ``verbs``) are wrapped
  in a message holding the items as field 1; fields JSON flattens in from an embedded struct travel in
  one nested message (``Field.proto_via``: Volume's VolumeSource is field 2).

Unknown field numbers are skipped, as upstream does, but those carrying a non-zero value are reported
(`UnknownProtobufFieldsError`, or appended to a caller's list) so strict field validation can refuse
them. Malformed input raises `ProtobufDecodeError` (a 400), never anything else.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct as _struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from podvisor.apiserver.errors import BadRequestError
from podvisor.schema._presence import presence_flags
from podvisor.schema._protowire import (
    ProtobufDecodeError,
    ProtobufEncodeError,
    Reader,
    format_time,
    int32,
    int64,
    len_field,
    num,
    parse_time,
    tag,
    text,
    varint_bytes,
    varint_value,
    wire_error,
)
from podvisor.schema.model import SCALARS, Field, ListOf, MapOf, Struct, TypeRef

__all__ = [
    "MAGIC",
    "PROTOBUF_CONTENT_TYPE",
    "StructLookup",
    "KindLookup",
    "ProtobufDecodeError",
    "ProtobufEncodeError",
    "UnknownProtobufFieldsError",
    "decode_object",
    "decode_unknown",
    "encode_object",
    "encode_unknown",
    "unknown_field_path",
]

MAGIC = b"k8s\x00"
PROTOBUF_CONTENT_TYPE = "application/vnd.kubernetes.protobuf"

StructLookup = Callable[[str], Struct]
"""Definition name -> Struct, raising KeyError (default: ``podvisor.schema.struct``)."""
KindLookup = Callable[[str, str, str], "Struct | str | None"]
"""(group, version, kind) -> Struct or its name (default: ``podvisor.schema.struct_for_kind``)."""

_MAX_DEPTH = 64
_ZERO: dict[str, Any] = {"string": "", "boolean": False, "int32": 0, "int64": 0, "double": 0.0, "bytes": ""}
_VARINTS = ("boolean", "int32", "int64")
_TIMES = ("date-time", "micro-time")
# list fields that upstream wraps in a message of their own (meta.v1.Verbs)
_WRAPPED_LISTS = frozenset({("io.k8s.apimachinery.pkg.apis.meta.v1.APIResource", "verbs")})


class UnknownProtobufFieldsError(BadRequestError):
    """The body decoded, but carried non-zero fields whose numbers the schema does not know.
    ``obj`` is the decoded object without them; ``fields`` their paths (`unknown_field_path`)."""

    def __init__(self, obj: dict[str, Any], fields: list[str]) -> None:
        super().__init__("unknown protobuf fields: " + ", ".join(f'"{f}"' for f in fields))
        self.obj = obj
        self.fields = fields


def unknown_field_path(path: str, number: int) -> str:
    """How an unknown protobuf field is named: ``spec.<protobuf field 57>``."""
    leaf = f"<protobuf field {number}>"
    return f"{path}.{leaf}" if path else leaf


def _default_structs(name: str) -> Struct:
    from podvisor.schema import registry  # late: keeps this module importable without the data

    return registry.struct(name)


def _default_kinds(group: str, version: str, kind: str) -> Struct | str | None:
    from podvisor.schema import registry

    return registry.struct_for_kind(group, version, kind)


# ----------------------------------------------------------------------------------------- layouts


@dataclass(slots=True)
class _Layout:
    """A struct's fields by wire number; ``nested`` are embedded messages of flattened fields."""

    owner: str
    fields: dict[int, Field] = field(default_factory=dict)
    nested: dict[int, _Layout] = field(default_factory=dict)


_LAYOUTS: dict[int, tuple[Struct, _Layout]] = {}


def _layout(s: Struct) -> _Layout:
    """The wire layout of a struct, computed once per Struct object."""
    cached = _LAYOUTS.get(id(s))
    if cached is not None and cached[0] is s:
        return cached[1]
    top = _Layout(s.name)
    for f in s.fields.values():
        if not f.proto:
            continue
        at = top
        for number in f.proto_via:
            at = at.nested.setdefault(number, _Layout(s.name))
        at.fields[f.proto] = f
    if len(_LAYOUTS) > 4096:  # structs are few and long-lived; this only guards against misuse
        _LAYOUTS.clear()
    _LAYOUTS[id(s)] = (s, top)
    return top


def _items(t: ListOf, owner: str) -> _Layout:
    """The wrapper of a wrapped list: the items as field 1."""
    return _Layout(owner, {1: Field("items", t, proto=1)})


def _kind(t: TypeRef) -> str:
    if isinstance(t, ListOf):
        return "list"
    if isinstance(t, MapOf):
        return "map"
    return t if t in SCALARS else "struct"


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _is_zero(v: Any) -> bool:
    return v is None or v is False or v == "" or (type(v) in (int, float) and v == 0)


def _raw_json(raw: int | bytes | None, path: str, structs: StructLookup, kinds: KindLookup) -> Any:
    if not isinstance(raw, bytes) or not raw:
        return None
    if raw.startswith(MAGIC):  # an embedded object written as protobuf
        return decode_unknown(raw, structs=structs, kinds=kinds, unknown=[])
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise ProtobufDecodeError(f"protobuf: {path} does not hold JSON: {e}") from e


# ----------------------------------------------------------------------------------------- decoder

_MISSING = object()


class _Decoder:
    def __init__(self, data: bytes, structs: StructLookup, kinds: KindLookup, unknown: list[str]) -> None:
        self.r = Reader(data)
        self.structs = structs
        self.kinds = kinds
        self.unknown = unknown

    def struct(self, name: str, path: str) -> Struct:
        try:
            return self.structs(name)
        except LookupError as e:
            raise ProtobufDecodeError(f"protobuf: no schema for {name} at {path or '.'}") from e

    def message(self, s: Struct, pos: int, end: int, path: str, depth: int) -> dict[str, Any]:
        if depth > _MAX_DEPTH:
            raise ProtobufDecodeError(f"protobuf: nesting deeper than {_MAX_DEPTH} at {path}")
        layout = _layout(s)
        values: dict[str, Any] = {}
        self.collect(layout, pos, end, path, depth, values)
        return self.finish(s, values)

    def collect(
        self, layout: _Layout, pos: int, end: int, path: str, depth: int, values: dict[str, Any]
    ) -> None:
        while pos < end:
            number, wire, pos = self.r.key(pos, end)
            f = layout.fields.get(number)
            nested = layout.nested.get(number)
            if f is not None:
                pos = self.field(layout.owner, f, wire, pos, end, _join(path, f.name), depth, values)
            elif nested is not None and wire == 2:
                start, pos = self.r.length(pos, end)
                self.collect(nested, start, pos, path, depth, values)
            else:
                pos, nonzero = self.r.skip(wire, pos, end)
                if nonzero:
                    self.unknown.append(unknown_field_path(path, number))

    def field(
        self,
        owner: str,
        f: Field,
        wire: int,
        pos: int,
        end: int,
        path: str,
        depth: int,
        values: dict[str, Any],
    ) -> int:
        t = f.type
        if isinstance(t, ListOf):
            items = values.get(f.name)
            if not isinstance(items, list):
                items = values[f.name] = []
            if (owner, f.name) in _WRAPPED_LISTS:
                return self.wrapped(t, owner, wire, pos, end, path, depth, items)
            if wire == 2 and t.item in _VARINTS:  # packed (client-go writes unpacked; both are valid)
                start, stop = self.r.length(pos, end)
                while start < stop:
                    v, start = self.r.varint(start, stop)
                    items.append(varint_value(str(t.item), v))
                return stop
            v, pos = self.value(t.item, wire, pos, end, f"{path}[{len(items)}]", depth)
            items.append(v)
            return pos
        if isinstance(t, MapOf):
            entries = values.get(f.name)
            if not isinstance(entries, dict):
                entries = values[f.name] = {}
            if wire != 2:
                raise wire_error(path, wire, 2)
            start, pos = self.r.length(pos, end)
            key, value = self.entry(t.value, owner, start, pos, path, depth)
            entries[key] = value
            return pos
        v, pos = self.value(t, wire, pos, end, path, depth)
        old = values.get(f.name)
        if isinstance(old, dict) and isinstance(v, dict):
            old.update(v)  # a singular message seen twice merges, as proto specifies
        else:
            values[f.name] = v
        return pos

    def wrapped(
        self, t: ListOf, owner: str, wire: int, pos: int, end: int, path: str, depth: int, items: list[Any]
    ) -> int:
        if wire != 2:
            raise wire_error(path, wire, 2)
        start, pos = self.r.length(pos, end)
        got: dict[str, Any] = {"items": items}
        self.collect(_items(t, owner), start, pos, path, depth + 1, got)
        return pos

    def entry(self, vtype: TypeRef, owner: str, pos: int, end: int, path: str, depth: int) -> tuple[str, Any]:
        key, value = "", _MISSING
        while pos < end:
            number, wire, pos = self.r.key(pos, end)
            if number == 1:
                k, pos = self.value("string", wire, pos, end, path, depth)
                key = str(k)
            elif number == 2 and isinstance(vtype, ListOf):
                value = []
                pos = self.wrapped(vtype, owner, wire, pos, end, _join(path, key), depth, value)
            elif number == 2:
                value, pos = self.value(vtype, wire, pos, end, _join(path, key), depth)
            else:
                pos, _ = self.r.skip(wire, pos, end)
        if value is _MISSING:  # an entry without a value holds the value type's zero
            kind = _kind(vtype)
            if kind == "struct":
                assert isinstance(vtype, str)
                value = self.message(self.struct(vtype, path), 0, 0, path, depth + 1)
            else:
                value = {"quantity": "0", "int-or-string": 0}.get(kind, _ZERO.get(kind))
        return key, value

    def value(self, t: TypeRef, wire: int, pos: int, end: int, path: str, depth: int) -> tuple[Any, int]:
        kind = _kind(t)
        if kind in _VARINTS:
            if wire != 0:
                raise wire_error(path, wire, 0)
            v, pos = self.r.varint(pos, end)
            return varint_value(kind, v), pos
        if kind == "double":
            if wire != 1:
                raise wire_error(path, wire, 1)
            if pos + 8 > end:
                raise ProtobufDecodeError(f"protobuf: truncated double at {path}")
            return _struct.unpack_from("<d", self.r.data, pos)[0], pos + 8
        if wire != 2:
            raise wire_error(path, wire, 2)
        start, stop = self.r.length(pos, end)
        if kind == "string":
            return self.r.data[start:stop].decode("utf-8", errors="replace"), stop
        if kind == "bytes":
            return base64.b64encode(self.r.data[start:stop]).decode("ascii"), stop
        if kind == "struct":
            assert isinstance(t, str)
            return self.message(self.struct(t, path), start, stop, path, depth + 1), stop
        if kind in ("list", "map"):
            raise ProtobufDecodeError(f"protobuf: nested collections are not supported at {path}")
        sub = self.r.scalars(start, stop)
        if kind in _TIMES:
            if stop == start:
                return None, stop
            seconds, nanos = int64(num(sub.get(1))), int32(num(sub.get(2)))
            return format_time(seconds, nanos, micro=kind == "micro-time"), stop
        if kind == "quantity":
            return text(sub.get(1)) or "0", stop
        if kind == "int-or-string":
            return (text(sub.get(3)) if num(sub.get(1)) == 1 else int32(num(sub.get(2)))), stop
        if kind == "raw":
            return _raw_json(sub.get(1), path, self.structs, self.kinds), stop
        raise ProtobufDecodeError(f"protobuf: {path}: type {kind!r} is not supported")

    def finish(self, s: Struct, values: dict[str, Any]) -> dict[str, Any]:
        """Go's JSON presence rules, in declaration order."""
        out: dict[str, Any] = {}
        for name, f in s.fields.items():
            flags = presence_flags(s.name, name)
            if name in values:
                v = values[name]
                if not flags and isinstance(f.type, str) and f.type in _ZERO and _is_zero(v):
                    continue  # an omitempty non-pointer scalar at its zero value
                out[name] = v
            elif flags == "N":
                out[name] = None
            elif flags == "n" and isinstance(f.type, str):
                out[name] = _ZERO.get(f.type)
        return out


def _finish_unknown(obj: dict[str, Any], found: list[str], unknown: list[str] | None) -> dict[str, Any]:
    if unknown is not None:
        unknown.extend(found)
    elif found:
        raise UnknownProtobufFieldsError(obj, found)
    return obj


def decode_object(
    data: bytes, struct_name: str, *, structs: StructLookup | None = None, unknown: list[str] | None = None
) -> dict[str, Any]:
    """Decode one object's own message (no prefix, no envelope) into the dict its JSON would be.

    Unknown field numbers with non-zero values are appended to ``unknown`` when a list is given;
    otherwise they raise `UnknownProtobufFieldsError` once everything else is decoded."""
    data = bytes(data)
    found: list[str] = []
    dec = _Decoder(data, structs or _default_structs, _default_kinds, found)
    try:
        obj = dec.message(dec.struct(struct_name, ""), 0, len(data), "", 0)
    except RecursionError as e:
        raise ProtobufDecodeError("protobuf: the object is nested too deeply") from e
    return _finish_unknown(obj, found, unknown)


def _split_api_version(api_version: str) -> tuple[str, str]:
    group, _, version = api_version.rpartition("/")
    return group, version


def _resolve_kind(kinds: KindLookup, api_version: str, kind: str) -> str:
    group, version = _split_api_version(api_version)
    try:
        found = kinds(group, version, kind)
    except LookupError:
        found = None
    if found is None:
        raise ProtobufDecodeError(f'no kind "{kind}" is registered for version "{api_version}"')
    return found if isinstance(found, str) else found.name


def decode_unknown(
    body: bytes,
    *,
    structs: StructLookup | None = None,
    kinds: KindLookup | None = None,
    unknown: list[str] | None = None,
) -> dict[str, Any]:
    """Decode a whole ``application/vnd.kubernetes.protobuf`` body: prefix, ``runtime.Unknown``, then
    the object its typeMeta names. The result starts with ``kind`` and ``apiVersion``."""
    body = bytes(body)
    if not body.startswith(MAGIC):
        raise ProtobufDecodeError("protobuf: the body does not start with the Kubernetes protobuf prefix")
    r, end, pos = Reader(body), len(body), len(MAGIC)
    api_version = kind = encoding = content_type = ""
    raw = (0, 0)
    while pos < end:
        number, wire, pos = r.key(pos, end)
        if wire != 2:
            pos, _ = r.skip(wire, pos, end)
            continue
        start, pos = r.length(pos, end)
        if number == 1:
            meta = r.scalars(start, pos)
            api_version, kind = text(meta.get(1)), text(meta.get(2))
        elif number == 2:
            raw = (start, pos)
        elif number == 3:
            encoding = text(body[start:pos])
        elif number == 4:
            content_type = text(body[start:pos])
    if encoding:
        raise ProtobufDecodeError(f'protobuf: unsupported contentEncoding "{encoding}"')
    if content_type not in ("", PROTOBUF_CONTENT_TYPE):
        raise ProtobufDecodeError(f'protobuf: unsupported contentType "{content_type}" in the envelope')
    if not kind or not api_version:
        raise ProtobufDecodeError(
            "Object 'Kind' is missing in the protobuf envelope"
            if not kind
            else "Object 'apiVersion' is missing in the protobuf envelope"
        )
    name = _resolve_kind(kinds or _default_kinds, api_version, kind)
    found: list[str] = []
    dec = _Decoder(body[raw[0] : raw[1]], structs or _default_structs, kinds or _default_kinds, found)
    try:
        inner = dec.message(dec.struct(name, ""), 0, raw[1] - raw[0], "", 0)
    except RecursionError as e:
        raise ProtobufDecodeError("protobuf: the object is nested too deeply") from e
    obj: dict[str, Any] = {"kind": kind, "apiVersion": api_version}
    obj.update((k, v) for k, v in inner.items() if k not in ("kind", "apiVersion"))
    return _finish_unknown(obj, found, unknown)


# ----------------------------------------------------------------------------------------- encoder


def _expect(ok: bool, path: str, what: str, v: Any) -> None:
    if not ok:
        raise ProtobufEncodeError(f"{path or '.'}: expected {what}, got {type(v).__name__}")


class _Encoder:
    def __init__(self, structs: StructLookup) -> None:
        self.structs = structs

    def struct(self, name: str, path: str) -> Struct:
        try:
            return self.structs(name)
        except LookupError as e:
            raise ProtobufEncodeError(f"no schema for {name} at {path or '.'}") from e

    def message(self, s: Struct, obj: Any, path: str) -> bytes:
        _expect(isinstance(obj, dict), path, "an object", obj)
        return self.fields(_layout(s), obj, path)

    def fields(self, layout: _Layout, obj: dict[str, Any], path: str) -> bytes:
        out = bytearray()
        for number in sorted(layout.fields.keys() | layout.nested.keys()):
            f = layout.fields.get(number)
            if f is None:  # an embedded struct is always written, as client-go does
                out += len_field(number, self.fields(layout.nested[number], obj, path))
            elif f.name in obj:
                out += self.field(layout.owner, f, obj[f.name], _join(path, f.name))
        return bytes(out)

    def field(self, owner: str, f: Field, v: Any, path: str) -> bytes:
        t, n = f.type, f.proto
        if v is None:  # a null time is Go's zero time, which client-go writes as an empty message
            return len_field(n, b"") if t in _TIMES else b""
        if isinstance(t, ListOf):
            _expect(isinstance(v, list), path, "a list", v)
            if (owner, f.name) in _WRAPPED_LISTS:
                return len_field(n, self.fields(_items(t, owner), {"items": v}, path))
            return b"".join(self.value(n, t.item, item, f"{path}[{i}]") for i, item in enumerate(v))
        if isinstance(t, MapOf):
            _expect(isinstance(v, dict), path, "an object", v)
            out = bytearray()
            for key in sorted(v):  # client-go sorts map keys
                entry = len_field(1, str(key).encode())
                item = v[key]
                if isinstance(t.value, ListOf) and item is not None:
                    entry += len_field(
                        2, self.fields(_items(t.value, owner), {"items": item}, _join(path, key))
                    )
                elif item is not None:
                    entry += self.value(2, t.value, item, _join(path, key))
                out += len_field(n, entry)
            return bytes(out)
        return self.value(n, t, v, path)

    def value(self, n: int, t: TypeRef, v: Any, path: str) -> bytes:
        kind = _kind(t)
        if kind == "boolean":
            _expect(isinstance(v, bool), path, "a boolean", v)
            return tag(n, 0) + varint_bytes(int(v))
        if kind in ("int32", "int64"):
            v = int(v) if isinstance(v, float) and v.is_integer() else v
            _expect(isinstance(v, int) and not isinstance(v, bool), path, "an integer", v)
            return tag(n, 0) + varint_bytes(v)
        if kind == "double":
            _expect(isinstance(v, int | float) and not isinstance(v, bool), path, "a number", v)
            return tag(n, 1) + _struct.pack("<d", float(v))
        if kind == "string":
            _expect(isinstance(v, str), path, "a string", v)
            return len_field(n, v.encode())
        if kind == "bytes":
            try:
                return len_field(n, base64.b64decode(v, validate=True))
            except (binascii.Error, TypeError, ValueError) as e:
                raise ProtobufEncodeError(f"{path}: expected base64 data") from e
        if kind == "struct":
            assert isinstance(t, str)
            return len_field(n, self.message(self.struct(t, path), v, path))
        if kind in _TIMES:
            seconds, nanos = parse_time(v, path)
            nanos = nanos if kind == "micro-time" else 0
            return len_field(n, tag(1, 0) + varint_bytes(seconds) + tag(2, 0) + varint_bytes(nanos))
        if kind == "quantity":
            _expect(isinstance(v, str | int | float) and not isinstance(v, bool), path, "a quantity", v)
            return len_field(n, len_field(1, str(v).encode()))
        if kind == "int-or-string":
            if isinstance(v, str):
                return len_field(n, b"\x08\x01\x10\x00" + len_field(3, v.encode()))
            _expect(isinstance(v, int) and not isinstance(v, bool), path, "an integer or a string", v)
            return len_field(n, b"\x08\x00\x10" + varint_bytes(v) + len_field(3, b""))
        if kind == "raw":
            return len_field(n, len_field(1, json.dumps(v, separators=(",", ":")).encode()))
        raise ProtobufEncodeError(f"{path}: type {kind!r} cannot be written as protobuf")


def encode_object(obj: dict[str, Any], struct_name: str, *, structs: StructLookup | None = None) -> bytes:
    """Write an object's own message (no envelope) in client-go's field order. Keys the schema does
    not know, and ``None`` values, are left out (a null time is written as the zero time)."""
    enc = _Encoder(structs or _default_structs)
    return enc.message(enc.struct(struct_name, ""), obj, "")


def encode_unknown(
    obj: dict[str, Any],
    *,
    struct_name: str | None = None,
    structs: StructLookup | None = None,
    kinds: KindLookup | None = None,
) -> bytes:
    """A whole protobuf body (prefix + ``runtime.Unknown``) for an object with apiVersion and kind."""
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str) or not kind or not api_version:
        raise ProtobufEncodeError("an object needs apiVersion and kind to be written as protobuf")
    if struct_name is None:
        try:
            struct_name = _resolve_kind(kinds or _default_kinds, api_version, kind)
        except ProtobufDecodeError as e:
            raise ProtobufEncodeError(e.message) from e
    raw = encode_object(obj, struct_name, structs=structs)
    type_meta = len_field(1, api_version.encode()) + len_field(2, kind.encode())
    return MAGIC + len_field(1, type_meta) + len_field(2, raw) + len_field(3, b"") + len_field(4, b"")
