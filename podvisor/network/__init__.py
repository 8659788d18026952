"""The pod network of a host: a Podvisor-owned namespace with a bridge, a tap per pod VM, IPAM.

Safety rule for everything here: pod addresses exist only inside network namespaces Podvisor creates.
Nothing is routed or NATed out of the machine, and the root namespace gets no pod address or route.

Entry points: `HostNetwork` (one per host: ``ensure``, ``attach_pod``, ``detach_pod``,
``retain_pods``, ``teardown``), `TapDevice` (what hostd gives QEMU), `GuestNetConfig` (what the guest
agent configures), `IPAM`.
"""

from podvisor.network.guest import DEFAULT_MTU, DNSConfig, GuestNetConfig
from podvisor.network.hostnet import BRIDGE, HostNetwork, PodInterface, host_netns_name
from podvisor.network.ipam import IPAM, IPAMError, IPAMExhausted
from podvisor.network.iproute import NetworkError
from podvisor.network.tap import TapDevice, guest_mac, open_tap_fd, tap_name

__all__ = [
    "HostNetwork", "PodInterface", "host_netns_name", "BRIDGE",
    "TapDevice", "tap_name", "guest_mac", "open_tap_fd",
    "GuestNetConfig", "DNSConfig", "DEFAULT_MTU",
    "IPAM", "IPAMError", "IPAMExhausted",
    "NetworkError",
]
