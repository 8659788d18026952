"""Field sets: which parts of an object a field manager owns, in managedFields' own spelling.

Server-side apply records ownership as sets of *paths*. A path is a tuple of path elements, and we
keep each element exactly as ``fieldsV1`` spells it on the wire, so a set read from an object and
written back is byte-for-byte stable:

- ``f:<name>``          a field of a struct or a key of a map (``f:spec``, ``f:app``);
- ``k:{"name":"a"}``    the item of an associative list whose key fields have these values
                        (key fields sorted by name, compact JSON);
- ``v:"x"``             the item of a set (a list of scalars that behaves as a set);
- ``i:3``               a list index (only met in sets decoded from other servers).

A set is an ordinary Python ``set`` of paths. Each path names one owned thing: a leaf value, an
atomic list/map/struct, or a list item or map node as a whole (written ``.`` inside its node in
``fieldsV1``). Keeping sets flat makes the algebra apply needs (union, difference, intersection)
plain set operations; only encoding and the removal walk need the tree shape, built on demand.

Ordering follows structured-merge-diff so encoded sets and conflict lists come out in the same order
as from a Kubernetes API server: field names first (by name), then keys, then values, then indices.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

__all__ = [
    "Path",
    "FieldSet",
    "field_pe",
    "key_pe",
    "value_pe",
    "index_pe",
    "go_json",
    "pe_sort_key",
    "pe_string",
    "path_string",
    "encode_fields_v1",
    "decode_fields_v1",
    "sorted_paths",
    "PathTrie",
    "exclude_prefixes",
]

Path = tuple[str, ...]
FieldSet = set[Path]


def go_json(value: Any) -> str:
    """Compact JSON as Go's encoder writes it: no spaces, UTF-8 kept, ``<>&`` and U+2028/9 escaped."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def field_pe(name: str) -> str:
    return "f:" + name


def key_pe(fields: Iterable[tuple[str, Any]]) -> str:
    ordered = sorted(fields, key=lambda kv: kv[0])
    return "k:{" + ",".join(go_json(n) + ":" + go_json(v) for n, v in ordered) + "}"


def value_pe(value: Any) -> str:
    return "v:" + go_json(value)


def index_pe(index: int) -> str:
    return "i:" + str(index)


def _value_key(v: Any) -> tuple[Any, ...]:
    """A total order over JSON values: numbers < strings < booleans < lists < maps < null."""
    if isinstance(v, bool):
        return (2, v)
    if isinstance(v, int | float):
        return (0, float(v))
    if isinstance(v, str):
        return (1, v)
    if isinstance(v, list):
        return (3, tuple(_value_key(x) for x in v))
    if isinstance(v, dict):
        return (4, tuple((k, _value_key(v[k])) for k in sorted(v)))
    return (5,)


def pe_sort_key(pe: str) -> tuple[Any, ...]:
    kind, _, body = pe.partition(":")
    if kind == "f":
        return (0, body)
    if kind == "k":
        try:
            fields = json.loads(body)
        except ValueError:
            return (1, (), body)
        if isinstance(fields, dict):
            return (1, tuple((n, _value_key(fields[n])) for n in sorted(fields)))
        return (1, (), body)
    if kind == "v":
        try:
            return (2, _value_key(json.loads(body)))
        except ValueError:
            return (2, (9, body))
    if kind == "i":
        try:
            return (3, int(body))
        except ValueError:
            return (3, 0)
    return (4, pe)


