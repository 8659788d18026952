"""Content negotiation: what the client sends (Content-Type) and what it wants back (Accept).

Why a module of its own: kubectl and the Python client lean on it more than on any single verb.
``kubectl get`` asks for ``application/json;as=Table;v=v1;g=meta.k8s.io,application/json`` and prints
what the server formats, for lists, single objects and every watch event; metadata-only clients ask for
``as=PartialObjectMetadata(List)``; ``kubectl create`` sends protobuf bodies but reads JSON answers.

Answers are JSON (or YAML when asked). Protobuf is never produced: when it is the only acceptable type
the answer is 406, otherwise the other types in the Accept header are used, as kubectl accepts JSON
wherever it offers protobuf. A media range is taken in the client's order of preference (q, then
position); ``as=`` conversions the target cannot take (a list as PartialObjectMetadata) are skipped
rather than failed, so the next range gets its chance.

Request bodies are decoded by `podvisor.schema.bodies` (JSON, YAML, protobuf, with duplicate-field
detection); this module only picks the media type, enforces the size limit and shapes errors.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import yaml
from aiohttp import web

from podvisor.apiserver.errors import (
    BadRequestError,
    NotAcceptableError,
    RequestEntityTooLargeError,
    UnsupportedMediaTypeError,
)
from podvisor.apiserver.rest import RequestOptions
from podvisor.apiserver.tables import table_for
from podvisor.schema import struct_for_kind
from podvisor.schema.bodies import MAX_BODY, OBJECT_MEDIA_TYPES, DecodedBody, decode_body
from podvisor.schema.bodies import media_type as body_media
from podvisor.schema.fieldcheck import apply_field_validation
from podvisor.schema.model import Resource, Subresource

__all__ = [
    "MAX_BODY",
    "JSON",
    "YAML",
    "PROTOBUF",
    "PATCH_TYPES",
    "MediaRange",
    "Rendering",
    "Target",
    "parse_media_type",
    "parse_accept",
    "negotiate",
    "include_object_option",
    "transform",
    "partial_object_metadata",
    "encode",
    "respond",
    "warning_value",
    "read_body",
    "body_media_type",
    "patch_media_type",
    "expected_gvk",
    "check_type",
    "check_namespace",
    "check_name",
    "decode",
    "field_check",
    "struct_name_of",
    "strip_directives",
    "restore_directives",
]


JSON = "application/json"
YAML = "application/yaml"
PROTOBUF = "application/vnd.kubernetes.protobuf"
META_GROUP = "meta.k8s.io"
_META_VERSIONS = ("v1", "v1beta1")

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
PATCH_TYPES = (JSON_PATCH, MERGE_PATCH, APPLY_PATCH, STRATEGIC_PATCH)

_BODY_TYPES = OBJECT_MEDIA_TYPES  # JSON, YAML, protobuf

Target = Literal["object", "list", "watch"]

# which `as=` conversions each kind of answer can take
_CONVERSIONS: dict[str, frozenset[str]] = {
    "object": frozenset({"Table", "PartialObjectMetadata"}),
    "list": frozenset({"Table", "PartialObjectMetadataList"}),
    "watch": frozenset({"Table", "PartialObjectMetadata"}),
}


@dataclass(frozen=True, slots=True)
class MediaRange:
    """One entry of an Accept header: ``type/subtype`` with its parameters (``q`` taken out)."""

    mime: str
    params: Mapping[str, str]
    q: float = 1.0


def parse_media_type(value: str) -> tuple[str, dict[str, str]]:
    """``"application/json; charset=utf-8"`` -> ``("application/json", {"charset": "utf-8"})``;
    the type is lower-cased, parameter names too, values keep their case."""
    head, *rest = value.split(";")
    params: dict[str, str] = {}
    for part in rest:
        key, sep, val = part.partition("=")
        if not sep:
            continue
        params[key.strip().lower()] = val.strip().strip('"')
    return head.strip().lower(), params


def parse_accept(header: str) -> list[MediaRange]:
    """The ranges of an Accept header, most preferred first (by q, then by position)."""
    ranges: list[MediaRange] = []
    for raw in header.split(","):
        if not raw.strip():
            continue
        mime, params = parse_media_type(raw)
        q = 1.0
        if "q" in params:
            try:
                q = float(params.pop("q"))
            except ValueError:
                q = 0.0
        if q > 0:
            ranges.append(MediaRange(mime, params, q))
    ranges.sort(key=lambda r: -r.q)  # stable: equal q keep the client's order
    return ranges


@dataclass(frozen=True, slots=True)
class Rendering:
    """How to answer: the media type written (JSON or YAML) and the conversion asked with ``as=``
    (``""``, ``Table``, ``PartialObjectMetadata``, ``PartialObjectMetadataList``) in meta.k8s.io
    version ``version``."""

    media_type: str = JSON
    convert: str = ""
    version: str = "v1"


PLAIN_JSON = Rendering()


def _media_for(mime: str, target: Target | None) -> str | None:
    if mime in ("*/*", "application/*", JSON):
        return JSON
    if mime == YAML and target != "watch":
        return YAML
    return None


def negotiate(accept: str, target: Target | None) -> Rendering:
    """Pick the answer's rendering for ``target`` (None: not a resource answer, no conversions).
    Raises `NotAcceptableError` when nothing in ``accept`` can be served."""
    if not accept.strip():
        return PLAIN_JSON
    for r in parse_accept(accept):
        media = _media_for(r.mime, target)
        if media is None:
            continue
        as_kind = r.params.get("as", "")
        if not as_kind:
            if "g" in r.params or "v" in r.params:
                continue  # a group/version of something we do not serve in this shape
            return PLAIN_JSON if media == JSON else Rendering(media)
        if target is None or as_kind not in _CONVERSIONS[target]:
            continue
        if r.params.get("g") != META_GROUP or r.params.get("v") not in _META_VERSIONS:
            continue
        return Rendering(media, as_kind, r.params["v"])
    raise NotAcceptableError(
        "only the following media types are accepted: application/json, application/yaml"
    )


_INCLUDE_OBJECT = ("None", "Metadata", "Object")


def include_object_option(query: Mapping[str, str]) -> str:
    """``?includeObject=`` for Table answers (default Metadata), validated as kube does."""
    value = query.get("includeObject", "") or "Metadata"
    if value not in _INCLUDE_OBJECT:
        raise BadRequestError(
            f'Unable to convert to Table as requested: includeObject: Unsupported value: "{value}": '
            'supported values: "Metadata", "None", "Object"'
        )
    return value


def partial_object_metadata(obj: Mapping[str, Any], version: str = "v1") -> dict[str, Any]:
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": f"{META_GROUP}/{version}",
        "metadata": obj.get("metadata") or {},
    }


def _table(
    resource: Resource,
    objects: list[dict[str, Any]],
    *,
    include_object: str,
    resource_version: str,
    continue_token: str,
    version: str,
    now: datetime | None,
) -> dict[str, Any]:
    table = table_for(
        resource,
        objects,
        include_object=include_object,
        resource_version=resource_version,
        continue_token=continue_token,
        now=now,
    )
    if version != "v1":
        table["apiVersion"] = f"{META_GROUP}/{version}"
    return table


def transform(
    rendering: Rendering,
    resource: Resource,
    body: dict[str, Any],
    *,
    include_object: str = "Metadata",
    now: datetime | None = None,
) -> dict[str, Any]:
    """Apply the ``as=`` conversion of ``rendering`` to an object or a list (a ``...List`` with
    ``items``). Status bodies pass through untouched, as in kube."""
    convert = rendering.convert
    if not convert or body.get("kind") == "Status":
        return body
    is_list = isinstance(body.get("items"), list)
    meta = body.get("metadata") or {}
    if convert == "PartialObjectMetadata":
        if is_list:
            raise NotAcceptableError("you requested PartialObjectMetadata, but the requested object is a list")
        return partial_object_metadata(body, rendering.version)
    if convert == "PartialObjectMetadataList":
        if not is_list:
            raise NotAcceptableError(
                "you requested PartialObjectMetadataList, but the requested object is not a list"
            )
        return {
            "kind": "PartialObjectMetadataList",
            "apiVersion": f"{META_GROUP}/{rendering.version}",
            "metadata": meta,
            "items": [partial_object_metadata(o, rendering.version) for o in body["items"]],
        }
    # Table
    if is_list:
        return _table(
            resource,
            body["items"],
            include_object=include_object,
            resource_version=str(meta.get("resourceVersion", "")),
            continue_token=str(meta.get("continue", "")),
            version=rendering.version,
            now=now,
        )
    return _table(
        resource,
        [body],
        include_object=include_object,
        resource_version="",
        continue_token="",
        version=rendering.version,
        now=now,
    )


def encode(body: Any, media_type: str = JSON, *, pretty: bool = False) -> bytes:
    if media_type == YAML:
        return yaml.safe_dump(body, sort_keys=False, default_flow_style=False, allow_unicode=True).encode()
    if pretty:
        return json.dumps(body, indent=2, ensure_ascii=False).encode() + b"\n"
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def warning_value(message: str) -> str:
    """A ``Warning`` header value as kube writes it: code 299, agent ``-``, quoted text."""
    text = message.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")
    return f'299 - "{text}"'


def respond(
    body: Any,
    *,
    status: int = 200,
    media_type: str = JSON,
    pretty: bool = False,
    warnings: list[str] | None = None,
    content_type: str | None = None,
    encoded: bytes | None = None,
) -> web.Response:
    """``body`` as ``media_type``; ``encoded``: the body already encoded so (``body`` is then unused)."""
    resp = web.Response(
        status=status,
        body=encoded if encoded is not None else encode(body, media_type, pretty=pretty),
        headers={"Content-Type": content_type or media_type, "Cache-Control": "no-cache, private"},
    )
    seen: set[str] = set()
    for w in warnings or ():
        if w and w not in seen:
            seen.add(w)
            resp.headers.add("Warning", warning_value(w))
    return resp


async def read_body(request: web.BaseRequest, *, limit: int = MAX_BODY) -> bytes:
    """The request body, at most ``limit`` bytes; 413 beyond it (checked on Content-Length first,
    so an announced oversize body is refused before it is read)."""
    if request.content_length is not None and request.content_length > limit:
        raise RequestEntityTooLargeError(f"Request entity too large: limit is {limit}")
    data = bytearray()
    async for chunk in request.content.iter_chunked(1 << 16):
        data += chunk
        if len(data) > limit:
            raise RequestEntityTooLargeError(f"Request entity too large: limit is {limit}")
    return bytes(data)


def body_media_type(content_type: str) -> str:
    """The media type of a create/update body; 415 for anything we cannot decode. No Content-Type
    means JSON, as kube assumes."""
    if not content_type.strip():
        return JSON
    mime, _ = parse_media_type(content_type)
    if mime in ("application/yaml", "application/x-yaml", "text/yaml"):
        return YAML
    if mime in _BODY_TYPES:
        return mime
    raise UnsupportedMediaTypeError(
        f'the body of the request was in an unknown format - accepted media types include: {", ".join(_BODY_TYPES)}'
    )


def patch_media_type(content_type: str, *, strategic: bool = True) -> str:
    """The patch type named by a PATCH's Content-Type; 415 for others, and for strategic merge on a
    resource that has no strategic patch information (kube answers custom resources the same way)."""
    mime, _ = parse_media_type(content_type)
    accepted = [t for t in PATCH_TYPES if strategic or t != STRATEGIC_PATCH]
    if mime in accepted:
        return mime
    raise UnsupportedMediaTypeError(
        "the body of the request was in an unknown format - accepted media types include: " + ", ".join(accepted)
    )


# ------------------------------------------------------------------------------ object bodies


def expected_gvk(resource: Resource, sub: Subresource | None) -> tuple[str, str, str]:
    if sub is None or sub.name == "status":
        return resource.group, resource.version, resource.kind
    return sub.group or resource.group, sub.version or resource.version, sub.kind


def _gv(group: str, version: str) -> str:
    return f"{group}/{version}" if group else version


def check_type(obj: dict[str, Any], gvk: tuple[str, str, str]) -> None:
    """Default a missing apiVersion/kind to the URL's; refuse a different one with kube's words."""
    group, version, kind = gvk
    expected_gv = _gv(group, version)
    api_version = obj.get("apiVersion") or ""
    obj_kind = obj.get("kind") or ""
    if not api_version:
        obj["apiVersion"] = api_version = expected_gv
    if not obj_kind:
        obj["kind"] = obj_kind = kind
    if not isinstance(api_version, str) or not isinstance(obj_kind, str):
        raise BadRequestError("the object provided is unrecognized: apiVersion and kind must be strings")
    if api_version != expected_gv:
        if obj_kind == kind == "Eviction" and api_version.rpartition("/")[0] == group:
            obj["apiVersion"] = expected_gv  # policy/v1beta1 Evictions have the same shape
        else:
            raise BadRequestError(
                f"the API version in the data ({api_version}) does not match the expected API version ({expected_gv})"
            )
    if obj_kind != kind:
        obj_version = api_version.rpartition("/")[2]
        raise BadRequestError(
            f'{obj_kind} in version "{obj_version}" cannot be handled as a {kind}: '
            f"the kind in the data does not match the kind served at this URL"
        )


def check_namespace(obj: dict[str, Any], namespace: str, namespaced: bool) -> None:
    meta = obj.get("metadata")
    if meta is None:
        meta = obj["metadata"] = {}
    if not isinstance(meta, dict):
        raise BadRequestError("the object provided is unrecognized: metadata must be an object")
    obj_ns = meta.get("namespace") or ""
    if not namespaced:
        if obj_ns:
            meta.pop("namespace", None)
        return
    if not obj_ns:
        meta["namespace"] = namespace
    elif obj_ns != namespace:
        raise BadRequestError("the namespace of the provided object does not match the namespace sent on the request")


def check_name(obj: dict[str, Any], name: str) -> None:
    obj_name = (obj.get("metadata") or {}).get("name") or ""
    if obj_name != name:
        raise BadRequestError(f"the name of the object ({obj_name}) does not match the name on the URL ({name})")


_PLAIN_JSON = frozenset({JSON, MERGE_PATCH, STRATEGIC_PATCH, JSON_PATCH})


class _Repeated(Exception):
    """A JSON object repeats a key: `decode_body` says which, with its path."""


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise _Repeated
    return out


def decode(body: bytes, media_type: str, *, accepted: tuple[str, ...] = OBJECT_MEDIA_TYPES) -> DecodedBody:
    """The request body decoded by `decode_body`, with a shortcut for the common case (well-formed
    JSON without repeated keys) that skips rebuilding every object just to note repeats: any body
    the shortcut does not take as it is (a repeated key, bad JSON, NaN, not UTF-8, another media
    type) goes the full way, so results and errors are `decode_body`'s."""
    mt = body_media(media_type)
    if mt in _PLAIN_JSON and mt in accepted and len(body) <= MAX_BODY:
        try:
            obj = json.loads(body.decode("utf-8"), object_pairs_hook=_unique_pairs, parse_constant=_no_constant)
        except (ValueError, RecursionError, _Repeated):
            pass
        else:
            return DecodedBody(obj, mt)
    return decode_body(body, media_type, accepted=accepted)


