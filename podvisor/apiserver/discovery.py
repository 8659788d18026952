"""Discovery and OpenAPI: how clients learn what this server serves.

Everything here is derived from the resources the registry serves (their `podvisor.schema` model), so
discovery can never list a resource the server would 404 on, nor miss one it serves.

Two discovery shapes are served, because clients differ:
- legacy: ``/api`` (APIVersions), ``/apis`` (APIGroupList), ``/apis/<g>`` (APIGroup) and one
  APIResourceList per group-version — what the Python client and older kubectls read;
- aggregated (``apidiscovery.k8s.io`` v2 or v2beta1, chosen from the Accept header in the client's
  order): all groups, versions and resources of ``/api`` or ``/apis`` in one answer. client-go trusts an
  aggregated answer only when the response Content-Type repeats the ``g``/``v``/``as`` it asked for, so
  the Content-Type is built from the negotiated range.

Documents are encoded once and cached with an ETag (discovery is asked for on every kubectl run when its
cache is cold); ``If-None-Match`` answers 304. OpenAPI v3 per group-version documents carry kube's
``?hash=`` scheme: the index links each document with the hash of its bytes; a request with the current
hash is cacheable forever, a stale hash is redirected to the current one.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import sys
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

from aiohttp import web

from podvisor.apiserver.errors import NotAcceptableError, NotFoundError
from podvisor.apiserver.negotiation import JSON, negotiate, parse_accept
from podvisor.apiserver.rest import Registry
from podvisor.schema.model import Resource

__all__ = ["Discovery", "VERSION_INFO", "version_sort_key", "NOT_FOUND_MESSAGE"]

NOT_FOUND_MESSAGE = "the server could not find the requested resource"

VERSION_INFO: dict[str, str] = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0-podvisor",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2025-01-01T00:00:00Z",
    "goVersion": f"python{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}",
    "compiler": "cpython",
    "platform": "linux/amd64",
}

_DISCOVERY_GROUP = "apidiscovery.k8s.io"
_DISCOVERY_KIND = "APIGroupDiscoveryList"
_DISCOVERY_VERSIONS = ("v2", "v2beta1")

# kube's order of built-in groups in /apis; groups not listed follow alphabetically
_GROUP_ORDER = (
    "apiregistration.k8s.io",
    "apps",
    "events.k8s.io",
    "authentication.k8s.io",
    "authorization.k8s.io",
    "autoscaling",
    "batch",
    "certificates.k8s.io",
    "networking.k8s.io",
    "policy",
    "rbac.authorization.k8s.io",
    "storage.k8s.io",
    "admissionregistration.k8s.io",
    "apiextensions.k8s.io",
    "scheduling.k8s.io",
    "coordination.k8s.io",
    "node.k8s.io",
    "discovery.k8s.io",
    "flowcontrol.apiserver.k8s.io",
    "metrics.k8s.io",
)

_VERSION_RE = re.compile(r"^v(\d+)(?:(alpha|beta)(\d+))?$")


def version_sort_key(version: str) -> tuple[int, int, int, str]:
    """Kube's version priority: GA before beta before alpha, then higher numbers first; anything not
    shaped like a Kubernetes version last, alphabetically."""
    m = _VERSION_RE.match(version)
    if not m:
        return (3, 0, 0, version)
    major = int(m.group(1))
    stage = {None: 0, "beta": 1, "alpha": 2}[m.group(2)]
    minor = int(m.group(3) or 0)
    return (stage, -major, -minor, "")


def _group_sort_key(group: str) -> tuple[int, str]:
    try:
        return (_GROUP_ORDER.index(group), "")
    except ValueError:
        return (len(_GROUP_ORDER), group)


def _storage_version_hash(r: Resource) -> str:
    """An opaque, stable token of the storage version (kube: 8 bytes of a SHA-256, base64)."""
    digest = hashlib.sha256(f"{r.group}/{r.version}/{r.kind}".encode()).digest()[:8]
    return base64.b64encode(digest).decode()


def _api_resource(r: Resource) -> dict[str, Any]:
    d: dict[str, Any] = {
        "name": r.plural,
        "singularName": r.singular,
        "namespaced": r.namespaced,
        "kind": r.kind,
        "verbs": list(r.verbs),
    }
    if r.short_names:
        d["shortNames"] = list(r.short_names)
    if r.categories:
        d["categories"] = list(r.categories)
    d["storageVersionHash"] = _storage_version_hash(r)
    return d


def _api_subresources(r: Resource) -> list[dict[str, Any]]:
    out = []
    for s in r.subresources:
        d: dict[str, Any] = {"name": f"{r.plural}/{s.name}", "singularName": "", "namespaced": r.namespaced}
        if s.group and s.group != r.group:
            d["group"] = s.group
        if s.version and (s.version != r.version or (s.group and s.group != r.group)):
            d["version"] = s.version
        d["kind"] = s.kind
        d["verbs"] = list(s.verbs)
        out.append(d)
    return out


def _aggregated_resource(r: Resource) -> dict[str, Any]:
    d: dict[str, Any] = {
        "resource": r.plural,
        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
        "scope": "Namespaced" if r.namespaced else "Cluster",
        "singularResource": r.singular,
        "verbs": list(r.verbs),
    }
    if r.short_names:
        d["shortNames"] = list(r.short_names)
    if r.categories:
        d["categories"] = list(r.categories)
    if r.subresources:
        d["subresources"] = [
            {
                "subresource": s.name,
                "responseKind": {
                    "group": s.group if s.group else r.group,
                    "version": s.version if s.version else r.version,
                    "kind": s.kind,
                },
                "verbs": list(s.verbs),
            }
            for s in r.subresources
        ]
    return d


class _Doc:
    """An encoded document and its validator."""

    __slots__ = ("body", "etag", "hash")

    def __init__(self, obj: Any) -> None:
        self.body = json.dumps(obj, separators=(",", ":")).encode()
        self.hash = hashlib.sha512(self.body).hexdigest().upper()
        self.etag = f'"{self.hash[:32]}"'


def _not_modified(request: web.BaseRequest, etag: str) -> bool:
    inm = request.headers.get("If-None-Match", "")
    return bool(inm) and any(tag.strip() in (etag, "*") for tag in inm.split(","))


def _doc_response(request: web.BaseRequest, doc: _Doc, *, content_type: str = JSON,
                  extra: dict[str, str] | None = None) -> web.Response:
    headers = {"ETag": doc.etag, "Vary": "Accept", "Cache-Control": "no-cache, private", **(extra or {})}
    if _not_modified(request, doc.etag):
        return web.Response(status=304, headers=headers)
    headers["Content-Type"] = content_type
    return web.Response(body=doc.body, headers=headers)


def _aggregated_version(accept: str) -> str | None:
    """The apidiscovery version the client prefers over a legacy answer, if any."""
    for r in parse_accept(accept):
        p = r.params
        if r.mime == JSON and p.get("g") == _DISCOVERY_GROUP and p.get("as") == _DISCOVERY_KIND:
            if p.get("v") in _DISCOVERY_VERSIONS:
                return p["v"]
            continue
        if r.mime in (JSON, "*/*", "application/*") and not p.get("as") and not p.get("g"):
            return None
    negotiate(accept, None)  # 406 when nothing acceptable at all
    return None


class Discovery:
    """Serves discovery and OpenAPI for one registry. Call `invalidate` when served resources change."""

    def __init__(self, registry: Registry, *, version_info: dict[str, str] | None = None) -> None:
        self._registry = registry
        self._version = _Doc(version_info or VERSION_INFO)
        self._docs: dict[str, _Doc] = {}

    def invalidate(self) -> None:
        self._docs.clear()

    # -- the model -------------------------------------------------------------------------------

    def _resources(self) -> list[Resource]:
        return [s.resource for s in self._registry.stores()]

    def groups(self) -> dict[str, list[str]]:
        """group -> served versions, preferred first; groups in kube's order (core "" first)."""
        acc: dict[str, set[str]] = {}
        for r in self._resources():
            acc.setdefault(r.group, set()).add(r.version)
        ordered = sorted(acc, key=lambda g: (-1, "") if g == "" else _group_sort_key(g))
        return {g: sorted(acc[g], key=version_sort_key) for g in ordered}

    def _resources_of(self, group: str, version: str) -> list[Resource]:
        rs = [r for r in self._resources() if r.group == group and r.version == version]
        return sorted(rs, key=lambda r: r.plural)

    def _cached(self, key: str, build: Callable[[], Any]) -> _Doc:
        doc = self._docs.get(key)
        if doc is None:
            doc = self._docs[key] = _Doc(build())
        return doc

    # -- documents -------------------------------------------------------------------------------

    def _group_doc(self, group: str, versions: list[str]) -> dict[str, Any]:
        gvs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {"name": group, "versions": gvs, "preferredVersion": gvs[0]}

    def _resource_list(self, group: str, version: str) -> dict[str, Any]:
        resources: list[dict[str, Any]] = []
        for r in self._resources_of(group, version):
            resources.append(_api_resource(r))
            resources.extend(_api_subresources(r))
        gv = f"{group}/{version}" if group else version
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}

    def _aggregated(self, groups: Iterable[str], dv: str) -> dict[str, Any]:
        items = []
        all_groups = self.groups()
        for g in groups:
            versions = [
                {
                    "version": v,
                    "resources": [_aggregated_resource(r) for r in self._resources_of(g, v)],
                    "freshness": "Current",
                }
                for v in all_groups.get(g, [])
            ]
            meta: dict[str, Any] = {"creationTimestamp": None}
            if g:
                meta = {"name": g, "creationTimestamp": None}
            items.append({"metadata": meta, "versions": versions})
        return {
            "kind": _DISCOVERY_KIND,
            "apiVersion": f"{_DISCOVERY_GROUP}/{dv}",
            "metadata": {},
            "items": items,
        }

    # -- handlers --------------------------------------------------------------------------------

    async def version(self, request: web.Request) -> web.Response:
        return _doc_response(request, self._version)

    async def root(self, request: web.Request) -> web.Response:
        paths = ["/api", "/api/v1", "/apis"]
        for g, versions in self.groups().items():
            if g:
                paths.append(f"/apis/{g}")
                paths.extend(f"/apis/{g}/{v}" for v in versions)
        paths += ["/healthz", "/livez", "/openapi/v2", "/openapi/v3", "/readyz", "/version"]
        return _doc_response(request, _Doc({"paths": paths}))

    async def api(self, request: web.Request) -> web.Response:
        dv = _aggregated_version(request.headers.get("Accept", ""))
        if dv is not None:
            doc = self._cached(f"agg-api-{dv}", lambda: self._aggregated([""] if "" in self.groups() else [], dv))
            return _doc_response(request, doc, content_type=_aggregated_content_type(dv))
        sock = request.transport.get_extra_info("sockname") if request.transport else None
        address = _host_port(sock) if sock else (request.host or "")
        body = {
            "kind": "APIVersions",
            "versions": self.groups().get("", ["v1"]),
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}],
        }
        return _doc_response(request, _Doc(body))

    async def apis(self, request: web.Request) -> web.Response:
        dv = _aggregated_version(request.headers.get("Accept", ""))
        if dv is not None:
            doc = self._cached(f"agg-apis-{dv}", lambda: self._aggregated([g for g in self.groups() if g], dv))
            return _doc_response(request, doc, content_type=_aggregated_content_type(dv))
        doc = self._cached(
            "apis",
            lambda: {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [self._group_doc(g, vs) for g, vs in self.groups().items() if g],
            },
        )
        return _doc_response(request, doc)

    async def api_group(self, request: web.Request, group: str) -> web.Response:
        negotiate(request.headers.get("Accept", ""), None)
        versions = self.groups().get(group) if group else None
        if not versions:
            raise NotFoundError(NOT_FOUND_MESSAGE)
        doc = self._cached(
            f"group-{group}", lambda: {"kind": "APIGroup", "apiVersion": "v1", **self._group_doc(group, versions)}
        )
        return _doc_response(request, doc)

    async def resource_list(self, request: web.Request, group: str, version: str) -> web.Response:
        negotiate(request.headers.get("Accept", ""), None)
        if version not in self.groups().get(group, []):
            raise NotFoundError(NOT_FOUND_MESSAGE)
        doc = self._cached(f"gv-{group}/{version}", lambda: self._resource_list(group, version))
        return _doc_response(request, doc)

    # -- OpenAPI ---------------------------------------------------------------------------------
    # The documents and their hashes come computed and cached from `podvisor.schema.openapi`
    # (imported on first use: building them is not needed to serve objects).

    async def openapi_v2(self, request: web.Request) -> web.Response:
        _json_only(request)
        from podvisor.schema import openapi

        return _openapi_response(request, openapi.openapi_v2_document())

    async def openapi_v3_index(self, request: web.Request) -> web.Response:
        _json_only(request)
        from podvisor.schema import openapi

        return _openapi_response(request, openapi.openapi_v3_index_document())

    async def openapi_v3(self, request: web.Request, path: str) -> web.Response:
        _json_only(request)
        from podvisor.schema import openapi

        path = path.strip("/")
        doc = openapi.openapi_v3_document(path)
        if doc is None:
            raise NotFoundError(NOT_FOUND_MESSAGE)
        wanted = request.query.get("hash")
        extra: dict[str, str] = {}
        if wanted is not None:
            if wanted != doc.hash:
                raise web.HTTPMovedPermanently(f"/openapi/v3/{path}?hash={doc.hash}")
            expires = datetime.now(UTC) + timedelta(days=365)
            extra = {"Cache-Control": "public, immutable", "Expires": format_datetime(expires, usegmt=True)}
        return _openapi_response(request, doc, extra=extra)


def _openapi_response(request: web.BaseRequest, doc: Any, *, extra: dict[str, str] | None = None) -> web.Response:
    """``doc`` is a `podvisor.schema.openapi.OpenAPIDocument` (bytes, hash, etag)."""
    headers = {"ETag": doc.etag, "Vary": "Accept", "Cache-Control": "no-cache, private", **(extra or {})}
    if _not_modified(request, doc.etag):
        return web.Response(status=304, headers=headers)
    headers["Content-Type"] = JSON
    return web.Response(body=doc.data, headers=headers)


def _aggregated_content_type(dv: str) -> str:
    return f"{JSON};g={_DISCOVERY_GROUP};v={dv};as={_DISCOVERY_KIND}"


def _json_only(request: web.BaseRequest) -> None:
    """OpenAPI is served as JSON only; a client that accepts nothing but protobuf gets 406."""
    accept = request.headers.get("Accept", "")
    if not accept.strip():
        return
    for r in parse_accept(accept):
        if r.mime in (JSON, "*/*", "application/*"):
            return
    raise NotAcceptableError("only the following media types are accepted: application/json")


def _host_port(sock: Any) -> str:
    host, port = sock[0], sock[1]
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"
