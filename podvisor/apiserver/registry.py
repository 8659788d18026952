"""The resource registry: one `Store` per served resource, looked up the way URLs name them.

`build_registry` wires every resource of the schema to its strategy over one `Storage` (the SQLite or
etcd engine, usually behind the watch cache), with the admission plugins, the Service allocators and
the authorizer. `bootstrap` makes what every cluster has and clients take for granted: the ``default``,
``kube-system``, ``kube-public`` and ``kube-node-lease`` namespaces and the ``kubernetes`` Service (its
first cluster IP, port 443 to the API server). It only creates what is missing, so it runs on every
start and never undoes a user's change.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import Any

from podvisor.apiserver import errors as api
from podvisor.apiserver.meta import Clock, utc_now
from podvisor.apiserver.rest import RequestOptions, UserInfo
from podvisor.apiserver.store import AdmissionPlugin, Store
from podvisor.apiserver.strategies import Strategy, StrategyConfig, ip_range, port_range, strategy_for
from podvisor.apiserver.strategies.admission import (
    CRX_POD_OVERHEAD,
    CRX_RUNTIME_CLASS,
    default_runtime_class,
    deny_host_access,
)
from podvisor.apiserver.strategies.core import ServiceAccountStrategy
from podvisor.apiserver.strategies.misc import Authorizer, allow_all
from podvisor.apiserver.strategies.sa_tokens import TokenIssuer
from podvisor.apiserver.strategies.token_request import TokenRequestHandler
from podvisor.schema.model import Resource
from podvisor.storage.interface import Storage

__all__ = [
    "ResourceRegistry",
    "build_registry",
    "bootstrap",
    "DEFAULT_SERVICE_CIDR",
    "DEFAULT_NODE_PORTS",
    "SYSTEM_NAMESPACES",
    "DEFAULT_ADMISSION",
]

DEFAULT_SERVICE_CIDR = "10.96.0.0/12"
DEFAULT_NODE_PORTS = (30000, 32767)
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
DEFAULT_ADMISSION: tuple[AdmissionPlugin, ...] = (deny_host_access, default_runtime_class)
_SYSTEM_USER = UserInfo(name="system:apiserver", groups=("system:masters",))


class ResourceRegistry:
    """Implements `podvisor.apiserver.rest.Registry`."""

    def __init__(self, stores: Iterable[Store], *, service_cidr: str = DEFAULT_SERVICE_CIDR) -> None:
        self._stores = list(stores)
        self._by_url = {(s.resource.group, s.resource.version, s.resource.plural): s for s in self._stores}
        self.service_cidr = service_cidr

    def lookup(self, group: str, version: str, plural: str) -> Store | None:
        return self._by_url.get((group, version, plural))

    def stores(self) -> list[Store]:
        return list(self._stores)

    def store(self, group: str, plural: str) -> Store:
        """The store of ``group``/``plural`` in whatever version is served; KeyError if none."""
        for s in self._stores:
            if s.resource.group == group and s.resource.plural == plural:
                return s
        raise KeyError(f"{plural}.{group}" if group else plural)


async def build_registry(
    storage: Storage,
    *,
    resources: Sequence[Resource] | None = None,
    admission: Sequence[AdmissionPlugin] = DEFAULT_ADMISSION,
    service_cidr: str = DEFAULT_SERVICE_CIDR,
    node_ports: tuple[int, int] = DEFAULT_NODE_PORTS,
    authorizer: Authorizer = allow_all,
    clock: Clock = utc_now,
    bookmark_interval: float = 60.0,
    indexed_fields: frozenset[str] = frozenset(),
    token_issuer: TokenIssuer | None = None,
) -> ResourceRegistry:
    """A store for every resource (the schema's by default). ``indexed_fields`` names the field
    selectors the storage's watch cache indexes (e.g. ``{"spec.nodeName"}``), so watches on them are
    narrowed by the cache. With ``token_issuer`` (the cluster's service-account signing key),
    ``serviceaccounts/<name>/token`` issues tokens; without it that subresource answers 404."""
    if resources is None:
        from podvisor.schema import resources as schema_resources

        resources = schema_resources()
    config = StrategyConfig(
        service_ips=ip_range(storage, service_cidr),
        node_ports=port_range(storage, *node_ports),
        authorizer=authorizer,
    )

    def core_store(plural: str) -> Store:
        return registry.store("", plural)  # bound objects of a TokenRequest, once the registry exists

    def strategy(r: Resource) -> Strategy:
        if token_issuer is not None and (r.group, r.plural) == ("", "serviceaccounts"):
            return ServiceAccountStrategy(r, tokens=TokenRequestHandler(token_issuer, objects=core_store))
        return strategy_for(r, config)

    stores = [
        Store(
            r,
            strategy(r),
            storage,
            admission=admission,
            clock=clock,
            bookmark_interval=bookmark_interval,
            indexed_fields=indexed_fields,
        )
        for r in resources
    ]
    registry = ResourceRegistry(stores, service_cidr=service_cidr)
    return registry


async def _create_missing(store: Store, namespace: str, obj: dict[str, Any]) -> None:
    opts = RequestOptions(user=_SYSTEM_USER, field_manager="kube-apiserver")
    name = obj["metadata"]["name"]
    try:
        await store.get(namespace, name)
        return
    except api.NotFoundError:
        pass
    try:
        await store.create(namespace, obj, opts)
    except api.AlreadyExistsError:
        pass


async def bootstrap(registry: ResourceRegistry, *, api_port: int = 6443, api_address: str | None = None) -> None:
    """Create the system namespaces and the ``kubernetes`` Service if missing. With ``api_address``
    (an address pods can reach the API server at), also its Endpoints and EndpointSlice."""
    namespaces = registry.store("", "namespaces")
    for ns in SYSTEM_NAMESPACES:
        await _create_missing(namespaces, "", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    await _create_missing(registry.store("node.k8s.io", "runtimeclasses"), "", {
        "apiVersion": "node.k8s.io/v1",
        "kind": "RuntimeClass",
        "metadata": {"name": CRX_RUNTIME_CLASS, "annotations": {"podvisor.io/default": "true"}},
        "handler": CRX_RUNTIME_CLASS,
        "overhead": {"podFixed": dict(CRX_POD_OVERHEAD)},
    })
    net = ipaddress.ip_network(registry.service_cidr, strict=False)
    cluster_ip = str(net.network_address + 1)
    port = {"name": "https", "port": 443, "protocol": "TCP", "targetPort": api_port}
    labels = {"component": "apiserver", "provider": "kubernetes"}
    await _create_missing(registry.store("", "services"), "default", {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": labels},
        "spec": {"type": "ClusterIP", "clusterIP": cluster_ip, "ports": [port], "sessionAffinity": "None"},
    })
    if api_address is None:
        return
    await _create_missing(registry.store("", "endpoints"), "default", {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": api_address}], "ports": [{"name": "https", "port": api_port, "protocol": "TCP"}]}],
    })
    try:
        slices = registry.store("discovery.k8s.io", "endpointslices")
    except KeyError:
        return
    await _create_missing(slices, "default", {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"kubernetes.io/service-name": "kubernetes"}},
        "addressType": "IPv6" if ":" in api_address else "IPv4",
        "endpoints": [{"addresses": [api_address], "conditions": {"ready": True}}],
        "ports": [{"name": "https", "port": api_port, "protocol": "TCP"}],
    })