def _go_value_string(v: Any) -> str:
    """How structured-merge-diff prints a value inside a path (strings quoted)."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() and abs(v) < 1e21 else repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ",".join(_go_value_string(x) for x in v) + "]"
    if isinstance(v, dict):
        return "".join(f"{k}={_go_value_string(x)}" for k, x in v.items())
    return str(v)


def pe_string(pe: str) -> str:
    """The human spelling Kubernetes uses in conflict messages: ``.name``, ``[name="a"]``, ``[="x"]``."""
    kind, _, body = pe.partition(":")
    if kind == "f":
        return "." + body
    if kind == "k":
        try:
            fields = json.loads(body)
        except ValueError:
            return "[" + body + "]"
        return "[" + ",".join(f"{n}={_go_value_string(fields[n])}" for n in fields) + "]"
    if kind == "v":
        try:
            return "[=" + _go_value_string(json.loads(body)) + "]"
        except ValueError:
            return "[=" + body + "]"
    if kind == "i":
        return "[" + body + "]"
    return pe


def path_string(path: Path) -> str:
    return "".join(pe_string(pe) for pe in path)


class PathTrie:
    """A set as a tree: at each node, the elements that are members and the subtrees below."""

    __slots__ = ("members", "children")

    def __init__(self) -> None:
        self.members: set[str] = set()
        self.children: dict[str, PathTrie] = {}

    @classmethod
    def of(cls, paths: Iterable[Path]) -> PathTrie:
        root = cls()
        for path in paths:
            if not path:
                continue
            node = root
            for pe in path[:-1]:
                node = node.children.setdefault(pe, cls())
            node.members.add(path[-1])
        return root

    def child(self, pe: str) -> PathTrie | None:
        return self.children.get(pe)

    def empty(self) -> bool:
        return not self.members and not self.children


def sorted_paths(paths: Iterable[Path]) -> list[Path]:
    """Paths in structured-merge-diff's iteration order: at each node its members, then its subtrees."""
    out: list[Path] = []

    def walk(node: PathTrie, prefix: Path) -> None:
        for pe in sorted(node.members, key=pe_sort_key):
            out.append(prefix + (pe,))
        for pe in sorted(node.children, key=pe_sort_key):
            walk(node.children[pe], prefix + (pe,))

    walk(PathTrie.of(paths), ())
    return out


def encode_fields_v1(paths: Iterable[Path]) -> dict[str, Any]:
    """The ``fieldsV1`` object for a set: ``{"f:data": {".": {}, "f:k": {}}}``."""

    def emit(node: PathTrie) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for pe in sorted(node.members | node.children.keys(), key=pe_sort_key):
            sub = node.children.get(pe)
            if sub is None:
                out[pe] = {}
                continue
            body = emit(sub)
            out[pe] = {".": {}, **body} if pe in node.members else body
        return out

    return emit(PathTrie.of(paths))


_KNOWN_KINDS = frozenset("fkvi")


def _check_pe(pe: str) -> bool:
    """True if ``pe`` is a path element we understand; ValueError if it claims a kind but is malformed.
    Elements of kinds we do not know are skipped, as Kubernetes does (a newer server may write them)."""
    if len(pe) < 2 or pe[1] != ":":
        raise ValueError(f"malformed path element {pe!r}")
    if pe[0] not in _KNOWN_KINDS:
        return False
    body = pe[2:]
    if pe[0] == "k":
        fields = json.loads(body)
        if not isinstance(fields, dict):
            raise ValueError(f"malformed key path element {pe!r}")
    elif pe[0] == "v":
        json.loads(body)
    elif pe[0] == "i":
        int(body)
    return True


def decode_fields_v1(obj: Any) -> FieldSet:
    """Read a ``fieldsV1`` object into a set. ValueError if it is not a well-formed set."""
    if obj is None:
        return set()
    if not isinstance(obj, dict):
        raise ValueError("fieldsV1 must be an object")
    out: FieldSet = set()

    def walk(node: dict[str, Any], prefix: Path) -> bool:
        """Adds what lies under ``node``; returns whether the node itself is a member."""
        is_member = False
        has_children = False
        for pe, sub in node.items():
            if pe == ".":
                is_member = True
                continue
            if not isinstance(sub, dict):
                raise ValueError(f"fieldsV1 entry {pe!r} must be an object")
            try:
                known = _check_pe(pe)
            except ValueError as e:
                raise ValueError(f"malformed path element {pe!r}: {e}") from None
            if not known:
                continue
            has_children = True
            path = prefix + (pe,)
            if walk(sub, path):
                out.add(path)
        return is_member or not has_children

    walk(obj, ())
    return out


def exclude_prefixes(paths: Iterable[Path], prefixes: Iterable[Path]) -> FieldSet:
    """Drop every path that is, or lies under, one of ``prefixes`` (reset fields such as ``status``)."""
    pre = {p for p in prefixes if p}
    if not pre:
        return set(paths)
    return {p for p in paths if not any(p[:n] in pre for n in range(1, len(p) + 1))}
