"""Podvisor's one typed schema: structs, served resources, and documents derived from them.

`podvisor.schema.model` holds the dataclasses; `podvisor.schema.registry` the lookups re-exported here;
`podvisor.schema.openapi` the OpenAPI v2/v3 documents (imported on demand: it is not needed to serve
objects).
"""

from podvisor.schema.model import (
    SCALARS,
    Field,
    ListOf,
    MapOf,
    Resource,
    Struct,
    Subresource,
    TypeRef,
)
from podvisor.schema.registry import (
    GroupVersionKind,
    group_versions,
    gvk_of,
    gvks_of,
    parse_typeref,
    resource_for,
    resource_for_kind,
    resource_for_struct,
    resources,
    struct,
    struct_for_kind,
    struct_refs,
    structs,
)

__all__ = [
    "SCALARS",
    "Field",
    "GroupVersionKind",
    "ListOf",
    "MapOf",
    "Resource",
    "Struct",
    "Subresource",
    "TypeRef",
    "group_versions",
    "gvk_of",
    "gvks_of",
    "parse_typeref",
    "resource_for",
    "resource_for_kind",
    "resource_for_struct",
    "resources",
    "struct",
    "struct_for_kind",
    "struct_refs",
    "structs",
]
