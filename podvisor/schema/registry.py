"""Lookup of the one typed schema: structs by definition name, served resources, kinds.

Why one loader: every consumer (OpenAPI, protobuf, field validation, strategic merge patch, apply,
discovery) must see the same shapes. The struct data is a generated JSON file (tools/gen_schema.py),
decoded once on first use into the frozen dataclasses of `podvisor.schema.model`; nothing here imports
the kubernetes client, so loading stays well under the server's start-up budget.

Names are upstream's OpenAPI definition names (``io.k8s.api.core.v1.PodSpec``,
``io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta``) so that the documents we serve match what kubectl
and the Python client expect.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

from podvisor.schema.model import SCALARS as _SCALAR_NAMES
from podvisor.schema.model import Field, ListOf, MapOf, Resource, Struct, TypeRef
from podvisor.schema.resources import (
    EXTRA_KINDS,
    META_GROUP_VERSION,
    META_KINDS,
    META_ONLY_KINDS,
    RESOURCES,
)

__all__ = [
    "GroupVersionKind",
    "struct",
    "structs",
    "resources",
    "resource_for",
    "resource_for_kind",
    "resource_for_struct",
    "struct_for_kind",
    "gvk_of",
    "gvks_of",
    "group_versions",
    "parse_typeref",
    "struct_refs",
]

_DATA = Path(__file__).with_name("structs.json")


class GroupVersionKind(NamedTuple):
    group: str  # "" for the core group
    version: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


def parse_typeref(encoded: str) -> TypeRef:
    """Decode the data file's compact type spelling: ``[]X`` list, ``{}X`` map, else a name."""
    if encoded.startswith("[]"):
        return ListOf(parse_typeref(encoded[2:]))
    if encoded.startswith("{}"):
        return MapOf(parse_typeref(encoded[2:]))
    return encoded


def _decode_field(raw: dict[str, Any]) -> Field:
    return Field(
        name=raw["n"],
        type=parse_typeref(raw["t"]),
        proto=raw.get("p", 0),
        description=raw.get("d", ""),
        required=bool(raw.get("r", 0)),
        patch_strategy=raw.get("ps", ""),
        patch_merge_key=raw.get("pk", ""),
        list_type=raw.get("lt", ""),
        list_map_keys=tuple(raw.get("lk", ())),
        map_type=raw.get("mt", ""),
        enum=tuple(raw.get("e", ())),
        proto_via=tuple(raw.get("v", ())),
    )


@cache
def _load() -> Mapping[str, Struct]:
    with _DATA.open("rb") as f:
        data = json.load(f)
    out: dict[str, Struct] = {}
    for name, raw in data["structs"].items():
        fields = {fr["n"]: _decode_field(fr) for fr in raw["f"]}
        out[name] = Struct(
            name=name, description=raw.get("d", ""), fields=fields, struct_type=raw.get("t", "")
        )
    return MappingProxyType(out)


def structs() -> Mapping[str, Struct]:
    """Every struct we know, by definition name (read-only)."""
    return _load()


def struct(name: str) -> Struct:
    """The struct with this definition name; KeyError if unknown."""
    return _load()[name]


def resources() -> list[Resource]:
    """Every served resource, in discovery order (a fresh list; the items are frozen)."""
    return list(RESOURCES)


@cache
def _by_plural() -> dict[tuple[str, str, str], Resource]:
    return {(r.group, r.version, r.plural): r for r in RESOURCES}


@cache
def _by_kind() -> dict[tuple[str, str, str], Resource]:
    return {(r.group, r.version, r.kind): r for r in RESOURCES}


def resource_for(group: str, version: str, plural: str) -> Resource | None:
    """The resource served at ``/apis/<group>/<version>/<plural>`` (group "" = ``/api/v1``)."""
    return _by_plural().get((group, version, plural))


def resource_for_kind(group: str, version: str, kind: str) -> Resource | None:
    """The resource whose objects are of this kind (``("apps", "v1", "Deployment")``)."""
    return _by_kind().get((group, version, kind))


