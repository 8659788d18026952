"""``metadata.managedFields``: who set which field, recorded on every write.

Every create, update and patch records its field manager's ownership the way the Kubernetes API server
does, so that server-side apply can later tell whose fields an applier would change (a conflict) and
which fields an applier stopped applying (removed, if nobody else owns them), and so that
``kubectl get --show-managed-fields`` shows what users expect:

- A manager is identified by its name, its operation (``Apply`` or ``Update``) and its subresource;
  the entry records the apiVersion it last wrote through. One entry per identity, never duplicated
  (Kubernetes keys Update entries by apiVersion too; we serve one version per kind, and fold an entry
  written through another version into the new one rather than keep two for one manager).
- An ``Update`` takes the fields it added or changed from every other manager and merges them into
  its own entry (union with what it owned before); fields it removed leave every entry. A write that
  changes nothing leaves the entries (and their times) alone.
- Fields every object has (apiVersion, kind, name, namespace, uid, resourceVersion, generation,
  creationTimestamp, managedFields ...) are never owned.
- At most ten ``Update`` entries are kept; the oldest merge into ``ancient-changes``.
- A write that sends ``managedFields: []`` (or ``[{}]``) resets the tracking: the object then carries
  none until the next apply. An object without managedFields is not tracked by updates either.
- Entries are kept sorted: ``Apply`` before ``Update``, then by time, manager, apiVersion, subresource.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from podvisor.apiserver.fieldsets import (
    FieldSet,
    Path,
    decode_fields_v1,
    encode_fields_v1,
    exclude_prefixes,
    field_pe,
)
from podvisor.apiserver.typed import MISSING, Lookup, Shape, TypedSchema, compare, drop_nulls

__all__ = [
    "APPLY",
    "UPDATE",
    "ManagerKey",
    "Owned",
    "Managed",
    "decode_managed_fields",
    "encode_managed_fields",
    "is_reset",
    "strip_meta",
    "record_update",
    "cap_update_managers",
    "update_managed_fields",
    "parse_field_paths",
    "schema_for",
    "without_managed_fields",
]

APPLY = "Apply"
UPDATE = "Update"
MAX_UPDATE_MANAGERS = 10
_ANCIENT = "ancient-changes"

# Fields of every object that no manager owns.
_STRIPPED: frozenset[Path] = frozenset(
    {
        (field_pe("apiVersion"),),
        (field_pe("kind"),),
        (field_pe("metadata"),),
        *(
            (field_pe("metadata"), field_pe(name))
            for name in (
                "name",
                "namespace",
                "creationTimestamp",
                "selfLink",
                "uid",
                "clusterName",
                "generation",
                "managedFields",
                "resourceVersion",
            )
        ),
    }
)


@dataclass(frozen=True, slots=True)
class ManagerKey:
    """A manager's identity. ``api_version`` is part of it for ``Update`` only."""

    manager: str
    operation: str
    api_version: str = ""
    subresource: str = ""

    @classmethod
    def of(cls, manager: str, operation: str, api_version: str, subresource: str = "") -> ManagerKey:
        return cls(manager or "unknown", operation, api_version if operation == UPDATE else "", subresource)

    def identity(self) -> str:
        """The identity as Kubernetes spells it (JSON of the entry's identifying fields); sorts ties."""
        d: dict[str, str] = {"manager": self.manager, "operation": self.operation}
        if self.api_version:
            d["apiVersion"] = self.api_version
        if self.subresource:
            d["subresource"] = self.subresource
        return json.dumps(d, separators=(",", ":"))

    def describe(self) -> str:
        """How conflict messages name the manager: ``"kubectl" with subresource "status" using v1``."""
        text = json.dumps(self.manager, ensure_ascii=False)
        if self.subresource:
            text += f" with subresource {json.dumps(self.subresource, ensure_ascii=False)}"
        if self.operation == UPDATE:
            text += f" using {self.api_version}"
        return text


@dataclass(slots=True)
class Owned:
    """What one manager owns, through which apiVersion, and when it last changed something."""

    fields: FieldSet
    api_version: str
    time: str | None = None


Managed = dict[ManagerKey, Owned]


def is_reset(entries: Any) -> bool:
    """``managedFields: []`` or ``[{}]`` in a request: drop all tracking."""
    return isinstance(entries, list) and (entries == [] or entries == [{}])


