"""The OpenAPI documents we serve: v2 (``/openapi/v2``) and v3 (``/openapi/v3`` and one document per
group-version), derived from the schema registry and computed once.

Why the paths matter and not only the schemas: kubectl reads the v3 document of a group-version and
looks for a ``patch`` operation carrying the object's ``x-kubernetes-group-version-kind`` and a
``fieldValidation`` query parameter; finding it is what makes it send ``?fieldValidation=Strict``
instead of failing to validate on the client. The same operation's request content types tell
``kubectl apply`` that strategic merge patch is supported, and the components' ``x-kubernetes-patch-*``
extensions tell it how to compute one. ``kubectl explain`` finds a resource's kind through the
``x-kubernetes-group-version-kind`` of the operations on the resource's path, then walks
``components.schemas``.

Every document is cached with its JSON bytes and a content hash (the v3 index links each group-version
document with ``?hash=<hash>`` so clients can cache it forever).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cache
from typing import Any

from podvisor.schema.openapi_paths import (
    PATH_PARAMS,
    QUERY_PARAMS,
    Operation,
    PathItem,
    api_base,
    api_tag,
    group_version_of_path,
    paths_by_group_version,
    served_group_versions,
)
from podvisor.schema.openapi_schemas import closure, definition, ref
from podvisor.schema.registry import GroupVersionKind

__all__ = [
    "OpenAPIDocument",
    "openapi_v2",
    "openapi_v2_document",
    "openapi_v3_index",
    "openapi_v3_index_document",
    "openapi_v3",
    "openapi_v3_document",
    "v3_group_version_paths",
    "SERVER_VERSION",
]

SERVER_VERSION = "v1.32.0-podvisor"


@dataclass(frozen=True, slots=True)
class OpenAPIDocument:
    """A computed document: the dict (do not mutate), its JSON bytes, and a hash of those bytes
    (upper-case hex SHA-512, as kube-apiserver spells it). ``etag`` is the quoted hash."""

    body: dict[str, Any]
    data: bytes
    hash: str

    @property
    def etag(self) -> str:
        return f'"{self.hash}"'


def _document(body: dict[str, Any]) -> OpenAPIDocument:
    data = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
    return OpenAPIDocument(body=body, data=data, hash=hashlib.sha512(data).hexdigest().upper())


# ------------------------------------------------------------------------------- rendering


def _param(name: str, *, v3: bool, kind: str = "", path: bool = False) -> dict[str, Any]:
    if path:
        typ, desc = "string", PATH_PARAMS[name].format(kind=kind)
    else:
        typ, desc = QUERY_PARAMS[name]
    out: dict[str, Any] = {"name": name, "in": "path" if path else "query", "description": desc}
    if path:
        out["required"] = True
    if v3:
        out["schema"] = {"type": typ, "uniqueItems": True}
    else:
        out["type"] = typ
        out["uniqueItems"] = True
    return out


def _schema_ref(defn: str, *, v3: bool) -> dict[str, Any]:
    return {"type": "string"} if defn == "string" else {"$ref": ref(defn, v3=v3)}


def _gvk_ext(gvk: GroupVersionKind) -> dict[str, str]:
    return {"group": gvk.group, "kind": gvk.kind, "version": gvk.version}


def _render_op(op: Operation, tag: str, *, v3: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"tags": [tag], "description": op.description, "operationId": op.op_id}
    params = [_param(q, v3=v3) for q in op.query]
    responses: dict[str, Any] = {}
    for code, desc, defn in op.responses:
        if v3:
            responses[code] = {
                "description": desc,
                "content": {ct: {"schema": _schema_ref(defn, v3=True)} for ct in op.produces},
            }
        else:
            responses[code] = {"description": desc, "schema": _schema_ref(defn, v3=False)}
    responses["401"] = {"description": "Unauthorized"}
    if v3:
        if op.body:
            out["requestBody"] = {
                "content": {ct: {"schema": {"$ref": ref(op.body, v3=True)}} for ct in op.body_types},
                "required": op.body_required,
            }
    else:
        out["consumes"] = list(op.body_types)
        out["produces"] = list(op.produces)
        out["schemes"] = ["https"]
        if op.body:
            params.insert(
                0,
                {
                    "name": "body",
                    "in": "body",
                    "required": op.body_required,
                    "schema": {"$ref": ref(op.body, v3=False)},
                },
            )
    if params:
        out["parameters"] = params
    out["responses"] = responses
    if op.action:
        out["x-kubernetes-action"] = op.action
    out["x-kubernetes-group-version-kind"] = _gvk_ext(op.gvk)
    return out


def _render_paths(paths: list[PathItem], *, v3: bool) -> tuple[dict[str, Any], set[str]]:
    out: dict[str, Any] = {}
    used: set[str] = set()
    for p in paths:
        item: dict[str, Any] = {}
        for op in p.ops:
            tag = (
                api_tag(op.gvk.group, op.gvk.version)
                if p.path.endswith("/")
                else api_tag(*group_version_of_path(p.path))
            )
            item[op.method] = _render_op(op, tag, v3=v3)
            if op.body:
                used.add(op.body)
            used.update(d for _c, _d, d in op.responses if d != "string")
        item["parameters"] = [
            *(_param(n, v3=v3, kind=p.kind, path=True) for n in p.path_params),
            _param("pretty", v3=v3),
        ]
        out[p.path] = item
    return out, used


def v3_group_version_paths() -> list[str]:
    """The group-version paths of the v3 index, e.g. ``api/v1``, ``apis/apps/v1``."""
    return [api_base(g, v).lstrip("/") for g, v in served_group_versions()]


@cache
def openapi_v3_document(group_version_path: str) -> OpenAPIDocument | None:
    """The v3 document of one group-version (``api/v1``, ``apis/apps/v1``), or None if not served."""
    gv = {api_base(g, v).lstrip("/"): (g, v) for g, v in served_group_versions()}.get(
        group_version_path.strip("/")
    )
    if gv is None:
        return None
    paths, used = _render_paths(paths_by_group_version()[gv], v3=True)
    schemas = {n: definition(n, v3=True) for n in closure(used)}
    body = {
        "openapi": "3.0.0",
        "info": {"title": "Podvisor", "version": SERVER_VERSION},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "BearerToken": {
                    "type": "apiKey",
                    "description": "Bearer token authentication",
                    "name": "authorization",
                    "in": "header",
                }
            },
        },
        "security": [{"BearerToken": []}],
    }
    return _document(body)


def openapi_v3(group_version_path: str) -> dict[str, Any] | None:
    """The v3 document of one group-version as a dict (shared: do not mutate), or None."""
    doc = openapi_v3_document(group_version_path)
    return doc.body if doc else None


@cache
def openapi_v3_index_document() -> OpenAPIDocument:
    """``GET /openapi/v3``: each group-version path with a URL that pins its document's hash."""
    paths: dict[str, Any] = {}
    for p in v3_group_version_paths():
        doc = openapi_v3_document(p)
        assert doc is not None
        paths[p] = {"serverRelativeURL": f"/openapi/v3/{p}?hash={doc.hash}"}
    return _document({"paths": paths})


def openapi_v3_index() -> dict[str, Any]:
    return openapi_v3_index_document().body


@cache
def openapi_v2_document() -> OpenAPIDocument:
    """``GET /openapi/v2`` (JSON): every path and definition in one swagger 2.0 document."""
    all_paths: dict[str, Any] = {}
    used: set[str] = set()
    for (_g, _v), plist in paths_by_group_version().items():
        rendered, u = _render_paths(plist, v3=False)
        all_paths.update(rendered)
        used |= u
    body = {
        "swagger": "2.0",
        "info": {"title": "Podvisor", "version": SERVER_VERSION},
        "paths": all_paths,
        "definitions": {n: definition(n, v3=False) for n in closure(used)},
        "securityDefinitions": {
            "BearerToken": {
                "type": "apiKey",
                "description": "Bearer token authentication",
                "name": "authorization",
                "in": "header",
            }
        },
        "security": [{"BearerToken": []}],
    }
    return _document(body)


def openapi_v2() -> dict[str, Any]:
    """The swagger 2.0 document as a dict (shared: do not mutate)."""
    return openapi_v2_document().body
