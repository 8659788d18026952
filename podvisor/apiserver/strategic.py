"""Strategic merge patch: JSON merge patch that knows which lists to merge item by item.

``kubectl patch`` (by default) and client-side ``kubectl apply`` send these. They read like a JSON
merge patch (RFC 7386: maps merge, ``null`` deletes a key) except where the schema gives a field a
patch strategy (`podvisor.schema` ``patch_strategy``/``patch_merge_key``):

- a list of objects with strategy ``merge`` merges item by item, matched by the merge key (containers
  and env by ``name``, ports by ``containerPort``, volumeMounts by ``mountPath`` ...); a list of
  scalars with strategy ``merge`` is a union; any other list is replaced whole;
- ``{"name": "x", "$patch": "delete"}`` in a merged list deletes the item with that key;
  ``{"$patch": "replace"}`` among the items replaces the whole list by the other items;
- ``"$patch": "replace"`` in an object replaces it by the rest of the object, ``"$patch": "delete"``
  empties it (``"$patch": "merge"`` is accepted and merges as usual);
- ``"$setElementOrder/<list>": [...]`` gives the order of the resulting list (by merge key);
- ``"$deleteFromPrimitiveList/<list>": [...]`` removes those values from a list of scalars;
- ``"$retainKeys": [...]`` clears every field of the object not named in it (union types such as a
  deployment's ``strategy`` or a volume's source).

Ordering follows Kubernetes exactly, because users see it: without ``$setElementOrder`` the items the
patch names come in the patch's order, interleaved with the untouched ones where both appear in the
live list, and new items come *before* the untouched ones (a container added by ``kubectl patch``
lands first, as on a real cluster). Behaviour is learned from apimachinery's strategicpatch package;
the code is our own. Errors are 400 BadRequest (422 for a list of lists, as Kubernetes answers).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from podvisor.apiserver.errors import BadRequestError, InvalidError
from podvisor.schema.model import SCALARS, Field, ListOf, MapOf, Struct, TypeRef

__all__ = ["strategic_merge_patch"]

Lookup = Callable[[str], Struct]

_DIRECTIVE = "$patch"
_RETAIN_KEYS = "$retainKeys"
_SET_ORDER = "$setElementOrder/"
_DELETE_PRIMITIVE = "$deleteFromPrimitiveList/"

_BAD_RETAIN_KEYS = "invalid patch format of retainKeys"
_BAD_SET_ORDER = "invalid patch format of setElementOrder list"
_BAD_PRIMITIVE_LIST = "invalid patch format of primitive list"


class _Meta:
    """What the schema says about one value: its type, and for lists the field's strategy and key."""

    __slots__ = ("ref", "strategy", "merge_key", "_lookup")

    def __init__(self, ref: TypeRef | None, lookup: Lookup, fld: Field | None = None) -> None:
        self.ref = ref
        self._lookup = lookup
        strategies = set(fld.patch_strategy.split(",")) if fld is not None and fld.patch_strategy else set()
        strategies.discard("retainKeys")
        self.strategy = strategies.pop() if len(strategies) == 1 else ""
        self.merge_key = fld.patch_merge_key if fld is not None else ""

    def child(self, key: str) -> _Meta:
        """The meta of ``key`` inside this object (no strategy for map keys or unknown fields)."""
        ref = self.ref
        if isinstance(ref, MapOf):
            return _Meta(ref.value, self._lookup)
        if isinstance(ref, str) and ref not in SCALARS:
            try:
                st = self._lookup(ref)
            except KeyError:
                return _Meta(None, self._lookup)
            fld = st.fields.get(key)
            if fld is not None:
                return _Meta(fld.type, self._lookup, fld)
        return _Meta(None, self._lookup)

    def item(self) -> _Meta:
        return _Meta(self.ref.item if isinstance(self.ref, ListOf) else None, self._lookup)

    def describe(self) -> str:
        return str(self.ref) if self.ref is not None else "object"


