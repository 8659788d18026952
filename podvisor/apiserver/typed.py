"""Schema-driven walks over JSON objects: the operations server-side apply is built from.

They mirror structured-merge-diff's semantics in our own code, over the shapes of
`podvisor.apiserver.shapes`:

- `validate`      reject an applied configuration that does not fit the schema;
- `to_field_set`  the set of paths a configuration sets (what its applier comes to own);
- `merge`         lay an applied configuration over the live object (keyed lists merged item by item,
                  in the order structured-merge-diff produces);
- `compare`       which paths were added, modified or removed between two objects;
- `remove_paths`  drop owned paths (and what lies under them) from an object;
- `named_closure` add to a set the struct fields above its paths (a struct field that holds an owned
                  value counts as owned when pruning).

One deliberate approximation: when an Update adds a struct-typed field, or a required field, we do not
mark the field itself as owned (no ``.`` in ``fieldsV1``). Kubernetes decides that from whether the Go
field is a pointer, which the schema does not say; required and struct fields are usually not pointers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from podvisor.apiserver.fieldsets import FieldSet, Path, PathTrie, field_pe, pe_string
from podvisor.apiserver.shapes import (
    MISSING,
    Lookup,
    Shape,
    TypedSchema,
    WalkError,
    drop_nulls,
    json_equal,
)
from podvisor.apiserver.shapes import resolve as _resolve

__all__ = [
    "MISSING",
    "Lookup",
    "Shape",
    "TypedSchema",
    "WalkError",
    "Comparison",
    "json_equal",
    "validate",
    "to_field_set",
    "merge",
    "compare",
    "remove_paths",
    "named_closure",
    "drop_nulls",
]


# -- validate ---------------------------------------------------------------------------------------

_SCALAR_CHECKS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "string": ("string", lambda v: isinstance(v, str)),
    "boolean": ("boolean", lambda v: isinstance(v, bool)),
    "int32": ("numeric (int or float)", lambda v: isinstance(v, int | float) and not isinstance(v, bool)),
    "int64": ("numeric (int or float)", lambda v: isinstance(v, int | float) and not isinstance(v, bool)),
    "double": ("numeric (int or float)", lambda v: isinstance(v, int | float) and not isinstance(v, bool)),
}


def _type_name(v: Any) -> str:
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int | float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "list"
    if isinstance(v, dict):
        return "map"
    return "null"


def validate(value: Any, shape: Shape, schema: TypedSchema, *, where: str = "") -> list[str]:
    """Problems that stop ``value`` from being read as ``shape``: wrong types, fields the schema does
    not declare, duplicate or unkeyable list items. Each message starts with the field's path."""
    errors: list[str] = []

    def walk(v: Any, sh: Shape, at: str) -> None:
        if v is None:
            return
        sh = _resolve(sh, v)
        label = at or "."
        if sh.kind == "scalar":
            if isinstance(v, dict | list):
                errors.append(f"{label}: expected scalar, got {_type_name(v)}")
                return
            check = _SCALAR_CHECKS.get(sh.name)
            if check is not None and not check[1](v):
                errors.append(f"{label}: expected {check[0]}, got {_type_name(v)}")
            return
        if sh.kind in ("struct", "map"):
            if not isinstance(v, dict):
                errors.append(f"{label}: expected map, got {_type_name(v)}")
                return
            for k, cv in v.items():
                child, _fld = schema.child(sh, k)
                if sh.kind == "struct" and not schema.is_named(sh, k):
                    errors.append(f"{at}.{k}: field not declared in schema")
                    continue
                walk(cv, child, f"{at}.{k}")
            return
        if not isinstance(v, list):
            errors.append(f"{label}: expected list, got {_type_name(v)}")
            return
        item_shape = schema.item(sh)
        seen: set[str] = set()
        for i, item in enumerate(v):
            if sh.list_type == "atomic":
                walk(item, item_shape, f"{at}[{i}]")
                continue
            try:
                pe = schema.item_pe(sh, item)
            except WalkError as e:
                errors.append(f"{label}: element {i}: {e}")
                continue
            if pe in seen:
                errors.append(f"{label}: duplicate entries for key {pe_string(pe)}")
                continue
            seen.add(pe)
            walk(item, item_shape, at + pe_string(pe))

    walk(value, shape, where)
    return errors


