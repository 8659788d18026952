"""The shape of our one typed schema: structs, fields and the resources that are served.

Everything that needs to know an object's shape derives from these values instead of keeping its
own copy: OpenAPI v2/v3 documents, protobuf decoding, strict field validation, strategic merge
patch, server-side apply's list semantics, `kubectl explain` descriptions, discovery.

A `TypeRef` is one of:
- a scalar: ``string``, ``boolean``, ``int32``, ``int64``, ``double``, ``bytes`` (base64 in JSON),
  ``date-time`` (RFC 3339 string), ``quantity`` (resource.Quantity: a string in JSON, a string in proto),
  ``int-or-string`` (intstr.IntOrString), ``raw`` (free-form JSON: runtime.RawExtension, FieldsV1);
- a reference to a struct by its full definition name (``io.k8s.api.core.v1.Container``);
- ``ListOf(item)`` or ``MapOf(value)`` (string keys).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "SCALARS",
    "ListOf",
    "MapOf",
    "TypeRef",
    "Field",
    "Struct",
    "Subresource",
    "Resource",
]

SCALARS = frozenset(
    {"string", "boolean", "int32", "int64", "double", "bytes", "date-time", "quantity", "int-or-string", "raw"}
)


@dataclass(frozen=True, slots=True)
class ListOf:
    item: TypeRef


@dataclass(frozen=True, slots=True)
class MapOf:
    value: TypeRef


TypeRef = str | ListOf | MapOf


@dataclass(frozen=True, slots=True)
class Field:
    """One field of a struct.

    ``proto`` is the protobuf field number of the upstream wire format (0 = not carried in proto).
    ``patch_strategy``/``patch_merge_key`` drive strategic merge patch (``merge``, ``retainKeys``,
    ``merge,retainKeys``, ``replace``); ``list_type``/``list_map_keys`` drive server-side apply
    (``atomic``, ``set``, ``map``). ``description`` is written in our own words."""

    name: str
    type: TypeRef
    proto: int = 0
    description: str = ""
    required: bool = False
    patch_strategy: str = ""
    patch_merge_key: str = ""
    list_type: Literal["", "atomic", "set", "map"] = ""
    list_map_keys: tuple[str, ...] = ()
    map_type: Literal["", "atomic", "granular"] = ""
    default: Any = None
    enum: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Struct:
    """A named object type (``io.k8s.api.core.v1.PodSpec``). ``fields`` keeps declaration order."""

    name: str
    description: str
    fields: dict[str, Field] = field(default_factory=dict)
    # the struct's atomicity for server-side apply: "atomic" structs are replaced whole
    struct_type: Literal["", "atomic", "granular"] = ""


@dataclass(frozen=True, slots=True)
class Subresource:
    """``pods/status``, ``deployments/scale`` ... ``kind`` with ``group``/``version`` when it differs
    from the parent's (Scale is autoscaling/v1)."""

    name: str
    kind: str
    verbs: tuple[str, ...]
    group: str = ""
    version: str = ""


@dataclass(frozen=True, slots=True)
class Resource:
    """A served REST resource: where it lives in the URL space and which struct its objects are."""

    group: str  # "" for core
    version: str
    kind: str
    plural: str
    singular: str
    namespaced: bool
    struct: str  # definition name of the object, e.g. io.k8s.api.core.v1.Pod
    list_struct: str  # definition name of the list, e.g. io.k8s.api.core.v1.PodList
    verbs: tuple[str, ...] = (
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch",
    )
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: tuple[Subresource, ...] = ()

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def api_version(self) -> str:
        return self.group_version