def decode_managed_fields(entries: Any) -> Managed:
    """Read ``metadata.managedFields``; ValueError if any entry is malformed."""
    if entries is None:
        return {}
    if not isinstance(entries, list):
        raise ValueError("managedFields must be a list")
    out: Managed = {}
    for i, e in enumerate(entries):
        if not isinstance(e, dict):
            raise ValueError(f"managedFields[{i}] must be an object")
        op = e.get("operation")
        if op not in (APPLY, UPDATE):
            raise ValueError("operation must be `Apply` or `Update`")
        api_version = e.get("apiVersion")
        if not isinstance(api_version, str) or not api_version:
            raise ValueError("apiVersion must not be empty")
        fields_type = e.get("fieldsType")
        if not fields_type:
            raise ValueError(f"missing fieldsType in managed fields entry {i}")
        if fields_type != "FieldsV1":
            raise ValueError(f"invalid fieldsType {fields_type!r} in managed fields entry {i}")
        manager = e.get("manager") or ""
        subresource = e.get("subresource") or ""
        if not isinstance(manager, str) or not isinstance(subresource, str):
            raise ValueError(f"managed fields entry {i} has a non-string manager or subresource")
        time = e.get("time")
        key = ManagerKey(manager, op, api_version if op == UPDATE else "", subresource)
        out[key] = Owned(
            decode_fields_v1(e.get("fieldsV1")), api_version, time if isinstance(time, str) else None
        )
    return out


def _seconds(time: str | None) -> int:
    """Unix seconds of an RFC 3339 time (0 if absent or unreadable), for ordering entries."""
    if not time:
        return 0
    text = time[:-1] + "+00:00" if time[-1:] in ("Z", "z") else time
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return 0
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp())


def encode_managed_fields(managed: Managed) -> list[dict[str, Any]]:
    """The ``managedFields`` list, sorted as Kubernetes sorts it."""
    entries: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    for key, owned in managed.items():
        e: dict[str, Any] = {
            "manager": key.manager,
            "operation": key.operation,
            "apiVersion": owned.api_version,
        }
        if owned.time is not None:
            e["time"] = owned.time
        e["fieldsType"] = "FieldsV1"
        e["fieldsV1"] = encode_fields_v1(owned.fields)
        if key.subresource:
            e["subresource"] = key.subresource
        order = (key.operation, _seconds(owned.time), key.manager, owned.api_version, key.subresource)
        entries.append((order, e))
    entries.sort(key=lambda t: t[0])
    return [e for _, e in entries]


def strip_meta(fields: FieldSet) -> FieldSet:
    return {p for p in fields if p not in _STRIPPED}


def parse_field_paths(dotted: Iterable[str]) -> set[Path]:
    """``["status", "metadata.labels"]`` -> paths, for fields a resource resets and nobody owns."""
    return {tuple(field_pe(part) for part in d.split(".")) for d in dotted if d}


def without_managed_fields(obj: Any) -> Any:
    """A null-free copy of ``obj`` without ``metadata.managedFields`` (what ownership is computed on)."""
    if not isinstance(obj, dict):
        return {}
    out = drop_nulls(obj)
    md = out.get("metadata")
    if isinstance(md, dict):
        md.pop("managedFields", None)
    return out


def record_update(
    managed: Managed,
    schema: TypedSchema,
    root: Shape,
    old: Any,
    new: Any,
    key: ManagerKey,
    *,
    api_version: str,
    now: str,
    ignored: set[Path],
) -> None:
    """Apply one Update's ownership changes to ``managed`` in place (see the module docstring).
    ``old``/``new`` are managedFields-free objects; ``old`` may be ``{}`` for a create."""
    cmp = compare(old if old is not None else MISSING, new, root, schema)
    changed = exclude_prefixes(cmp.changed(), ignored)
    removed = exclude_prefixes(cmp.removed, ignored)
    for k in list(managed):
        owned = managed[k]
        owned.fields = owned.fields - changed - removed
        if not owned.fields:
            del managed[k]
    mine = strip_meta(changed - removed)
    if not mine:
        return
    # one entry per manager, operation and subresource: an entry the same manager wrote through
    # another apiVersion is folded in (Kubernetes would keep both)
    for k in [
        k
        for k in managed
        if (k.manager, k.operation, k.subresource) == (key.manager, key.operation, key.subresource)
    ]:
        mine |= managed.pop(k).fields
    managed[key] = Owned(mine, api_version, now)


