"""One strategy per resource family: what makes each served resource differ inside the generic store.

`strategy_for` picks the strategy of a `Resource`; resources without a dedicated one get the generic
`Strategy` (DNS-subdomain names, generation when there is a spec, status kept apart when there is a
status subresource), so a resource added to the schema is served sensibly before it gets its own rules.
"""

from __future__ import annotations

from collections.abc import Callable

from podvisor.apiserver.strategies.allocator import RangeAllocator, ip_range, port_range
from podvisor.apiserver.strategies.apps import DeploymentStrategy, ReplicaSetStrategy
from podvisor.apiserver.strategies.base import Context, Strategy, SubresourceHandler
from podvisor.apiserver.strategies.batch import JobStrategy
from podvisor.apiserver.strategies.core import (
    ConfigMapStrategy,
    EndpointsStrategy,
    NamespaceStrategy,
    NodeStrategy,
    SecretStrategy,
    ServiceAccountStrategy,
)
from podvisor.apiserver.strategies.events import EventStrategy, EventsV1Strategy
from podvisor.apiserver.strategies.misc import (
    Authorizer,
    EndpointSliceStrategy,
    LeaseStrategy,
    RuntimeClassStrategy,
    SelfSubjectAccessReviewStrategy,
    allow_all,
)
from podvisor.apiserver.strategies.pods import PodStrategy
from podvisor.apiserver.strategies.services import ServiceStrategy
from podvisor.schema.model import Resource

__all__ = [
    "Context",
    "Strategy",
    "SubresourceHandler",
    "StrategyConfig",
    "strategy_for",
    "ip_range",
    "port_range",
    "RangeAllocator",
    "Authorizer",
    "allow_all",
]

_SIMPLE: dict[tuple[str, str], Callable[[Resource], Strategy]] = {
    ("", "namespaces"): NamespaceStrategy,
    ("", "pods"): PodStrategy,
    ("", "configmaps"): ConfigMapStrategy,
    ("", "secrets"): SecretStrategy,
    ("", "serviceaccounts"): ServiceAccountStrategy,
    ("", "endpoints"): EndpointsStrategy,
    ("", "nodes"): NodeStrategy,
    ("", "events"): EventStrategy,
    ("events.k8s.io", "events"): EventsV1Strategy,
    ("coordination.k8s.io", "leases"): LeaseStrategy,
    ("node.k8s.io", "runtimeclasses"): RuntimeClassStrategy,
    ("discovery.k8s.io", "endpointslices"): EndpointSliceStrategy,
    ("apps", "deployments"): DeploymentStrategy,
    ("apps", "replicasets"): ReplicaSetStrategy,
    ("batch", "jobs"): JobStrategy,
}


class StrategyConfig:
    """What some strategies need beyond their resource: the Service allocators and the authorizer."""

    def __init__(
        self,
        *,
        service_ips: RangeAllocator,
        node_ports: RangeAllocator,
        authorizer: Authorizer = allow_all,
    ) -> None:
        self.service_ips = service_ips
        self.node_ports = node_ports
        self.authorizer = authorizer


def strategy_for(resource: Resource, config: StrategyConfig) -> Strategy:
    key = (resource.group, resource.plural)
    if key == ("", "services"):
        return ServiceStrategy(resource, ips=config.service_ips, ports=config.node_ports)
    if key == ("authorization.k8s.io", "selfsubjectaccessreviews"):
        return SelfSubjectAccessReviewStrategy(resource, authorizer=config.authorizer)
    factory = _SIMPLE.get(key)
    return factory(resource) if factory is not None else Strategy(resource)
