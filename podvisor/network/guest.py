"""What a pod VM needs to configure its own network: one NIC, one address, one default route.

The node agent sends this to the guest agent (`to_interface_spec` is the ``interfaces[]`` entry of the
guest protocol's ``SetupSandbox``; `resolv_conf` its ``resolvConf``). The guest finds the NIC by its
MAC, names it ``eth0``, sets MTU, address and the default route via the bridge's gateway address.
`ip_commands` is the same configuration as busybox/iproute2 ``ip`` commands, for guests (and test
stand-ins) that configure themselves with the ``ip`` tool.

DNS is a placeholder until cluster DNS exists (it comes with Services): with no nameserver we send no
resolv.conf and the guest keeps its own.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from podvisor.crx.protocol import InterfaceSpec

__all__ = ["GuestNetConfig", "DNSConfig", "DEFAULT_MTU", "GUEST_INTERFACE"]

DEFAULT_MTU = 1500
GUEST_INTERFACE = "eth0"


@dataclass(frozen=True)
class DNSConfig:
    """The pod's resolv.conf (Kubernetes ``dnsConfig`` shape); empty until cluster DNS exists."""

    nameservers: tuple[str, ...] = ()
    searches: tuple[str, ...] = ()
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class GuestNetConfig:
    """The guest's side of a pod NIC."""

    mac: str
    address: ipaddress.IPv4Interface      # the pod IP with the podCIDR's prefix: 10.88.0.5/24
    gateway: ipaddress.IPv4Address        # the bridge's address on this host
    mtu: int = DEFAULT_MTU
    interface: str = GUEST_INTERFACE
    dns: DNSConfig = field(default_factory=DNSConfig)

    @property
    def ip(self) -> ipaddress.IPv4Address:
        return self.address.ip

    @property
    def prefixlen(self) -> int:
        return self.address.network.prefixlen

    def to_interface_spec(self) -> InterfaceSpec:
        """The guest protocol's ``SetupSandbox.interfaces[]`` entry."""
        return {"mac": self.mac, "name": self.interface, "addresses": [str(self.address)],
                "gateway": str(self.gateway), "mtu": self.mtu}

    def resolv_conf(self) -> str | None:
        """resolv.conf text, or None while there is no nameserver to point at."""
        if not self.dns.nameservers:
            return None
        lines = [f"nameserver {ns}" for ns in self.dns.nameservers]
        if self.dns.searches:
            lines.append("search " + " ".join(self.dns.searches))
        if self.dns.options:
            lines.append("options " + " ".join(self.dns.options))
        return "\n".join(lines) + "\n"

    def ip_commands(self, device: str | None = None) -> list[list[str]]:
        """The configuration as ``ip`` argv lists, run in the guest on ``device`` (default: the interface)."""
        dev = device or self.interface
        return [
            ["ip", "link", "set", "dev", dev, "address", self.mac, "mtu", str(self.mtu)],
            ["ip", "addr", "add", str(self.address), "dev", dev],
            ["ip", "link", "set", "dev", dev, "up"],
            ["ip", "route", "add", "default", "via", str(self.gateway), "dev", dev],
        ]

    def to_json(self) -> dict[str, object]:
        return {"mac": self.mac, "address": str(self.address), "gateway": str(self.gateway),
                "mtu": self.mtu, "interface": self.interface,
                "dns": {"nameservers": list(self.dns.nameservers), "searches": list(self.dns.searches),
                        "options": list(self.dns.options)}}