# -- to_field_set -----------------------------------------------------------------------------------


def to_field_set(value: Any, shape: Shape, schema: TypedSchema) -> FieldSet:
    """Every path ``value`` sets: leaves, atomic values, list items, and empty or undeclared fields."""
    out: FieldSet = set()

    def walk(v: Any, sh: Shape, path: Path) -> None:
        sh = _resolve(sh, v)
        if sh.leaf:
            if path:
                out.add(path)
            return
        if sh.kind in ("struct", "map"):
            if not isinstance(v, dict):
                if path and v is not None:
                    out.add(path)
                return
            for k, cv in v.items():
                child, _fld = schema.child(sh, k)
                cpath = path + (field_pe(k),)
                walk(cv, child, cpath)
                if cv is None or (isinstance(cv, dict) and not cv) or not schema.is_named(sh, k):
                    out.add(cpath)
            return
        if not isinstance(v, list):
            if path and v is not None:
                out.add(path)
            return
        item_shape = schema.item(sh)
        pes: list[str | None] = []
        counts: dict[str, int] = {}
        for item in v:
            try:
                pe: str | None = schema.item_pe(sh, item)
            except WalkError:
                pe = None
            pes.append(pe)
            if pe is not None:
                counts[pe] = counts.get(pe, 0) + 1
        for item, pe in zip(v, pes, strict=True):
            if pe is None:
                continue
            ipath = path + (pe,)
            if counts[pe] > 1:
                out.add(ipath)
                continue
            walk(item, item_shape, ipath)
            out.add(ipath)

    walk(value, shape, ())
    return out


# -- merge ------------------------------------------------------------------------------------------


def _fits(v: Any, container: type) -> bool:
    return v is MISSING or v is None or isinstance(v, container)


def _empty(v: Any) -> bool:
    return v is None or v is MISSING or (isinstance(v, dict | list) and not v)


def merge(lhs: Any, rhs: Any, shape: Shape, schema: TypedSchema) -> Any:
    """``rhs`` (an applied configuration) laid over ``lhs`` (the live object). Leaves and atomic values
    come from ``rhs``; structs and maps are merged key by key; keyed lists item by item."""
    if rhs is MISSING:
        return lhs
    if lhs is MISSING:
        return _copy(rhs)
    sh = _resolve(shape, rhs if rhs is not None else lhs)
    if rhs is None or sh.leaf or (_empty(lhs) and _empty(rhs)):
        return _copy(rhs)
    if sh.kind in ("struct", "map"):
        if not isinstance(lhs, dict) or not isinstance(rhs, dict):
            return _copy(rhs)
        out: dict[str, Any] = {}
        for k, lv in lhs.items():
            child, _fld = schema.child(sh, k)
            out[k] = merge(lv, rhs.get(k, MISSING), child, schema)
        for k, rv in rhs.items():
            if k not in lhs:
                out[k] = _copy(rv)
        return out
    if not isinstance(lhs, list) or not isinstance(rhs, list):
        return _copy(rhs)
    return _merge_list(lhs, rhs, sh, schema)