def strategic_merge_patch(
    obj: dict[str, Any], patch: Any, struct_name: str, *, lookup: Lookup | None = None
) -> dict[str, Any]:
    """Apply a strategic merge patch to ``obj`` (neither argument is modified). ``struct_name`` is the
    object's definition name (``io.k8s.api.apps.v1.Deployment``); ``lookup`` resolves struct names
    (default: the schema registry)."""
    if lookup is None:
        from podvisor import schema as registry

        lookup = registry.struct
    if not isinstance(patch, dict):
        raise BadRequestError(
            f"json: cannot unmarshal {json_kind(patch)} into Go value of type map[string]interface {{}}"
        )
    try:
        lookup(struct_name)
    except KeyError:
        raise BadRequestError("strategic merge patch format is not supported") from None
    result = _merge_map(
        copy.deepcopy(obj) if isinstance(obj, dict) else {}, copy.deepcopy(patch), _Meta(struct_name, lookup)
    )
    return result


def json_kind(v: Any) -> str:
    """The JSON type name Go's decoder errors use for a value."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int | float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


def _category(v: Any) -> str:
    if isinstance(v, dict):
        return "map"
    if isinstance(v, list):
        return "list"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int | float):
        return "number"
    if isinstance(v, str):
        return "string"
    return "null"


def _same(a: Any, b: Any) -> bool:
    """Scalar equality as Go compares decoded JSON values (``true`` is not ``1``)."""
    return _category(a) == _category(b) and a == b


def _index(items: list[Any], value: Any, merge_key: str) -> int:
    for i, item in enumerate(items):
        if merge_key:
            if isinstance(item, dict) and isinstance(value, dict) and merge_key in item:
                if _same(item[merge_key], value.get(merge_key)):
                    return i
        elif _same(item, value):
            return i
    return -1


def _strip(value: Any) -> tuple[Any, bool]:
    """``value`` without directives and nulls, for content that has nothing to merge with; False if
    the value itself is a ``$patch`` directive and should be dropped."""
    if isinstance(value, dict):
        if _DIRECTIVE in value:
            return None, False
        out: dict[str, Any] = {}
        for k, v in value.items():
            if v is None or k == _RETAIN_KEYS or k.startswith(_SET_ORDER) or k.startswith(_DELETE_PRIMITIVE):
                continue
            nv, keep = _strip(v)
            if keep:
                out[k] = nv
        return out, True
    if isinstance(value, list):
        items = []
        for v in value:
            nv, keep = _strip(v)
            if keep:
                items.append(nv)
        return items, True
    return value, True


def _merge_map(original: dict[str, Any], patch: dict[str, Any], meta: _Meta) -> dict[str, Any]:
    if _DIRECTIVE in patch:
        directive = patch.pop(_DIRECTIVE)
        if directive == "replace":
            return _strip(patch)[0]
        if directive == "delete":
            return {}
        if directive != "merge":
            raise BadRequestError(f"unknown patch type: {directive} in map: {patch}")
    _apply_retain_keys(original, patch)
    _apply_set_element_order(original, patch, meta)
    for key, value in list(patch.items()):
        is_delete_list = key.startswith(_DELETE_PRIMITIVE[:-1])
        if is_delete_list:
            if not key.startswith(_DELETE_PRIMITIVE):
                raise BadRequestError(_BAD_PRIMITIVE_LIST)
            key = key[len(_DELETE_PRIMITIVE) :]
        if value is None:
            original.pop(key, None)
            continue
        if key not in original or _category(original[key]) != _category(value):
            if not is_delete_list:
                stripped, keep = _strip(value)
                if keep:
                    original[key] = stripped
                else:
                    original.pop(key, None)
            continue
        current = original[key]
        sub = meta.child(key)
        if isinstance(value, dict):
            original[key] = _strip(value)[0] if sub.strategy == "replace" else _merge_map(current, value, sub)
        elif isinstance(value, list):
            if sub.strategy == "merge" or is_delete_list:
                original[key] = _merge_list(current, value, sub, is_delete_list)
            else:
                original[key] = _strip(value)[0]
        else:
            original[key] = value
    return original


def _apply_retain_keys(original: dict[str, Any], patch: dict[str, Any]) -> None:
    if _RETAIN_KEYS not in patch:
        return
    retain = patch.pop(_RETAIN_KEYS)
    if not isinstance(retain, list):
        raise BadRequestError(_BAD_RETAIN_KEYS)
    for k, v in patch.items():
        if v is None or k.startswith(_DELETE_PRIMITIVE) or k.startswith(_SET_ORDER):
            continue
        if k not in retain:
            raise BadRequestError(_BAD_RETAIN_KEYS)
    for k in list(original):
        if k not in retain:
            del original[k]


def _apply_set_element_order(original: dict[str, Any], patch: dict[str, Any], meta: _Meta) -> None:
    """Merge each list that has a ``$setElementOrder`` and put its items in that order (the order list
    first, then the order of the patch, then of the live list)."""
    for key in [k for k in patch if k.startswith(_SET_ORDER[:-1])]:
        order = patch.pop(key)
        if not key.startswith(_SET_ORDER) or not isinstance(order, list):
            raise BadRequestError(_BAD_SET_ORDER)
        name = key[len(_SET_ORDER) :]
        current = original.get(name)
        if name in original and not isinstance(current, list):
            raise BadRequestError(
                f"expected a list for {name!r}, but the object holds a {json_kind(current)}"
            )
        found_patch = name in patch
        patch_list = patch.get(name)
        if found_patch and not isinstance(patch_list, list):
            raise BadRequestError(_BAD_SET_ORDER)
        sub = meta.child(name)
        _validate_order(patch_list or [], order, sub.merge_key)
        if isinstance(current, list) and not found_patch:
            merged = current
        elif not isinstance(current, list) and found_patch:
            merged = _strip(patch_list)[0]
        elif isinstance(current, list) and isinstance(patch_list, list):
            if sub.strategy == "merge":
                merged, current = _merge_list_and_view(current, patch_list, sub, False)
            else:
                merged = _strip(patch_list)[0]
        else:
            continue
        in_order = [x for x in merged if _index(order, x, sub.merge_key) >= 0]
        server_only = [x for x in merged if _index(order, x, sub.merge_key) < 0]
        original[name] = _normalize(in_order, server_only, order, current or [], sub.merge_key)
        patch.pop(name, None)


def _validate_order(patch_list: list[Any], order: list[Any], merge_key: str) -> None:
    """The items of the patch list must appear in ``order`` and in the same relative order."""
    if not order or not patch_list:
        return
    items = [
        x for x in patch_list if not (merge_key and isinstance(x, dict) and x.get(_DIRECTIVE) == "delete")
    ]
    pi = oi = 0
    while pi < len(items) and oi < len(order):
        item = items[pi]
        if isinstance(item, dict) and _DIRECTIVE in item:
            pi += 1
            continue
        if merge_key:
            for m in (item, order[oi]):
                if not isinstance(m, dict) or merge_key not in m:
                    raise BadRequestError(f"map: {m} does not contain declared merge key: {merge_key}")
            if _same(item[merge_key], order[oi][merge_key]):
                pi += 1
        elif _same(item, order[oi]):
            pi += 1
        oi += 1
    if pi < len(items):
        raise BadRequestError(
            f"The order in patch list:\n{patch_list}\n doesn't match $setElementOrder list:\n{order}\n"
        )


def _element_kind(*lists: list[Any]) -> str:
    kind = ""
    for lst in lists:
        for v in lst:
            c = _category(v)
            if c == "list":
                raise InvalidError("lists of lists are not supported")
            if not kind:
                kind = c
            elif c != kind:
                raise BadRequestError(f"list element types are not identical: {list(lists)}")
    return kind


def _merge_list(original: list[Any], patch: list[Any], meta: _Meta, is_delete_list: bool) -> list[Any]:
    return _merge_list_and_view(original, patch, meta, is_delete_list)[0]


def _merge_list_and_view(
    original: list[Any], patch: list[Any], meta: _Meta, is_delete_list: bool
) -> tuple[list[Any], list[Any]]:
    """The merged list, and the live list as Kubernetes reads it afterwards for ``$setElementOrder``.

    Kubernetes merges in place: deleting an item shifts the later ones down within the live list's
    storage (its last slot keeps a stale copy) and the first new items fill the freed slots, so the
    "live order" it then sorts by is that rewritten storage, not the list as it was. The ordering users
    see depends on it, so we track the same view."""
    if not original and not patch:
        return original, original
    kind = _element_kind(original, patch)
    merge_key = meta.merge_key
    view = list(original)
    if kind != "map":
        if is_delete_list:
            return [x for x in original if _index(patch, x, "") < 0], view
        merged: list[Any] = []
        for x in original + patch:
            if _index(merged, x, "") < 0:
                merged.append(x)
        order = patch
        server_order = original
    else:
        if not merge_key:
            raise BadRequestError(f"cannot merge lists without merge key for {meta.describe()}")
        remaining, order, replaced = _special_items(original, patch, merge_key, view)
        if replaced:
            return remaining, view
        server_order = remaining
        merged = list(remaining)
        live = len(remaining)  # how much of `view` the merge still writes through
        for item in order:
            if merge_key not in item:
                raise BadRequestError(f"map: {item} does not contain declared merge key: {merge_key}")
            i = _index(merged, item, merge_key)
            if i >= 0:
                merged[i] = _merge_map(merged[i], item, meta.item())
                if i < len(view) and live >= 0:
                    view[i] = merged[i]
                continue
            stripped, keep = _strip(item)
            if not keep:
                continue
            merged.append(stripped)
            if 0 <= live < len(view):
                view[live] = stripped
                live += 1
            else:
                live = -1  # the list outgrew its storage: later writes no longer show in the view
    key = merge_key if kind == "map" else ""
    in_patch = [x for x in merged if _index(order, x, key) >= 0]
    server_only = [x for x in merged if _index(order, x, key) < 0]
    return _normalize(in_patch, server_only, order, server_order, key), view


def _special_items(
    original: list[Any], patch: list[Any], merge_key: str, view: list[Any]
) -> tuple[list[Any], list[Any], bool]:
    """Handle ``$patch`` items of a merged list: deletions by key (shifting ``view`` as Kubernetes
    shifts the live list) and whole-list replacement. Returns the live items that remain (or the
    replacement), the ordinary patch items, and whether the list was replaced."""
    rest: list[Any] = []
    replace = False
    length = len(view)
    for item in patch:
        if _DIRECTIVE not in item:
            rest.append(item)
            continue
        directive = item[_DIRECTIVE]
        if directive == "delete":
            if merge_key not in item:
                raise BadRequestError(f"map: {item} does not contain declared merge key: {merge_key}")
            while True:
                i = next(
                    (
                        n
                        for n in range(length)
                        if isinstance(view[n], dict)
                        and merge_key in view[n]
                        and _same(view[n][merge_key], item[merge_key])
                    ),
                    -1,
                )
                if i < 0:
                    break
                view[i : length - 1] = view[i + 1 : length]
                length -= 1
        elif directive == "replace":
            replace = True
        elif directive != "merge":
            raise BadRequestError(f"unknown patch type: {directive} in map: {item}")
    if replace:
        return [_strip(x)[0] for x in rest], [], True
    return view[:length], rest, False


def _normalize(
    in_patch: list[Any],
    server_only: list[Any],
    patch_order: list[Any],
    server_order: list[Any],
    merge_key: str,
) -> list[Any]:
    """Sort the patch's items by the patch order and the live-only items by the live order, then
    interleave: a live-only item goes first only while it precedes the next patch item in the live
    list; items new to the list therefore come before the remaining live-only items."""

    def by(order: list[Any]) -> Callable[[Any], int]:
        def key(x: Any) -> int:
            i = _index(order, x, merge_key)
            return i if i >= 0 else len(order)

        return key

    left = sorted(server_only, key=by(server_order))
    right = sorted(in_patch, key=by(patch_order))
    out: list[Any] = []
    i = j = 0
    while i < len(left) or j < len(right):
        if i >= len(left):
            out.append(right[j])
            j += 1
        elif j >= len(right):
            out.append(left[i])
            i += 1
        else:
            li = _index(server_order, left[i], merge_key)
            ri = _index(server_order, right[j], merge_key)
            if li >= 0 and ri >= 0 and li < ri:
                out.append(left[i])
                i += 1
            else:
                out.append(right[j])
                j += 1
    return out
