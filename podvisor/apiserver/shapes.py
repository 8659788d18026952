"""Shapes: how each value of an object is owned and merged, resolved from our one schema.

Server-side apply needs to know, for every value in an object, whether it is a leaf (a scalar, or an
atomic list/map/struct that is owned and replaced whole), a struct or map whose fields are owned one
by one, or a list whose items are owned one by one: an associative list keyed by some of its items'
fields (containers by ``name``), or a set of scalars (finalizers). That knowledge lives in
`podvisor.schema`: ``list_type``/``list_map_keys`` when given, else a ``merge`` patch strategy with a
merge key means a keyed list and without one a set; anything else is atomic, as Kubernetes derives it.
Values the schema says nothing about (``raw`` fields, kinds without a struct) are *deduced*: objects
are maps owned key by key, lists are atomic.

Key fields an item omits take their schema default (``protocol: TCP`` for ports when the schema has
no default recorded), so ``{containerPort: 80}`` and ``{containerPort: 80, protocol: TCP}`` are the
same item, as in Kubernetes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from podvisor.apiserver.fieldsets import key_pe, value_pe
from podvisor.schema.model import SCALARS, Field, ListOf, MapOf, Struct, TypeRef

__all__ = [
    "MISSING",
    "DEDUCED",
    "Lookup",
    "Shape",
    "TypedSchema",
    "WalkError",
    "resolve",
    "json_equal",
    "drop_nulls",
]

Lookup = Callable[[str], Struct]


class _Missing:
    """Absent, as opposed to present with the value null."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Any = _Missing()


class WalkError(ValueError):
    """A value that cannot be placed in its list (no key fields, a map in a set ...)."""


@dataclass(frozen=True, slots=True)
class Shape:
    """How a value is owned and merged: ``scalar``, ``struct``, ``map``, ``list`` or ``deduced``."""

    kind: str
    name: str = ""  # struct name, or scalar type name
    elem: TypeRef | None = None  # map value / list item type; None = deduced
    atomic: bool = False
    list_type: str = ""  # "atomic" | "set" | "map"
    keys: tuple[str, ...] = ()

    @property
    def leaf(self) -> bool:
        return self.kind == "scalar" or self.atomic or (self.kind == "list" and self.list_type == "atomic")


DEDUCED = Shape("deduced")
_DEDUCED_MAP = Shape("map")
_ATOMIC_LIST = Shape("list", list_type="atomic")

# Kubernetes' schema defaults these key fields; an item that omits them is keyed by the default.
_KEY_DEFAULTS = {"protocol": "TCP"}


class TypedSchema:
    """Shapes resolved from the schema, cached per (type, field) for the length of one request."""

    def __init__(self, lookup: Lookup) -> None:
        self._lookup = lookup
        self._structs: dict[str, Struct | None] = {}

    def struct(self, name: str) -> Struct | None:
        if name not in self._structs:
            try:
                self._structs[name] = self._lookup(name)
            except KeyError:
                self._structs[name] = None
        return self._structs[name]

    def root(self, struct_name: str | None) -> Shape:
        if struct_name is None:
            return DEDUCED
        return self.shape(struct_name, None)

    def shape(self, ref: TypeRef | None, fld: Field | None) -> Shape:
        if ref is None:
            return DEDUCED
        if isinstance(ref, ListOf):
            return Shape("list", elem=ref.item, **_list_semantics(fld))
        if isinstance(ref, MapOf):
            return Shape("map", elem=ref.value, atomic=fld is not None and fld.map_type == "atomic")
        if ref == "raw":
            return DEDUCED
        if ref in SCALARS:
            return Shape("scalar", name=ref)
        st = self.struct(ref)
        if st is None:
            return DEDUCED
        atomic = st.struct_type == "atomic" or (fld is not None and fld.map_type == "atomic")
        return Shape("struct", name=ref, atomic=atomic)

    def fields(self, shape: Shape) -> dict[str, Field]:
        st = self.struct(shape.name) if shape.kind == "struct" else None
        return st.fields if st is not None else {}

    def child(self, shape: Shape, key: str) -> tuple[Shape, Field | None]:
        """The shape of ``key`` inside a struct or map, and the struct field it is (None for map keys)."""
        if shape.kind == "struct":
            fld = self.fields(shape).get(key)
            return (self.shape(fld.type, fld), fld) if fld is not None else (DEDUCED, None)
        if shape.kind == "map":
            return self.shape(shape.elem, None), None
        return DEDUCED, None

    def item(self, shape: Shape) -> Shape:
        return self.shape(shape.elem, None) if shape.kind == "list" else DEDUCED

    def is_named(self, shape: Shape, key: str) -> bool:
        return shape.kind == "struct" and key in self.fields(shape)

    def item_pe(self, shape: Shape, item: Any) -> str:
        """The path element of one item of an associative list; WalkError if it has none."""
        if shape.keys:
            if not isinstance(item, dict):
                raise WalkError("associative list with keys may not have non-map elements")
            item_struct = self.struct(shape.elem) if isinstance(shape.elem, str) else None
            pairs: list[tuple[str, Any]] = []
            for k in shape.keys:
                if k in item:
                    pairs.append((k, item[k]))
                    continue
                fld = item_struct.fields.get(k) if item_struct is not None else None
                default = fld.default if fld is not None and fld.default is not None else _KEY_DEFAULTS.get(k)
                if default is not None:
                    pairs.append((k, default))
            if not pairs:
                raise WalkError(
                    "associative list with keys has an element that omits all key fields "
                    f"{list(shape.keys)!r} (and doesn't have default values for any key fields)"
                )
            return key_pe(pairs)
        if isinstance(item, dict):
            raise WalkError("associative list without keys has an element that's a map type")
        if isinstance(item, list):
            raise WalkError("associative list without keys has an element that's a list type")
        return value_pe(item)


def _list_semantics(fld: Field | None) -> dict[str, Any]:
    if fld is None:
        return {"list_type": "atomic"}
    if fld.list_type == "map" and fld.list_map_keys:
        return {"list_type": "map", "keys": tuple(fld.list_map_keys)}
    if fld.list_type in ("set", "atomic"):
        return {"list_type": fld.list_type}
    strategies = set(fld.patch_strategy.split(","))
    if "merge" in strategies:
        if fld.patch_merge_key:
            return {"list_type": "map", "keys": (fld.patch_merge_key,)}
        return {"list_type": "set"}
    return {"list_type": "atomic"}


def resolve(shape: Shape, value: Any) -> Shape:
    """Deduced shapes take the form of their value: objects are maps, lists atomic, else scalars."""
    if shape.kind != "deduced":
        return shape
    if isinstance(value, dict):
        return _DEDUCED_MAP
    if isinstance(value, list):
        return _ATOMIC_LIST
    return Shape("scalar", name="raw")


def json_equal(a: Any, b: Any) -> bool:
    """JSON equality (``True`` is not ``1``; ``1`` is ``1.0``)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return (
            isinstance(b, list)
            and len(a) == len(b)
            and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
        )
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and a == b


def drop_nulls(value: Any) -> Any:
    """A copy without null map values or null list items (what decoding into a typed object drops)."""
    if isinstance(value, dict):
        return {k: drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_nulls(v) for v in value if v is not None]
    return value
