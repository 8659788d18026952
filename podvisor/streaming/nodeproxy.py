"""The API server's ``StreamingBackend``: pods/log, exec, attach and portforward relayed to the pod's
node agent, as kube-apiserver relays them to the kubelet.

For each request it resolves the container as kube does (the one named, else the pod's only
container, else 400 naming the choices), finds the node (``spec.nodeName``; 400 when unscheduled),
builds the node agent's URL with the kubelet's paths (below) and the client's query unchanged, and
relays with `proxy_upgrade` / `proxy_log`. Log options are checked first (422 with kube's wording).

Node agent paths (the spherelet serves these; they are the kubelet's)::

    GET      /containerLogs/{namespace}/{pod}/{container}?follow=..&tailLines=..
    GET|POST /exec/{namespace}/{pod}/{uid}/{container}?command=..&stdin=..&stdout=..&stderr=..&tty=..
    GET|POST /attach/{namespace}/{pod}/{uid}/{container}?stdin=..&stdout=..&stderr=..&tty=..
    GET|POST /portForward/{namespace}/{pod}/{uid}[?ports=..]

The node's address is that of its Node object: the first InternalIP (else ExternalIP, else Hostname)
and ``status.daemonEndpoints.kubeletEndpoint.Port``.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from aiohttp import web

from podvisor.apiserver.errors import BadRequestError, Cause, InternalError, InvalidError, NotFoundError
from podvisor.streaming.logs import LogOptions, LogOptionsError
from podvisor.streaming.proxy import UpstreamError, proxy_log, proxy_upgrade

__all__ = ["NodeProxyBackend", "node_base_url", "NODE_PATHS", "DEFAULT_NODE_PORT"]

DEFAULT_NODE_PORT = 10250
NODE_PATHS = {
    "log": "/containerLogs/{namespace}/{pod}/{container}",
    "exec": "/exec/{namespace}/{pod}/{uid}/{container}",
    "attach": "/attach/{namespace}/{pod}/{uid}/{container}",
    "portforward": "/portForward/{namespace}/{pod}/{uid}",
}
"""aiohttp route patterns of the node agent, by subresource."""

GetNode = Callable[[str], Awaitable[dict[str, Any] | None]]


def node_base_url(node: dict[str, Any], *, scheme: str = "https") -> str:
    """``https://<address>:<port>`` of a Node's agent, from its status."""
    status = node.get("status") or {}
    addresses = status.get("addresses") or []
    host = ""
    for kind in ("InternalIP", "ExternalIP", "Hostname"):
        host = next((a.get("address", "") for a in addresses if a.get("type") == kind and a.get("address")), "")
        if host:
            break
    if not host:
        raise InternalError(f'node "{node.get("metadata", {}).get("name", "")}" has no address')
    port = (((status.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}).get("Port")) or DEFAULT_NODE_PORT
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


def _container(pod: dict[str, Any], requested: str) -> str:
    name = pod.get("metadata", {}).get("name", "")
    spec = pod.get("spec") or {}
    containers = [c.get("name", "") for c in spec.get("containers") or []]
    init = [c.get("name", "") for c in spec.get("initContainers") or []]
    ephemeral = [c.get("name", "") for c in spec.get("ephemeralContainers") or []]
    if not requested:
        if len(containers) == 1:
            return containers[0]
        message = f"a container name must be specified for pod {name}, choose one of: [{' '.join(containers)}]"
        if init:
            message += f" or one of the init containers: [{' '.join(init)}]"
        raise BadRequestError(message)
    if requested not in (*containers, *init, *ephemeral):
        raise BadRequestError(f"container {requested} is not valid for pod {name}")
    return requested


class NodeProxyBackend:
    """Implements ``podvisor.apiserver.handlers.StreamingBackend`` by relaying to node agents.

    ``get_node(name)`` returns the Node object (or None); ``ssl_context`` carries the API server's
    client certificate for the node agents and the CA that signs their serving certificates."""

    def __init__(self, *, get_node: GetNode, ssl_context: ssl.SSLContext | None, scheme: str = "https",
                 connect_timeout: float = 10.0) -> None:
        self._get_node = get_node
        self._ssl = ssl_context
        self._scheme = scheme
        self._timeout = connect_timeout

    async def _url(self, pod: dict[str, Any], kind: str, request: web.Request, container: str) -> str:
        meta = pod.get("metadata") or {}
        node_name = (pod.get("spec") or {}).get("nodeName") or ""
        if not node_name:
            raise BadRequestError(f"pod {meta.get('name', '')} does not have a host assigned")
        node = await self._get_node(node_name)
        if node is None:
            raise NotFoundError.of("nodes", node_name)
        path = NODE_PATHS[kind].format(
            namespace=quote(meta.get("namespace", ""), safe=""), pod=quote(meta.get("name", ""), safe=""),
            uid=quote(meta.get("uid", ""), safe=""), container=quote(container, safe=""))
        query = request.rel_url.raw_query_string  # still percent-encoded: "&" inside a value stays one value
        return node_base_url(node, scheme=self._scheme) + path + (f"?{query}" if query else "")

    async def log(self, pod: dict[str, Any], request: web.Request, user: object) -> web.StreamResponse:
        try:
            options = LogOptions.from_query(request.query)
        except LogOptionsError as exc:
            name = pod.get("metadata", {}).get("name", "")
            detail = exc.problems[0][2] if len(exc.problems) == 1 else str(exc)
            raise InvalidError(f'PodLogOptions "{name}" is invalid: {detail}', name=name, kind="PodLogOptions",
                               causes=[Cause(t, m, f) for f, t, m in exc.problems]) from None
        url = await self._url(pod, "log", request, _container(pod, options.container))
        try:
            return await proxy_log(request, url, ssl_context=self._ssl, connect_timeout=self._timeout)
        except UpstreamError as exc:
            raise InternalError(str(exc)) from None

    async def _upgrade(self, kind: str, pod: dict[str, Any], request: web.Request,
                       container: str | None) -> web.StreamResponse:
        url = await self._url(pod, kind, request, container or "")
        try:
            return await proxy_upgrade(request, url, ssl_context=self._ssl, connect_timeout=self._timeout)
        except UpstreamError as exc:
            raise InternalError(str(exc)) from None

    async def exec(self, pod: dict[str, Any], request: web.Request, user: object) -> web.StreamResponse:
        return await self._upgrade("exec", pod, request, _container(pod, request.query.get("container", "")))

    async def attach(self, pod: dict[str, Any], request: web.Request, user: object) -> web.StreamResponse:
        return await self._upgrade("attach", pod, request, _container(pod, request.query.get("container", "")))

    async def portforward(self, pod: dict[str, Any], request: web.Request, user: object) -> web.StreamResponse:
        return await self._upgrade("portforward", pod, request, None)