def _copy(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _copy(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_copy(x) for x in v]
    return v


def _merge_list(lhs: list[Any], rhs: list[Any], sh: Shape, schema: TypedSchema) -> list[Any]:
    """Merge keyed items. Items only in ``lhs`` stay where they were; items of ``rhs`` come in
    ``rhs``'s order, each merged with its ``lhs`` counterpart (structured-merge-diff's interleaving)."""
    item_shape = schema.item(sh)
    try:
        r_pes = [schema.item_pe(sh, x) for x in rhs]
        l_pes = [schema.item_pe(sh, x) for x in lhs]
    except WalkError:
        return _copy(rhs)
    r_items: dict[str, Any] = {}
    for pe, item in zip(r_pes, rhs, strict=True):
        r_items.setdefault(pe, item)
    l_items: dict[str, Any] = {}
    for pe, item in zip(l_pes, lhs, strict=True):
        # a key seen twice on the live side is not merged: the applied item replaces them all
        l_items[pe] = MISSING if pe in l_items else item
    shared = [pe for pe in r_pes if pe in l_items]
    next_shared = shared.pop(0) if shared else None
    merged_rhs: set[str] = set()
    out: list[Any] = []
    li = ri = 0
    while li < len(l_pes) or ri < len(r_pes):
        if li < len(l_pes) and ri < len(r_pes):
            pe = l_pes[li]
            if pe == r_pes[ri]:
                merged_rhs.add(pe)
                out.append(merge(l_items[pe], r_items[pe], item_shape, schema))
                li += 1
                ri += 1
                next_shared = shared.pop(0) if shared else None
                continue
            if pe in r_items and next_shared is not None and next_shared != pe:
                li += 1
                continue
        if li < len(l_pes):
            pe = l_pes[li]
            if pe not in r_items:
                out.append(merge(lhs[li], MISSING, item_shape, schema))
                li += 1
                continue
            if pe in merged_rhs:
                li += 1
        if ri < len(r_pes):
            pe = r_pes[ri]
            merged_rhs.add(pe)
            out.append(merge(l_items.get(pe, MISSING), r_items[pe], item_shape, schema))
            ri += 1
            if next_shared is not None and next_shared == pe:
                next_shared = shared.pop(0) if shared else None
    return out


# -- compare ----------------------------------------------------------------------------------------


@dataclass(slots=True)
class Comparison:
    added: FieldSet = field(default_factory=set)
    modified: FieldSet = field(default_factory=set)
    removed: FieldSet = field(default_factory=set)

    def changed(self) -> FieldSet:
        return self.added | self.modified

    def empty(self) -> bool:
        return not (self.added or self.modified or self.removed)


def compare(lhs: Any, rhs: Any, shape: Shape, schema: TypedSchema) -> Comparison:
    """Paths added, modified and removed going from ``lhs`` to ``rhs`` (``MISSING`` = no object).
    Besides leaves, a map, list, or list item that appears or disappears is itself added/removed."""
    cmp = Comparison()

    def leaf(lv: Any, rv: Any, path: Path) -> None:
        if lv is MISSING:
            cmp.added.add(path)
        elif rv is MISSING:
            cmp.removed.add(path)
        elif not json_equal(lv, rv):
            cmp.modified.add(path)

    def walk(lv: Any, rv: Any, sh: Shape, path: Path, mark_added: bool) -> None:
        sh = _resolve(sh, rv if rv is not MISSING and rv is not None else lv)
        want = dict if sh.kind in ("struct", "map") else list
        if sh.leaf or (_empty(lv) and _empty(rv)) or not (_fits(lv, want) and _fits(rv, want)):
            if path:
                leaf(lv, rv, path)
            return
        if sh.kind in ("struct", "map"):
            ld: dict[str, Any] = lv if isinstance(lv, dict) else {}
            rd: dict[str, Any] = rv if isinstance(rv, dict) else {}
            for k in list(ld) + [k for k in rd if k not in ld]:
                child, fld = schema.child(sh, k)
                mark = child.kind != "struct" and not (fld is not None and fld.required)
                walk(ld.get(k, MISSING), rd.get(k, MISSING), child, path + (field_pe(k),), mark)
        else:
            _compare_items(lv if isinstance(lv, list) else [], rv if isinstance(rv, list) else [], sh, path)
        if path:
            if lv is MISSING and mark_added:
                cmp.added.add(path)
            elif rv is MISSING:
                cmp.removed.add(path)

    def _compare_items(ll: list[Any], rl: list[Any], sh: Shape, path: Path) -> None:
        try:
            l_pes = [schema.item_pe(sh, x) for x in ll]
            r_pes = [schema.item_pe(sh, x) for x in rl]
        except WalkError:
            leaf(ll, rl, path)
            return
        order: list[str] = []
        lmap: dict[str, list[Any]] = {}
        rmap: dict[str, list[Any]] = {}
        for pe, item in zip(l_pes, ll, strict=True):
            if pe not in lmap:
                order.append(pe)
            lmap.setdefault(pe, []).append(item)
        for pe, item in zip(r_pes, rl, strict=True):
            if pe not in lmap and pe not in rmap:
                order.append(pe)
            rmap.setdefault(pe, []).append(item)
        item_shape = schema.item(sh)
        for pe in order:
            ls, rs = lmap.get(pe, []), rmap.get(pe, [])
            ipath = path + (pe,)
            if len(ls) <= 1 and len(rs) <= 1:
                walk(ls[0] if ls else MISSING, rs[0] if rs else MISSING, item_shape, ipath, True)
            elif len(ls) >= 2 and len(rs) >= 2:
                if not json_equal(ls, rs):
                    cmp.modified.add(ipath)
            elif len(ls) >= 2:
                if rs:
                    walk(MISSING, rs[0], item_shape, ipath, True)
                cmp.removed.add(ipath)
            else:
                if ls:
                    walk(ls[0], MISSING, item_shape, ipath, True)
                cmp.added.add(ipath)

    walk(lhs, rhs, shape, (), False)
    return cmp


# -- remove_paths -----------------------------------------------------------------------------------


def remove_paths(value: Any, paths: FieldSet | PathTrie, shape: Shape, schema: TypedSchema) -> Any:
    """``value`` without the given paths. Removing a path removes everything under it; a map or list
    emptied by the removal disappears too. Returns ``MISSING`` if nothing is left."""
    trie = paths if isinstance(paths, PathTrie) else PathTrie.of(paths)
    if trie.empty():
        return value

    def walk(v: Any, node: PathTrie, sh: Shape) -> Any:
        sh = _resolve(sh, v)
        if sh.kind == "scalar":
            return v
        if sh.leaf:
            return MISSING
        if sh.kind in ("struct", "map"):
            if not isinstance(v, dict) or not v:
                return MISSING
            out: dict[str, Any] = {}
            for k, cv in v.items():
                pe = field_pe(k)
                if pe in node.members:
                    continue
                sub = node.children.get(pe)
                if sub is not None:
                    child, _fld = schema.child(sh, k)
                    cv = walk(cv, sub, child)
                    if cv is MISSING:
                        continue
                out[k] = cv
            return out if out else MISSING
        if not isinstance(v, list) or not v:
            return MISSING
        item_shape = schema.item(sh)
        items: list[Any] = []
        for item in v:
            try:
                ipe = schema.item_pe(sh, item)
            except WalkError:
                items.append(item)
                continue
            if ipe in node.members:
                continue
            sub = node.children.get(ipe)
            if sub is not None:
                item = walk(item, sub, item_shape)
                if item is MISSING:
                    continue
            items.append(item)
        return items if items else MISSING

    out = walk(value, trie, shape)
    return out if out is not MISSING else (value if not isinstance(value, dict) else {})


# -- named_closure ----------------------------------------------------------------------------------


def named_closure(paths: FieldSet, shape: Shape, schema: TypedSchema) -> FieldSet:
    """``paths`` plus every struct field that has one of them beneath it."""
    out = set(paths)
    seen: dict[Path, Shape] = {(): shape}
    for path in paths:
        for n in range(1, len(path)):
            prefix = path[:n]
            if prefix in seen:
                continue
            parent = seen[path[: n - 1]]
            pe = path[n - 1]
            if pe.startswith("f:"):
                name = pe[2:]
                child, _fld = schema.child(parent, name)
                if schema.is_named(parent, name):
                    out.add(prefix)
            else:
                child = schema.item(parent)
            seen[prefix] = child
    return out