@cache
def _served_group_versions() -> frozenset[tuple[str, str]]:
    gvs = {(r.group, r.version) for r in RESOURCES}
    gvs |= {(g, v) for (g, v, _k) in EXTRA_KINDS}
    return frozenset(gvs)


@cache
def _kinds() -> dict[tuple[str, str, str], str]:
    """(group, version, kind) -> struct name for every kind that has a struct."""
    out: dict[tuple[str, str, str], str] = {}
    for r in RESOURCES:
        out[(r.group, r.version, r.kind)] = r.struct
        if r.list_struct:
            out[(r.group, r.version, r.kind + "List")] = r.list_struct
    out.update(EXTRA_KINDS)
    for g, v in _served_group_versions() | {META_GROUP_VERSION}:
        for kind, name in META_KINDS.items():
            out.setdefault((g, v, kind), name)
    mg, mv = META_GROUP_VERSION
    for kind, name in META_ONLY_KINDS.items():
        out[(mg, mv, kind)] = name
    have = _load()
    return {k: v for k, v in out.items() if v in have}


def struct_for_kind(group: str, version: str, kind: str) -> Struct | None:
    """The struct of a kind as it arrives in a body: resources and their lists, and the kinds that
    are only request/response bodies (Binding, Eviction, Scale, SelfSubjectAccessReview, TokenRequest,
    and DeleteOptions/Status/WatchEvent/...Options in every served group-version)."""
    name = _kinds().get((group, version, kind))
    return _load()[name] if name else None


@cache
def _gvks() -> dict[str, tuple[GroupVersionKind, ...]]:
    acc: dict[str, list[GroupVersionKind]] = {}
    # primary first: the resource's own or the extra kind's group-version, then meta kinds in the core
    # group (as upstream lists v1 first), then the rest sorted
    for (g, v, k), name in _kinds().items():
        acc.setdefault(name, []).append(GroupVersionKind(g, v, k))

    def order(gvk: GroupVersionKind) -> tuple[int, str, str]:
        return (0 if gvk.group == "" else 1, gvk.group, gvk.version)

    out: dict[str, tuple[GroupVersionKind, ...]] = {}
    for name, gvks in acc.items():
        if name in META_KINDS.values() or name in META_ONLY_KINDS.values():
            out[name] = tuple(sorted(gvks, key=order))
        else:
            out[name] = tuple(gvks)
    return out


def gvk_of(struct_name: str) -> GroupVersionKind | None:
    """The primary group-version-kind of a top-level struct (None for nested structs). Meta kinds
    valid everywhere (DeleteOptions, Status, WatchEvent) answer their core ``v1`` GVK."""
    gvks = _gvks().get(struct_name)
    return gvks[0] if gvks else None


def gvks_of(struct_name: str) -> tuple[GroupVersionKind, ...]:
    """Every group-version-kind the struct travels as (for ``x-kubernetes-group-version-kind``)."""
    return _gvks().get(struct_name, ())


def resource_for_struct(struct_name: str) -> Resource | None:
    """The resource whose objects are this struct (``io.k8s.api.apps.v1.Deployment``)."""
    for r in RESOURCES:
        if r.struct == struct_name:
            return r
    return None


def group_versions() -> list[tuple[str, str]]:
    """Served (group, version) pairs, core first, in discovery order, including those that only carry
    subresource kinds (policy/v1 Eviction, autoscaling/v1 Scale, authentication.k8s.io/v1)."""
    seen: dict[tuple[str, str], None] = {}
    for r in RESOURCES:
        seen.setdefault((r.group, r.version), None)
    for g, v, _k in EXTRA_KINDS:
        seen.setdefault((g, v), None)
    return list(seen)


def struct_refs(t: TypeRef) -> str | None:
    """The struct name a TypeRef points at (through lists and maps), or None for scalars."""
    while isinstance(t, ListOf | MapOf):
        t = t.item if isinstance(t, ListOf) else t.value
    return None if t in _SCALAR_NAMES else t