def _no_constant(name: str) -> Any:
    raise ValueError(name)


def field_check(obj: dict[str, Any], struct_name: str, mode: str, decoded: DecodedBody, opts: RequestOptions,
                 *, patch: bool = False) -> dict[str, Any]:
    """Apply ``fieldValidation``: Strict raises, Warn adds warnings, both drop unknown fields."""
    checked, warnings = apply_field_validation(obj, struct_name, mode, decoded.duplicates,
                                               strict_errors=decoded.strict_errors, patch=patch)
    opts.warnings.extend(warnings)
    return checked


def struct_name_of(gvk: tuple[str, str, str]) -> str:
    st = struct_for_kind(*gvk)
    return st.name if st is not None else ""


def strip_directives(value: Any) -> Any:
    """A strategic/merge patch without its ``$`` directives (``$patch``, ``$setElementOrder/...``,
    ``$retainKeys``, ``$deleteFromPrimitiveList/...``): the part that is shaped like the object."""
    if isinstance(value, dict):
        return {k: strip_directives(v) for k, v in value.items() if not k.startswith("$")}
    if isinstance(value, list):
        return [strip_directives(v) for v in value]
    return value


def restore_directives(original: Any, pruned: Any) -> Any:
    """``original`` with what field validation pruned from its directive-free copy removed, and its
    directives kept."""
    if isinstance(original, dict) and isinstance(pruned, dict):
        out: dict[str, Any] = {}
        for k, v in original.items():
            if k.startswith("$"):
                out[k] = v
            elif k in pruned:
                out[k] = restore_directives(v, pruned[k])
        return out
    if isinstance(original, list) and isinstance(pruned, list) and len(original) == len(pruned):
        return [restore_directives(o, p) for o, p in zip(original, pruned, strict=True)]
    return original
