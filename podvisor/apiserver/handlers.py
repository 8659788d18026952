"""REST verbs: a parsed request becomes exactly one `ResourceStore` call.

Everything kube's endpoint handlers do before the registry is here, and nothing after: parse the URL
into a `RequestInfo` (as kube's RequestInfoFactory does, including ``/namespaces/<ns>/status`` being
the namespace's own subresource and the legacy ``/watch/`` prefix), authorize it, check scope and
verb, parse and validate the query options (``dryRun``, ``fieldManager``, ``fieldValidation``,
``force``, list options) with kube's wording, decode and check the body (size, media type, apiVersion
and kind against the URL, namespace and name against the URL, unknown and duplicate fields), call the
store, and render its answer (`negotiation`) with the warnings it collected as ``Warning`` headers.

Streaming subresources (``pods/log``, ``exec``, ``attach``, ``portforward``) are not the registry's:
they go to a `StreamingBackend` (the node agent proxy, a later part); without one they answer 503.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web
from multidict import MultiMapping

from podvisor.apiserver.authn import Attributes, Authorizer, forbidden
from podvisor.apiserver.errors import (
    APIError,
    BadRequestError,
    Cause,
    InvalidError,
    MethodNotAllowedError,
    NotFoundError,
    ServiceUnavailableError,
)
from podvisor.apiserver.negotiation import (
    APPLY_PATCH,
    JSON,
    JSON_PATCH,
    Rendering,
    body_media_type,
    check_name,
    check_namespace,
    check_type,
    decode,
    expected_gvk,
    field_check,
    include_object_option,
    negotiate,
    patch_media_type,
    read_body,
    respond,
    restore_directives,
    strip_directives,
    struct_name_of,
    transform,
)
from podvisor.apiserver.rest import (
    ListOptions,
    Registry,
    RequestOptions,
    ResourceStore,
    UserInfo,
    WriteResult,
)
from podvisor.apiserver.watchstream import WatchHub, serve_watch
from podvisor.schema.bodies import PATCH_MEDIA_TYPES
from podvisor.schema.model import Resource, Subresource

__all__ = [
    "RequestInfo",
    "StreamingBackend",
    "RESTHandler",
    "parse_request_info",
    "NOT_FOUND_MESSAGE",
    "METHOD_NOT_ALLOWED_MESSAGE",
]

log = logging.getLogger("podvisor.apiserver.handlers")

NOT_FOUND_MESSAGE = "the server could not find the requested resource"
METHOD_NOT_ALLOWED_MESSAGE = "the server does not allow this method on the requested resource"

STREAMING_SUBRESOURCES = frozenset({"log", "exec", "attach", "portforward"})
_NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})
_FIELD_MANAGER_MAX = 128

# --------------------------------------------------------------------------------------- requests


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """What a URL and method ask for. ``namespace`` is the one in the path ("" for cluster-scoped
    resources and lists across namespaces; a namespace's own name is ``name``)."""

    path: str
    verb: str
    resource_request: bool
    group: str = ""
    version: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    watch: bool = False

    def attributes(self, user: UserInfo) -> Attributes:
        return Attributes(
            user=user,
            verb=self.verb,
            path=self.path,
            resource_request=self.resource_request,
            api_group=self.group,
            api_version=self.version,
            resource=self.resource,
            subresource=self.subresource,
            namespace=self.namespace or (self.name if self.resource == "namespaces" else ""),
            name=self.name,
        )


def parse_bool(value: str, name: str) -> bool:
    """Go's strconv.ParseBool, which is what kube's query decoding uses."""
    if value in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if value in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    raise BadRequestError(f'invalid value for {name}: "{value}" is not a boolean')


def _query_bool(query: Mapping[str, str], name: str, default: bool = False) -> bool:
    value = query.get(name)
    if value is None:
        return default
    if value == "":
        return True  # "?watch" alone
    return parse_bool(value, name)


def _query_int(query: Mapping[str, str], name: str) -> int | None:
    value = query.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise BadRequestError(f'invalid value for {name}: "{value}" is not an integer') from None


def parse_request_info(method: str, path: str, query: Mapping[str, str]) -> RequestInfo:
    """Split a request into kube's request attributes. Paths outside ``/api`` and ``/apis``, and
    the discovery documents themselves, are non-resource requests (verb = lower-cased method)."""
    parts = [p for p in path.split("/") if p]
    plain = RequestInfo(path=path, verb=method.lower(), resource_request=False)
    if not parts or parts[0] not in ("api", "apis"):
        return plain
    if parts[0] == "api":
        if len(parts) < 3:
            return plain
        group, version, rest = "", parts[1], parts[2:]
    else:
        if len(parts) < 4:
            return plain
        group, version, rest = parts[1], parts[2], parts[3:]

    watch = False
    if rest[0] == "watch":
        watch = True
        rest = rest[1:]
        if not rest:
            return plain
    namespace = ""
    if rest[0] == "namespaces" and len(rest) > 2 and rest[2] not in _NAMESPACE_SUBRESOURCES:
        namespace = rest[1]
        rest = rest[2:]
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else ""
    subresource = rest[2] if len(rest) > 2 else ""
    if len(rest) > 3:
        raise NotFoundError(NOT_FOUND_MESSAGE)
    if not watch and method == "GET" and _query_bool(query, "watch"):
        watch = True

    if method in ("GET", "HEAD"):
        verb = "watch" if watch else ("get" if name else "list")
    elif method == "POST":
        verb = "create"
    elif method == "PUT":
        verb = "update"
    elif method == "PATCH":
        verb = "patch"
    elif method == "DELETE":
        verb = "delete" if name else "deletecollection"
    else:
        verb = method.lower()
    return RequestInfo(
        path=path,
        verb=verb,
        resource_request=True,
        group=group,
        version=version,
        resource=resource,
        subresource=subresource,
        namespace=namespace,
        name=name,
        watch=watch,
    )


# ------------------------------------------------------------------------------------- streaming


class StreamingBackend(Protocol):
    """Where the streaming pod subresources go (the node agent proxy). Each method gets the pod
    object as stored (so it can find the pod's node), the raw request (query parameters, upgrade
    headers, the connection) and the user, and returns the response it wrote or prepared. Errors it
    raises as `APIError` are rendered as Status like any other."""

    async def log(self, pod: dict[str, Any], request: web.Request, user: UserInfo) -> web.StreamResponse: ...

    async def exec(self, pod: dict[str, Any], request: web.Request, user: UserInfo) -> web.StreamResponse: ...

    async def attach(self, pod: dict[str, Any], request: web.Request, user: UserInfo) -> web.StreamResponse: ...

    async def portforward(
        self, pod: dict[str, Any], request: web.Request, user: UserInfo
    ) -> web.StreamResponse: ...


# ------------------------------------------------------------------------------------- options


def _options_invalid(kind: str, causes: list[Cause]) -> InvalidError:
    parts = [f"{c.field}: {c.message}" if c.field else c.message for c in causes]
    detail = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    return InvalidError(f'{kind}.meta.k8s.io "" is invalid: {detail}', group="meta.k8s.io", kind=kind,
                        causes=causes)


def _go_quote_list(values: list[str]) -> str:
    return "[]string{" + ", ".join(f'"{v}"' for v in values) + "}"


def _check_dry_run(values: list[str], causes: list[Cause]) -> bool:
    if not values:
        return False
    if any(v != "All" for v in values) or len(values) > 1:
        causes.append(
            Cause("FieldValueNotSupported", f'Unsupported value: {_go_quote_list(values)}: supported values: "All"',
                  "dryRun")
        )
    return True


def _manager_from_user_agent(ua: str) -> str:
    head = ua.split("/", 1)[0]
    return "".join(ch for ch in head if ch.isprintable())[:_FIELD_MANAGER_MAX]


def _field_validation(query: Mapping[str, str], causes: list[Cause]) -> str:
    mode = query.get("fieldValidation", "")
    if mode not in ("", "Ignore", "Warn", "Strict"):
        causes.append(
            Cause("FieldValueNotSupported",
                  f'Unsupported value: "{mode}": supported values: "", "Ignore", "Strict", "Warn"',
                  "fieldValidation")
        )
    return mode or "Warn"  # kube's default when the client does not say


def _write_options(
    request: web.Request, user: UserInfo, kind: str, *, patch_type: str = ""
) -> tuple[RequestOptions, str]:
    """RequestOptions and the fieldValidation mode of a create/update/patch, validated as kube's
    ValidateCreateOptions / ValidateUpdateOptions / ValidatePatchOptions do (422 on failure)."""
    query = request.query
    causes: list[Cause] = []
    dry_run = _check_dry_run(query.getall("dryRun", []), causes)
    manager = query.get("fieldManager", "")
    if len(manager) > _FIELD_MANAGER_MAX:
        causes.append(Cause("FieldValueTooLong", f"Too long: may not be more than {_FIELD_MANAGER_MAX} bytes",
                            "fieldManager"))
    for i, ch in enumerate(manager):
        if not ch.isprintable():
            causes.append(Cause("FieldValueInvalid",
                                f'Invalid value: "{manager}": invalid character {ch!r} (at position {i})',
                                "fieldManager"))
            break
    force = False
    if "force" in query:
        force = _query_bool(query, "force")
        if patch_type != APPLY_PATCH:
            causes.append(Cause("FieldValueForbidden", "Forbidden: may not be specified for non-apply patch",
                                "force"))
    if patch_type == APPLY_PATCH and not manager:
        causes.append(Cause("FieldValueRequired", "Required value: is required for apply patch", "fieldManager"))
    mode = _field_validation(query, causes)
    if causes:
        raise _options_invalid(kind, causes)
    if not manager:
        manager = _manager_from_user_agent(request.headers.get("User-Agent", ""))
    return RequestOptions(user=user, dry_run=dry_run, field_manager=manager, force=force), mode


_RV_MATCH = ("", "NotOlderThan", "Exact")


def list_options(query: MultiMapping[str], *, watch: bool, name: str = "") -> ListOptions:
    causes: list[Cause] = []
    rv = query.get("resourceVersion", "")
    rv_match = query.get("resourceVersionMatch", "")
    if rv_match not in _RV_MATCH:
        causes.append(Cause("FieldValueNotSupported",
                            f'Unsupported value: "{rv_match}": supported values: "Exact", "NotOlderThan", ""',
                            "resourceVersionMatch"))
    elif rv_match and watch:
        causes.append(Cause("FieldValueForbidden", "Forbidden: resourceVersionMatch is forbidden for watch",
                            "resourceVersionMatch"))
    elif rv_match and not rv:
        causes.append(Cause("FieldValueForbidden",
                            "Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided",
                            "resourceVersionMatch"))
    if causes:
        raise _options_invalid("ListOptions", causes)
    field_selector = query.get("fieldSelector", "")
    if name:
        by_name = f"metadata.name={name}"
        field_selector = f"{field_selector},{by_name}" if field_selector else by_name
    send_initial = query.get("sendInitialEvents")
    return ListOptions(
        label_selector=query.get("labelSelector", ""),
        field_selector=field_selector,
        limit=max(_query_int(query, "limit") or 0, 0),
        continue_token=query.get("continue", ""),
        resource_version=rv,
        resource_version_match=rv_match,
        allow_bookmarks=_query_bool(query, "allowWatchBookmarks"),
        timeout_seconds=max(_query_int(query, "timeoutSeconds") or 0, 0),
        send_initial_events=None if send_initial is None else _query_bool(query, "sendInitialEvents"),
    )


def _delete_options_from_query(query: MultiMapping[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    grace = _query_int(query, "gracePeriodSeconds")
    if grace is not None:
        options["gracePeriodSeconds"] = grace
    if "propagationPolicy" in query:
        options["propagationPolicy"] = query["propagationPolicy"]
    if "orphanDependents" in query:
        options["orphanDependents"] = _query_bool(query, "orphanDependents")
    dry = query.getall("dryRun", [])
    if dry:
        options["dryRun"] = list(dry)
    return options


# ------------------------------------------------------------------------------------- handler


class RESTHandler:
    """Serves every resource URL of one registry."""

    def __init__(
        self,
        registry: Registry,
        *,
        authorizer: Authorizer,
        hub: WatchHub,
        streaming: StreamingBackend | None = None,
    ) -> None:
        self.registry = registry
        self.authorizer = authorizer
        self.hub = hub
        self.streaming = streaming

    async def handle(self, request: web.Request, info: RequestInfo, user: UserInfo) -> web.StreamResponse:
        decision = await self.authorizer.authorize(info.attributes(user))
        if not decision.allowed:
            raise forbidden(info.attributes(user), decision.reason)
        store = self.registry.lookup(info.group, info.version, info.resource)
        if store is None:
            raise NotFoundError(NOT_FOUND_MESSAGE)
        resource = store.resource
        method = request.method
        # scope: namespaced objects live under /namespaces/<ns>/; cluster-scoped ones never do
        if resource.namespaced:
            if not info.namespace and (info.name or method not in ("GET", "HEAD")):
                raise (NotFoundError(NOT_FOUND_MESSAGE) if info.name else MethodNotAllowedError(METHOD_NOT_ALLOWED_MESSAGE))
        elif info.namespace:
            raise NotFoundError(NOT_FOUND_MESSAGE)

        sub: Subresource | None = None
        if info.subresource:
            sub = next((s for s in resource.subresources if s.name == info.subresource), None)
            if sub is None:
                raise NotFoundError(NOT_FOUND_MESSAGE)
            if info.subresource in STREAMING_SUBRESOURCES:
                return await self._streaming(store, info, request, user)
            if info.watch:
                raise MethodNotAllowedError(METHOD_NOT_ALLOWED_MESSAGE)
        verbs = sub.verbs if sub is not None else resource.verbs
        if info.verb not in verbs or (method == "POST" and info.name and sub is None):
            raise MethodNotAllowedError(METHOD_NOT_ALLOWED_MESSAGE)

        if method in ("GET", "HEAD"):
            if info.watch:
                return await self._watch(store, info, request)
            if info.name:
                return await self._get(store, info, request)
            return await self._list(store, info, request)
        if method == "POST":
            return await self._create(store, info, request, user, sub)
        if method == "PUT":
            return await self._update(store, info, request, user, sub)
        if method == "PATCH":
            return await self._patch(store, info, request, user, sub)
        if method == "DELETE":
            return await self._delete(store, info, request, user)
        raise MethodNotAllowedError(METHOD_NOT_ALLOWED_MESSAGE)

    # -- reads -----------------------------------------------------------------------------------

    def _render(self, request: web.Request, resource: Resource, body: dict[str, Any], rendering: Rendering,
                *, status: int = 200, warnings: list[str] | None = None) -> web.Response:
        if rendering.convert:
            include = include_object_option(request.query) if rendering.convert == "Table" else "Metadata"
            body = transform(rendering, resource, body, include_object=include)
        return respond(body, status=status, media_type=rendering.media_type,
                       pretty=_query_bool(request.query, "pretty"), warnings=warnings)

    async def _get(self, store: ResourceStore, info: RequestInfo, request: web.Request) -> web.Response:
        rendering = negotiate(request.headers.get("Accept", ""), "object")
        obj = await store.get(info.namespace, info.name, subresource=info.subresource)
        return self._render(request, store.resource, obj, rendering)

    async def _list(self, store: ResourceStore, info: RequestInfo, request: web.Request) -> web.Response:
        rendering = negotiate(request.headers.get("Accept", ""), "list")
        opts = list_options(request.query, watch=False)
        list_json = getattr(store, "list_json", None)
        if list_json is not None and rendering.media_type == JSON and not rendering.convert \
                and not _query_bool(request.query, "pretty"):
            encoded = await list_json(info.namespace, opts)  # the stored bytes, passed through
            if encoded is not None:
                return respond(None, encoded=encoded)
        body = await store.list(info.namespace, opts)
        if body.get("items") is None:
            body["items"] = []
        return self._render(request, store.resource, body, rendering)

    async def _watch(self, store: ResourceStore, info: RequestInfo, request: web.Request) -> web.StreamResponse:
        rendering = negotiate(request.headers.get("Accept", ""), "watch")
        include = include_object_option(request.query) if rendering.convert == "Table" else "Metadata"
        opts = list_options(request.query, watch=True, name=info.name)
        if self.hub.closed:
            raise ServiceUnavailableError("the server is shutting down", retry_after=1)
        events = store.watch(info.namespace, opts)
        return await serve_watch(request, events, resource=store.resource, rendering=rendering, hub=self.hub,
                                 timeout_seconds=opts.timeout_seconds, include_object=include)

    # -- writes ----------------------------------------------------------------------------------

    async def _object_body(self, request: web.Request, store: ResourceStore, sub: Subresource | None,
                           mode: str, opts: RequestOptions, namespace: str) -> dict[str, Any]:
        media = body_media_type(request.headers.get("Content-Type", ""))
        raw = await read_body(request)
        gvk = expected_gvk(store.resource, sub)
        if not raw.strip():
            raise BadRequestError(f"the object provided is unrecognized (must be of type {gvk[2]}): empty body")
        decoded = decode(raw, media)
        obj = decoded.obj
        if not isinstance(obj, dict):
            raise BadRequestError(f"the object provided is unrecognized (must be of type {gvk[2]}): not an object")
        check_type(obj, gvk)
        check_namespace(obj, namespace, store.resource.namespaced)
        struct_name = struct_name_of(gvk)
        if struct_name:
            obj = field_check(obj, struct_name, mode, decoded, opts)
        return obj

    def _write_response(self, request: web.Request, store: ResourceStore, result: WriteResult,
                        opts: RequestOptions) -> web.Response:
        rendering = negotiate(request.headers.get("Accept", ""), "object")
        return self._render(request, store.resource, result.body, rendering, status=result.code,
                            warnings=opts.warnings)

    async def _create(self, store: ResourceStore, info: RequestInfo, request: web.Request, user: UserInfo,
                      sub: Subresource | None) -> web.Response:
        negotiate(request.headers.get("Accept", ""), "object")  # 406 before any work
        opts, mode = _write_options(request, user, "CreateOptions")
        obj = await self._object_body(request, store, sub, mode, opts, info.namespace)
        result = await store.create(info.namespace, obj, opts, subresource=info.subresource, name=info.name)
        return self._write_response(request, store, result, opts)

    async def _update(self, store: ResourceStore, info: RequestInfo, request: web.Request, user: UserInfo,
                      sub: Subresource | None) -> web.Response:
        negotiate(request.headers.get("Accept", ""), "object")
        opts, mode = _write_options(request, user, "UpdateOptions")
        obj = await self._object_body(request, store, sub, mode, opts, info.namespace)
        check_name(obj, info.name)
        result = await store.update(info.namespace, info.name, obj, opts, subresource=info.subresource)
        return self._write_response(request, store, result, opts)

    async def _patch(self, store: ResourceStore, info: RequestInfo, request: web.Request, user: UserInfo,
                     sub: Subresource | None) -> web.Response:
        negotiate(request.headers.get("Accept", ""), "object")
        strategic = bool(getattr(store.resource, "strategic_merge", True))
        patch_type = patch_media_type(request.headers.get("Content-Type", ""), strategic=strategic)
        opts, mode = _write_options(request, user, "PatchOptions", patch_type=patch_type)
        raw = await read_body(request)
        gvk = expected_gvk(store.resource, sub)
        decoded = decode(raw, patch_type, accepted=PATCH_MEDIA_TYPES)
        patch = decoded.obj
        struct_name = struct_name_of(gvk)
        if patch_type == APPLY_PATCH:
            if not isinstance(patch, dict):
                raise BadRequestError("error decoding YAML: the apply patch must be an object")
            check_type(patch, gvk)
            check_namespace(patch, info.namespace, store.resource.namespaced)
            if struct_name:
                patch = field_check(patch, struct_name, mode, decoded, opts)
        elif patch_type == JSON_PATCH:
            if not isinstance(patch, list):
                raise BadRequestError("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
        else:
            if not isinstance(patch, dict):
                raise BadRequestError("error decoding patch: the patch must be a JSON object")
            if struct_name:
                checked = field_check(strip_directives(patch), struct_name, mode, decoded, opts, patch=True)
                patch = restore_directives(patch, checked)
        result = await store.patch(info.namespace, info.name, patch_type, patch, opts, subresource=info.subresource)
        return self._write_response(request, store, result, opts)

    async def _delete(self, store: ResourceStore, info: RequestInfo, request: web.Request,
                      user: UserInfo) -> web.Response:
        negotiate(request.headers.get("Accept", ""), "object")
        options = _delete_options_from_query(request.query)
        raw = await read_body(request)
        if raw.strip():
            body = decode(raw, body_media_type(request.headers.get("Content-Type", ""))).obj
            if not isinstance(body, dict):
                raise BadRequestError("the object provided is unrecognized (must be of type DeleteOptions)")
            body.pop("kind", None)
            body.pop("apiVersion", None)
            options.update(body)
        causes: list[Cause] = []
        dry = options.get("dryRun") or []
        dry_run = _check_dry_run(list(dry) if isinstance(dry, list) else [str(dry)], causes)
        policy = options.get("propagationPolicy")
        if policy is not None and policy not in ("Orphan", "Background", "Foreground"):
            causes.append(Cause("FieldValueNotSupported",
                                f'Unsupported value: "{policy}": supported values: "Foreground", "Background", "Orphan"',
                                "propagationPolicy"))
        if causes:
            raise _options_invalid("DeleteOptions", causes)
        opts = RequestOptions(user=user, dry_run=dry_run)
        if info.name:
            result = await store.delete(info.namespace, info.name, options, opts)
        else:
            result = await store.delete_collection(info.namespace, options, list_options(request.query, watch=False),
                                                   opts)
        return self._write_response(request, store, result, opts)

    # -- streaming -------------------------------------------------------------------------------

    async def _streaming(self, store: ResourceStore, info: RequestInfo, request: web.Request,
                         user: UserInfo) -> web.StreamResponse:
        method = request.method
        allowed = ("GET",) if info.subresource == "log" else ("GET", "POST")
        if method not in allowed:
            raise MethodNotAllowedError(METHOD_NOT_ALLOWED_MESSAGE)
        pod = await store.get(info.namespace, info.name)
        if self.streaming is None:
            raise ServiceUnavailableError(
                f'no node agent for pod "{info.name}" in namespace "{info.namespace}": '
                f"{info.subresource} needs the pod's node agent, and none is connected"
            )
        handler = getattr(self.streaming, info.subresource)
        response: web.StreamResponse = await handler(pod, request, user)
        return response


def render_error(err: APIError) -> web.Response:
    """The Status answer for an error (used by the app's error middleware)."""
    resp = respond(err.status(), status=err.code)
    if err.retry_after:
        resp.headers["Retry-After"] = str(err.retry_after)
    return resp
