"""The shape of our one typed schema: structs, fields and the resources that are served.

Everything that needs to know an object's shape derives from these values instead of keeping its
own copy: OpenAPI v2/v3 documents, protobuf decoding, strict field validation, strategic merge
patch, server-side apply's list semantics, `kubectl explain` descriptions, discovery.

A `TypeRef` is one of:
- a scalar: ``string``, ``boolean``, ``int32``, ``int64``, ``double``, ``bytes`` (base64 in JSON),
  ``date-time`` (metav1.Time: RFC 3339 string with seconds), ``micro-time`` (metav1.MicroTime: RFC 3339
  with exactly 6 fractional digits; in proto the same {seconds=1, nanos=2} message as date-time),
  ``quantity`` (resource.Quantity: a string in JSON, a string in proto),
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
    {
        "string",
        "boolean",
        "int32",
        "int64",
        "double",
        "bytes",
        "date-time",
        "micro-time",
        "quantity",
        "int-or-string",
        "raw",
    }
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
    (``atomic``, ``set``, ``map``). ``description`` is written in our own words.

    ``proto_via`` is empty for an ordinary field. For a field that JSON flattens into this struct from an
    embedded one (Volume's VolumeSource, Probe's ProbeHandler) it holds the wire numbers of the wrapping
    message fields, outermost first: Volume's ``hostPath`` is field ``proto=1`` inside the message at
    field 2 of Volume, so ``proto_via == (2,)``. ``apiVersion``/``kind`` have ``proto == 0``: in protobuf
    they travel in the runtime.Unknown envelope, not in the object.

    A map whose values are lists (``MapOf(ListOf("string"))``, e.g. SubjectAccessReview's ``extra``) is
    in proto a map of wrapper messages holding ``repeated string items = 1``. The one plain list with such a
    wrapper is APIResource's ``verbs`` (meta.v1.Verbs, a response-only field)."""

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
    proto_via: tuple[int, ...] = ()


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
    list_struct: str  # definition name of the list, e.g. io.k8s.api.core.v1.PodList ("" if no list verb)
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