def cap_update_managers(managed: Managed, limit: int = MAX_UPDATE_MANAGERS) -> None:
    """Keep at most ``limit`` Update entries: fold the oldest into ``ancient-changes`` per apiVersion."""
    updaters = [k for k in managed if k.operation == UPDATE]
    if len(updaters) <= limit:
        return
    updaters.sort(key=lambda k: (_seconds(managed[k].time), k.identity()))
    first_of_version: dict[str, ManagerKey] = {}
    length = len(updaters)
    for k in updaters:
        if length <= limit:
            break
        owned = managed[k]
        version = owned.api_version
        bucket = ManagerKey(_ANCIENT, UPDATE, version)
        first = first_of_version.get(version)
        if first is None:
            first_of_version[version] = k
            continue
        if bucket not in managed:
            managed[bucket] = managed.pop(first)
        merged = managed[bucket]
        managed[bucket] = Owned(owned.fields | merged.fields, version, owned.time)
        del managed[k]
        length -= 1


def schema_for(obj: Any, struct_name: str | None, lookup: Lookup | None) -> tuple[TypedSchema, Shape]:
    """The schema walker and root shape for an object: its struct by name, else by apiVersion/kind,
    else deduced (every list atomic) as for kinds we have no struct for."""
    if lookup is None:
        from podvisor import schema as registry

        lookup = registry.struct
        if struct_name is None and isinstance(obj, dict):
            api_version, kind = obj.get("apiVersion"), obj.get("kind")
            if isinstance(api_version, str) and isinstance(kind, str):
                group, _, version = api_version.rpartition("/")
                found = registry.struct_for_kind(group, version, kind)
                struct_name = found.name if found is not None else None
    ts = TypedSchema(lookup)
    return ts, ts.root(struct_name)


def _has_uid(obj: Any) -> bool:
    md = obj.get("metadata") if isinstance(obj, dict) else None
    return isinstance(md, dict) and bool(md.get("uid"))


def update_managed_fields(
    old: dict[str, Any] | None,
    new: dict[str, Any],
    *,
    manager: str,
    operation: str = UPDATE,
    api_version: str,
    subresource: str = "",
    now: str,
    struct_name: str | None = None,
    lookup: Lookup | None = None,
    ignore_fields: Iterable[str] = (),
) -> None:
    """Record ``manager``'s ownership for an ordinary write (create, update, or a non-apply patch),
    rewriting ``new["metadata"]["managedFields"]`` in place. ``old`` is the stored object (None for a
    create). ``ignore_fields`` are dotted fields the endpoint resets (``status`` on the main resource,
    ``spec``/``metadata`` on ``/status``): nobody comes to own them through this endpoint."""
    md = new.setdefault("metadata", {})
    if not isinstance(md, dict):
        return
    old_entries = old.get("metadata", {}).get("managedFields") if isinstance(old, dict) else None
    new_entries = md.get("managedFields")
    managed: Managed
    if subresource:
        managed = _decode_or_empty(old_entries)
    elif is_reset(new_entries):
        managed = {}
    else:
        try:
            managed = decode_managed_fields(new_entries)
        except ValueError:
            managed = {}
        if not managed:
            managed = _decode_or_empty(old_entries)
    md.pop("managedFields", None)
    if not managed and _has_uid(old):
        return  # an existing object nobody tracks stays untracked until it is applied
    schema, root = schema_for(new, struct_name, lookup)
    key = ManagerKey.of(manager, operation, api_version, subresource)
    record_update(
        managed,
        schema,
        root,
        without_managed_fields(old) if old is not None else {},
        without_managed_fields(new),
        key,
        api_version=api_version,
        now=now,
        ignored=parse_field_paths(ignore_fields),
    )
    cap_update_managers(managed)
    if managed:
        md["managedFields"] = encode_managed_fields(managed)


def _decode_or_empty(entries: Any) -> Managed:
    try:
        return decode_managed_fields(entries)
    except ValueError:
        return {}
