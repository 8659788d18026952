"""Where Services and multi-host pod networking plug in later (nothing here is built yet).

A `HostNetwork` runs its extensions at the end of `HostNetwork.ensure` (after namespace, bridge and
gateway exist) and at the start of `HostNetwork.teardown`, in reverse order. Extensions work only
inside Podvisor's namespaces (`HostNetwork.netns`, with `podvisor.network.iproute.ip` or
`podvisor.network.netns.run_in_netns`); none may add routes, addresses or NAT rules in the root
namespace or anything that leads traffic off the machine.

Planned extensions:

* ``HostRoutes`` — pods on different hosts reach each other: a veth pair from each host's namespace to
  one shared Podvisor "fabric" namespace (never the root one), ``ip_forward=1`` inside the host
  namespaces, and one route per peer host's podCIDR via that peer's veth address. The peer list comes
  from the Nodes' ``spec.podCIDR`` (``set_peers`` below), re-synced when nodes come and go.
* ``ServiceProxy`` — kube-proxy's job: per ClusterIP/NodePort Service, nftables DNAT rules inside each
  host namespace from the Service's address:port to its ready Endpoints (EndpointSlices), with
  hairpin on the bridge (``bridge hairpin`` / ``br_netfilter``-free masquerade inside the namespace).
  Fed by an informer on Services and EndpointSlices (``sync``).
* Cluster DNS then fills `podvisor.network.guest.DNSConfig` with the DNS Service's ClusterIP.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from podvisor.network.hostnet import HostNetwork

__all__ = ["NetworkExtension", "PeerHost", "HostRoutes", "ServiceProxy"]


class NetworkExtension(Protocol):
    """Something that adds to a host's pod network; both methods must be idempotent."""

    async def ensure(self, net: HostNetwork) -> None: ...

    async def teardown(self, net: HostNetwork) -> None: ...


@dataclass(frozen=True)
class PeerHost:
    """Another host's pod network, as ``HostRoutes`` will need it."""

    host_name: str
    pod_cidr: str


class HostRoutes(NetworkExtension, Protocol):
    """Routes from this host's namespace to the other hosts' podCIDRs (not implemented yet)."""

    async def set_peers(self, peers: Sequence[PeerHost]) -> None: ...


class ServiceProxy(NetworkExtension, Protocol):
    """kube-proxy-like DNAT for Services inside the host namespace (not implemented yet)."""

    async def sync(self, services: Sequence[Mapping[str, Any]],
                   endpoint_slices: Sequence[Mapping[str, Any]]) -> None: ...
