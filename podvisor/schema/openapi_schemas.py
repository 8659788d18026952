"""JSON Schema of our structs, in the two spellings OpenAPI v2 (swagger) and v3 use.

Why its own module: the documents (`podvisor.schema.openapi`) decide *which* definitions and paths go
where; this module only turns one struct into one schema, the same way for every consumer. The layout
follows what kubectl's readers expect of a Kubernetes server:

- a property that points at a struct is ``{"allOf": [{"$ref": ...}], "description": ...}`` in v3 (kubectl
  explain and the v3 strategic-merge-patch reader both unwrap a single-element ``allOf``), and
  ``{"$ref": ..., "description": ...}`` in v2;
- timestamps, quantities, int-or-string and raw JSON are named definitions of their own
  (``io.k8s.apimachinery.pkg.apis.meta.v1.Time`` ...), referenced like structs;
- list and map semantics ride on ``x-kubernetes-*`` extensions: patch strategy and merge key for
  strategic merge patch, list type and map keys for server-side apply.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from podvisor.schema.model import Field, ListOf, MapOf, Struct, TypeRef
from podvisor.schema.registry import gvks_of, struct, structs

__all__ = [
    "SCALAR_DEFINITIONS",
    "PATCH_DEFINITION",
    "definition",
    "closure",
    "ref",
]

_META = "io.k8s.apimachinery.pkg.apis.meta.v1"
PATCH_DEFINITION = f"{_META}.Patch"

# scalar TypeRef -> (definition name, v2 schema, v3 schema); None name = inline primitive
_PRIMITIVES: dict[str, dict[str, Any]] = {
    "string": {"type": "string"},
    "boolean": {"type": "boolean"},
    "int32": {"type": "integer", "format": "int32"},
    "int64": {"type": "integer", "format": "int64"},
    "double": {"type": "number", "format": "double"},
    "bytes": {"type": "string", "format": "byte"},
}
_NAMED_SCALARS: dict[str, str] = {
    "date-time": f"{_META}.Time",
    "micro-time": f"{_META}.MicroTime",
    "quantity": "io.k8s.apimachinery.pkg.api.resource.Quantity",
    "int-or-string": "io.k8s.apimachinery.pkg.util.intstr.IntOrString",
}
_RAW_BY_CONTEXT = {
    # FieldsV1 and RawExtension are both "raw" in our model; which definition a field names depends
    # on what it carries
    ("io.k8s.apimachinery.pkg.apis.meta.v1.ManagedFieldsEntry", "fieldsV1"): f"{_META}.FieldsV1",
}
_RAW_DEFAULT = "io.k8s.apimachinery.pkg.runtime.RawExtension"

SCALAR_DEFINITIONS: dict[str, dict[str, Any]] = {
    f"{_META}.Time": {
        "description": "A point in time, written as an RFC 3339 timestamp in UTC with whole seconds "
        '("2024-05-01T12:00:00Z").',
        "type": "string",
        "format": "date-time",
    },
    f"{_META}.MicroTime": {
        "description": "A point in time with microsecond precision, written as an RFC 3339 timestamp "
        'with six fractional digits ("2024-05-01T12:00:00.000000Z").',
        "type": "string",
        "format": "date-time",
    },
    "io.k8s.apimachinery.pkg.api.resource.Quantity": {
        "description": "An amount of a resource written as a decimal number with an optional suffix: "
        'binary ("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"), decimal ("k", "M", "G", "T", "P", "E"), '
        'milli ("m") or an exponent ("1e3"). Examples: "500m" CPU, "128Mi" memory.',
        "type": "string",
    },
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString": {
        "description": "Either a whole number or a string: ports may be given by number or by name, "
        'percentages as "25%".',
        "type": "string",
        "format": "int-or-string",
    },
    "io.k8s.apimachinery.pkg.runtime.RawExtension": {
        "description": "An embedded object of any kind, carried as JSON with its own apiVersion and kind.",
        "type": "object",
    },
    f"{_META}.FieldsV1": {
        "description": "The set of fields a manager owns, as a JSON trie: each key is "
        '"f:<name>", "k:<merge key JSON>", "v:<value JSON>" or "i:<index>", and "." marks the node '
        "itself.",
        "type": "object",
    },
    PATCH_DEFINITION: {
        "description": "A patch document; its meaning depends on the request's Content-Type (JSON patch, "
        "JSON merge patch, strategic merge patch or a server-side apply configuration).",
        "type": "object",
    },
}

_V3_ONE_OF: dict[str, list[dict[str, str]]] = {
    "io.k8s.apimachinery.pkg.api.resource.Quantity": [{"type": "string"}, {"type": "number"}],
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString": [{"type": "integer"}, {"type": "string"}],
}


def ref(name: str, *, v3: bool) -> str:
    return f"#/components/schemas/{name}" if v3 else f"#/definitions/{name}"


def _named(owner: str, fieldname: str, t: str) -> str | None:
    """The definition name a scalar TypeRef is spelled with, or None for a primitive."""
    if t in _NAMED_SCALARS:
        return _NAMED_SCALARS[t]
    if t == "raw":
        return _RAW_BY_CONTEXT.get((owner, fieldname), _RAW_DEFAULT)
    return None


def _type_schema(owner: str, fieldname: str, t: TypeRef, *, v3: bool, top: bool) -> dict[str, Any]:
    """Schema of a type; ``top`` is True for the property itself (where v3 wraps a ref in allOf so a
    description can sit beside it)."""
    if isinstance(t, ListOf):
        return {"type": "array", "items": _type_schema(owner, fieldname, t.item, v3=v3, top=False)}
    if isinstance(t, MapOf):
        return {
            "type": "object",
            "additionalProperties": _type_schema(owner, fieldname, t.value, v3=v3, top=False),
        }
    if t in _PRIMITIVES:
        return dict(_PRIMITIVES[t])
    name = _named(owner, fieldname, t) or t
    if v3:
        out: dict[str, Any] = {"allOf": [{"$ref": ref(name, v3=True)}]}
        if name in structs() and not top:
            out["default"] = {}
        return out
    return {"$ref": ref(name, v3=False)}


def _property(owner: str, f: Field, *, v3: bool) -> dict[str, Any]:
    schema = _type_schema(owner, f.name, f.type, v3=v3, top=True)
    if f.description:
        schema["description"] = f.description
    if f.enum:
        schema["enum"] = list(f.enum)
    if f.patch_merge_key:
        schema["x-kubernetes-patch-merge-key"] = f.patch_merge_key
    if f.patch_strategy:
        schema["x-kubernetes-patch-strategy"] = f.patch_strategy
    if f.list_type:
        schema["x-kubernetes-list-type"] = f.list_type
    if f.list_map_keys:
        schema["x-kubernetes-list-map-keys"] = list(f.list_map_keys)
    if f.map_type:
        schema["x-kubernetes-map-type"] = f.map_type
    if f.default is not None:
        schema["default"] = f.default
    return schema


def definition(name: str, *, v3: bool) -> dict[str, Any]:
    """The schema of one definition (a struct or one of the named scalars)."""
    if name in SCALAR_DEFINITIONS:
        out = dict(SCALAR_DEFINITIONS[name])
        if v3 and name in _V3_ONE_OF:
            # v3 can say "number or string" (and kubectl explain then names the type, not "string")
            out.pop("type")
            out.pop("format", None)
            out["oneOf"] = _V3_ONE_OF[name]
        return out
    s: Struct = struct(name)
    out = {"description": s.description, "type": "object"}
    props = {fname: _property(name, f, v3=v3) for fname, f in sorted(s.fields.items())}
    if props:
        out["properties"] = props
    required = sorted(fname for fname, f in s.fields.items() if f.required)
    if required:
        out["required"] = required
    gvks = gvks_of(name)
    if gvks:
        out["x-kubernetes-group-version-kind"] = [
            {"group": g.group, "kind": g.kind, "version": g.version} for g in gvks
        ]
    if s.struct_type:
        out["x-kubernetes-map-type"] = s.struct_type
    return out


def _refs_of(name: str) -> Iterable[str]:
    if name in SCALAR_DEFINITIONS:
        return ()
    out: list[str] = []
    for f in struct(name).fields.values():
        t: TypeRef = f.type
        while isinstance(t, ListOf | MapOf):
            t = t.item if isinstance(t, ListOf) else t.value
        named = _named(name, f.name, t)
        if named:
            out.append(named)
        elif t not in _PRIMITIVES:
            out.append(t)
    return out


def closure(roots: Iterable[str]) -> list[str]:
    """Every definition reachable from ``roots`` (struct or named-scalar names), sorted."""
    seen: set[str] = set()
    stack = list(roots)
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        stack.extend(_refs_of(n))
    return sorted(seen)
