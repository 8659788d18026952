"""Server-side apply (``PATCH`` with ``application/apply-patch+yaml``).

An applier sends the whole configuration it wants to be true — only the fields it cares about — and
the server merges it into the live object, tracking per field who set it (`managedfields`):

1. The configuration must fit the schema (fields declared, keyed lists without duplicates) and name
   the endpoint's apiVersion/kind; ``metadata.managedFields`` may not be sent.
2. An object nobody tracked yet gets a ``before-first-apply`` Update entry owning all it holds, so
   its existing fields are not treated as unowned.
3. The configuration is merged over the live object (a missing object starts empty: apply creates).
4. The applier comes to own exactly the paths of its configuration. Fields it owned last time and no
   longer applies are removed from the object, unless another manager owns them too.
5. If the result changes (or adds) a field another manager owns, that is a conflict: 409 with one
   ``FieldManagerConflict`` cause per field, unless ``force`` is set, which takes the fields over.
   As in Kubernetes, ``kubectl`` moving from client-side to server-side apply may take over fields
   its ``last-applied-configuration`` annotation set and that nobody has changed since.
6. Fields removed by the result leave every manager's entry.

The semantics and messages are Kubernetes'; the code is ours, on the walks of `podvisor.apiserver.typed`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from podvisor.apiserver.errors import BadRequestError, Cause, ConflictError, InvalidError
from podvisor.apiserver.fieldsets import FieldSet, Path, exclude_prefixes, path_string, sorted_paths
from podvisor.apiserver.managedfields import (
    APPLY,
    UPDATE,
    Managed,
    ManagerKey,
    Owned,
    cap_update_managers,
    decode_managed_fields,
    encode_managed_fields,
    parse_field_paths,
    record_update,
    schema_for,
    strip_meta,
    without_managed_fields,
)
from podvisor.apiserver.typed import (
    Lookup,
    Shape,
    TypedSchema,
    compare,
    drop_nulls,
    json_equal,
    merge,
    named_closure,
    remove_paths,
    to_field_set,
    validate,
)

__all__ = ["server_side_apply", "LAST_APPLIED_ANNOTATION"]

LAST_APPLIED_ANNOTATION = "kubectl.kubernetes.io/last-applied-configuration"
_BEFORE_FIRST_APPLY = "before-first-apply"
_MAX_MANAGER_LENGTH = 128
_MAX_ANNOTATIONS_BYTES = 256 * 1024


class _Conflicts(Exception):
    def __init__(self, conflicts: dict[ManagerKey, FieldSet]) -> None:
        super().__init__("conflicts")
        self.conflicts = conflicts


def _gvk_string(api_version: str, kind: str) -> str:
    group, _, version = api_version.rpartition("/")
    return f"{group}/{version}, Kind={kind}"


def _check_request(
    applied: Any, live: dict[str, Any] | None, manager: str, api_version: str, kind: str
) -> None:
    if not manager:
        raise InvalidError(
            'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for apply patch',
            group="meta.k8s.io",
            kind="PatchOptions",
            causes=[
                Cause("FieldValueRequired", "Required value: is required for apply patch", "fieldManager")
            ],
        )
    if len(manager.encode()) > _MAX_MANAGER_LENGTH:
        detail = f"Too long: may not be more than {_MAX_MANAGER_LENGTH} bytes"
        raise InvalidError(
            f'PatchOptions.meta.k8s.io "" is invalid: fieldManager: {detail}',
            group="meta.k8s.io",
            kind="PatchOptions",
            causes=[Cause("FieldValueTooLong", detail, "fieldManager")],
        )
    if not isinstance(applied, dict):
        raise BadRequestError(
            f"error decoding patch: an apply configuration must be an object, not {type(applied).__name__}"
        )
    want_kind = kind or (live.get("kind", "") if isinstance(live, dict) else "")
    got_version, got_kind = applied.get("apiVersion", ""), applied.get("kind", "")
    if not isinstance(got_version, str) or not isinstance(got_kind, str):
        raise BadRequestError("invalid object type: apiVersion and kind must be strings")
    if not got_kind or (want_kind and got_kind != want_kind) or got_version != api_version:
        raise BadRequestError(f"invalid object type: {_gvk_string(got_version, got_kind)}")
    md = applied.get("metadata")
    if isinstance(md, dict) and md.get("managedFields") is not None:
        raise BadRequestError("metadata.managedFields must be nil")


def _object_label(obj: dict[str, Any], api_version: str) -> str:
    md = obj.get("metadata")
    ns, name = (md.get("namespace", ""), md.get("name", "")) if isinstance(md, dict) else ("", "")
    return f"{ns}/{name}; {_gvk_string(api_version, str(obj.get('kind', '')))}"


def _copy_managed(managed: Managed) -> Managed:
    return {k: Owned(set(v.fields), v.api_version, v.time) for k, v in managed.items()}


def _prune(
    merged: Any, managed: Managed, me: ManagerKey, last: FieldSet | None, root: Shape, schema: TypedSchema
) -> Any:
    """Remove what ``me`` owned last time, no longer applies, and nobody else owns."""
    if not last:
        return merged

    def closure(s: FieldSet) -> FieldSet:
        return named_closure(s, root, schema)

    last_c = closure(last)
    owned_by_anyone = closure(set().union(*(o.fields for o in managed.values())))
    merged_set = closure(to_field_set(merged, root, schema))
    first_cut = remove_paths(merged, last_c, root, schema)
    kept = closure(to_field_set(first_cut, root, schema))
    # put back whatever someone owns (including what `me` applies now)
    second_cut = remove_paths(merged, merged_set - (kept | owned_by_anyone), root, schema)
    # and only ever remove what `me` owned before
    gone = merged_set - closure(to_field_set(second_cut, root, schema))
    return remove_paths(merged, gone & last_c, root, schema)


def _apply_once(
    live: dict[str, Any],
    config: dict[str, Any],
    managed: Managed,
    me: ManagerKey,
    *,
    force: bool,
    api_version: str,
    root: Shape,
    schema: TypedSchema,
    ignored: set[Path],
) -> tuple[dict[str, Any], Managed]:
    managed = _copy_managed(managed)
    merged = merge(live, config, root, schema)
    last = managed.get(me)
    managed[me] = Owned(
        exclude_prefixes(to_field_set(config, root, schema), ignored),
        api_version,
        last.time if last is not None else None,
    )
    result = drop_nulls(_prune(merged, managed, me, last.fields if last else None, root, schema))
    cmp = compare(live, result, root, schema)
    changed = exclude_prefixes(cmp.changed(), ignored)
    removed = exclude_prefixes(cmp.removed, ignored)
    conflicts: dict[ManagerKey, FieldSet] = {}
    for key, owned in managed.items():
        if key != me and (hit := owned.fields & changed):
            conflicts[key] = hit
    if conflicts and not force:
        raise _Conflicts(conflicts)
    for key, owned in list(managed.items()):
        if key != me:
            owned.fields = owned.fields - conflicts.get(key, set()) - removed
        if not owned.fields:
            del managed[key]
    return result, managed


def _conflict_error(conflicts: dict[ManagerKey, FieldSet]) -> ConflictError:
    ordered = sorted(conflicts.items(), key=lambda kv: kv[0].identity())
    causes: list[Cause] = []
    lines: list[str] = []
    for key, paths in ordered:
        who = key.describe()
        lines.append(f"conflicts with {who}:")
        for p in sorted_paths(paths):
            causes.append(Cause("FieldManagerConflict", f"conflict with {who}", path_string(p)))
            lines.append(f"- {path_string(p)}")
    if len(causes) == 1:
        message = f"Apply failed with 1 conflict: {causes[0].message}: {causes[0].field}"
    else:
        message = f"Apply failed with {len(causes)} conflicts: " + "\n".join(lines)
    return ConflictError(message, causes=causes)


def _last_applied_allowance(
    live: dict[str, Any], api_version: str, root: Shape, schema: TypedSchema
) -> FieldSet | None:
    """Fields kubectl's client-side apply recorded and nobody has changed since: ``kubectl`` may take
    them over when it switches to server-side apply."""
    md = live.get("metadata")
    annotations = md.get("annotations") if isinstance(md, dict) else None
    text = annotations.get(LAST_APPLIED_ANNOTATION) if isinstance(annotations, dict) else None
    if not isinstance(text, str) or not text:
        return None
    try:
        last_applied = json.loads(text)
    except ValueError:
        return None
    if not isinstance(last_applied, dict) or last_applied.get("apiVersion") != api_version:
        return None
    if validate(last_applied, root, schema):
        return None
    last_applied = drop_nulls(last_applied)
    cmp = compare(last_applied, live, root, schema)
    return to_field_set(last_applied, root, schema) - cmp.added - cmp.modified - cmp.removed


def _go_json_sorted(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _refresh_last_applied(result: dict[str, Any], applied: dict[str, Any]) -> None:
    """``kubectl`` applying server-side keeps an existing last-applied annotation current."""
    md = result.get("metadata")
    annotations = md.get("annotations") if isinstance(md, dict) else None
    if not isinstance(annotations, dict) or not annotations.get(LAST_APPLIED_ANNOTATION):
        return
    recorded = json.loads(json.dumps(applied))
    rmd = recorded.get("metadata")
    if isinstance(rmd, dict) and isinstance(rmd.get("annotations"), dict):
        rmd["annotations"].pop(LAST_APPLIED_ANNOTATION, None)
        if not rmd["annotations"]:
            del rmd["annotations"]
    annotations[LAST_APPLIED_ANNOTATION] = _go_json_sorted(recorded) + "\n"
    if sum(len(k) + len(v) for k, v in annotations.items() if isinstance(v, str)) > _MAX_ANNOTATIONS_BYTES:
        del annotations[LAST_APPLIED_ANNOTATION]


def server_side_apply(
    live: dict[str, Any] | None,
    applied: Any,
    *,
    manager: str,
    force: bool,
    struct_name: str | None,
    api_version: str,
    now: str,
    kind: str = "",
    subresource: str = "",
    ignore_fields: Iterable[str] = (),
    lookup: Lookup | None = None,
) -> dict[str, Any]:
    """Apply ``applied`` (the decoded apply-patch body) as ``manager`` to ``live`` (None: create).

    Returns the new object, with ``metadata.managedFields`` rewritten; the caller stamps system
    metadata, defaults, validates and stores it. Raises BadRequestError for a configuration that does
    not fit, InvalidError without a field manager, ConflictError (409, one cause per field) when it
    would change another manager's fields and ``force`` is false. ``kind`` is the endpoint's kind
    (defaults to the live object's); ``ignore_fields`` are dotted fields the endpoint resets, which
    nobody comes to own (``status`` on the main resource)."""
    _check_request(applied, live, manager, api_version, kind)
    schema, root = schema_for(applied, struct_name, lookup)
    errors = validate(applied, root, schema)
    if errors:
        detail = errors[0] if len(errors) == 1 else "errors:\n  " + "\n  ".join(errors)
        raise BadRequestError(
            f"failed to create typed patch object ({_object_label(applied, api_version)}): {detail}"
        )
    ignored = parse_field_paths(ignore_fields)
    live_obj = without_managed_fields(live) if live is not None else {}
    try:
        managed = decode_managed_fields((live or {}).get("metadata", {}).get("managedFields"))
    except (ValueError, AttributeError):
        managed = {}
    if not managed and live is not None:
        record_update(
            managed,
            schema,
            root,
            {},
            live_obj,
            ManagerKey.of(_BEFORE_FIRST_APPLY, UPDATE, api_version, subresource),
            api_version=api_version,
            now=now,
            ignored=ignored,
        )
        cap_update_managers(managed)
    me = ManagerKey.of(manager, APPLY, api_version, subresource)

    def attempt(forced: bool) -> tuple[dict[str, Any], Managed]:
        return _apply_once(
            live_obj,
            applied,
            managed,
            me,
            force=forced,
            api_version=api_version,
            root=root,
            schema=schema,
            ignored=ignored,
        )

    try:
        result, managed = attempt(force)
    except _Conflicts as c:
        allowed = (
            _last_applied_allowance(live_obj, api_version, root, schema)
            if manager == "kubectl" and live is not None
            else None
        )
        remaining = {k: v - (allowed or set()) for k, v in c.conflicts.items()}
        remaining = {k: v for k, v in remaining.items() if v}
        if remaining:
            raise _conflict_error(remaining) from None
        result, managed = attempt(True)
    mine = managed.get(me)
    if mine is not None:
        mine.fields = strip_meta(mine.fields)
        if not mine.fields:
            del managed[me]
        elif not json_equal(result, live_obj) or live is None:
            mine.time = now
    if manager == "kubectl":
        _refresh_last_applied(result, applied)
    md = result.setdefault("metadata", {})
    if managed:
        md["managedFields"] = encode_managed_fields(managed)
    return result
