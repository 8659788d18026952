"""One host's pod network: a Podvisor-owned network namespace with a bridge, a tap per pod VM, IPAM.

Layout on a host named ``h1`` with podCIDR ``10.88.0.0/24``::

    namespace pv-h1 (made by Podvisor; nothing in it leads out of the machine)
      pvbr0   bridge, 10.88.0.1/24 (the pods' gateway), fixed MAC, STP off, no forward delay
      pvt…    one persistent tap per pod VM, a port of pvbr0; QEMU holds its other end
      lo

Pods on one host reach each other over the bridge at layer 2; nothing is routed, nothing NATed, and
the root namespace gets no address, route or rule. Routes to other hosts and Services come later as
extensions (`podvisor.network.seams`).

Everything is level-triggered and idempotent, so a restarted node agent simply calls `ensure` again:
it finds the namespace (or replaces a stale mount point left by a crash), the bridge and its address,
and re-enslaves the taps of running pods. `attach_pod` / `detach_pod` are what the spherelet calls per
pod; `retain_pods` removes taps and addresses of pods that no longer exist.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from podvisor.network.guest import DEFAULT_MTU, DNSConfig, GuestNetConfig
from podvisor.network.ipam import IPAM
from podvisor.network.iproute import NetworkError, ip, ip_json
from podvisor.network.netns import is_netns_mounted, netns_path, run_in_netns
from podvisor.network.seams import NetworkExtension
from podvisor.network.tap import TAP_PREFIX, TapDevice, create_tap_in_netns, guest_mac, tap_name

__all__ = ["HostNetwork", "PodInterface", "BRIDGE", "NETNS_PREFIX", "host_netns_name"]

BRIDGE = "pvbr0"
NETNS_PREFIX = "pv-"
_NO_DEVICE = ("Cannot find device", "does not exist")


def host_netns_name(host_name: str) -> str:
    """``pv-<host>``; a name with other characters than ``[a-z0-9_.-]`` or over 40 gets a hash suffix."""
    clean = re.sub(r"[^a-z0-9_.-]+", "-", host_name.lower()).strip("-.")
    if clean == host_name and 0 < len(clean) <= 40:
        return NETNS_PREFIX + clean
    return f"{NETNS_PREFIX}{clean[:28]}-{hashlib.sha256(host_name.encode()).hexdigest()[:8]}"


def _bridge_mac(netns: str) -> str:
    # fixed, so the gateway's MAC does not change as pod taps join and leave the bridge
    return ":".join(f"{b:02x}" for b in (b"\x0e" + hashlib.sha256(netns.encode()).digest()[:5]))


def _namespace_sysctls() -> None:
    # Inside the namespace (the thread has entered it): no IPv6 on the host side, so the bridge and the
    # taps neither answer nor chatter (router/multicast solicitations); guests' frames are still
    # bridged. ip_forward stays at the new namespace's 0 until routes to other hosts exist (seams).
    for conf in ("all", "default"):
        Path(f"/proc/sys/net/ipv6/conf/{conf}/disable_ipv6").write_text("1\n")


@dataclass(frozen=True)
class PodInterface:
    """A pod's network on this host: the tap for hostd/QEMU and the configuration for the guest."""

    pod_uid: str
    tap: TapDevice
    guest: GuestNetConfig

    @property
    def pod_ip(self) -> str:
        """``status.podIP``."""
        return str(self.guest.ip)

    @property
    def pod_ips(self) -> list[dict[str, str]]:
        """``status.podIPs``."""
        return [{"ip": self.pod_ip}]


class HostNetwork:
    """The pod network of host ``host_name``; IPAM state lives in ``state_dir/ipam.json``."""

    def __init__(self, host_name: str, *, pod_cidr: str, state_dir: Path, mtu: int = DEFAULT_MTU,
                 dns: DNSConfig | None = None, extensions: Sequence[NetworkExtension] = ()) -> None:
        self.host_name = host_name
        self.netns = host_netns_name(host_name)
        self.bridge = BRIDGE
        self.mtu = mtu
        self.dns = dns or DNSConfig()
        self.ipam = IPAM(pod_cidr=pod_cidr, state_file=Path(state_dir) / "ipam.json")
        self.extensions = tuple(extensions)
        self._lock = asyncio.Lock()

    @property
    def netns_path(self) -> Path:
        return netns_path(self.netns)

    @property
    def pod_cidr(self) -> ipaddress.IPv4Network:
        return self.ipam.network

    @property
    def gateway(self) -> ipaddress.IPv4Interface:
        """The bridge's address: first usable address of the podCIDR, with its prefix."""
        return ipaddress.IPv4Interface(f"{self.ipam.gateway}/{self.ipam.prefixlen}")

    @property
    def bridge_mac(self) -> str:
        return _bridge_mac(self.netns)

    # -- the namespace and the bridge ----------------------------------------------------------

    async def ensure(self) -> None:
        """Create whatever is missing of namespace, bridge, gateway address; adopt what exists."""
        async with self._lock:
            await self._ensure_netns()
            await run_in_netns(self.netns_path, _namespace_sysctls)
            ns = self.netns
            await ip("link", "set", "lo", "up", netns=ns)
            links = {str(link.get("ifname")): link for link in await ip_json("-d", "link", "show", netns=ns)}
            bridge = links.get(BRIDGE)
            if bridge is None:
                await ip("link", "add", BRIDGE, "address", self.bridge_mac, "mtu", str(self.mtu),
                         "type", "bridge", "stp_state", "0", "forward_delay", "0", netns=ns)
            elif bridge.get("linkinfo", {}).get("info_kind") != "bridge":
                raise NetworkError(f"{BRIDGE} in namespace {ns} exists but is not a bridge")
            elif bridge.get("address") != self.bridge_mac:
                await ip("link", "set", BRIDGE, "address", self.bridge_mac, netns=ns)
            await self._ensure_gateway()
            await ip("link", "set", BRIDGE, "up", netns=ns)
            for name, link in links.items():  # taps of running pods, after a restart
                if name.startswith(TAP_PREFIX) and (link.get("master") != BRIDGE or "UP" not in link.get("flags", [])):
                    await ip("link", "set", name, "master", BRIDGE, "up", netns=ns)
        for ext in self.extensions:
            await ext.ensure(self)

    async def _ensure_netns(self) -> None:
        path = self.netns_path
        if is_netns_mounted(path):
            return
        if path.exists():  # a mount point left without its mount (crash, reboot): replace it
            path.unlink()
        await ip("netns", "add", self.netns, ok=("File exists",))
        if not is_netns_mounted(path):
            raise NetworkError(f"network namespace {self.netns} did not appear at {path}")

    async def _ensure_gateway(self) -> None:
        want = self.gateway
        present = False
        for entry in await ip_json("-4", "addr", "show", "dev", BRIDGE, netns=self.netns):
            for a in entry.get("addr_info", []):
                have = ipaddress.IPv4Interface(f"{a['local']}/{a['prefixlen']}")
                if have == want:
                    present = True
                else:  # an address of an earlier podCIDR
                    await ip("addr", "del", str(have), "dev", BRIDGE, netns=self.netns, ok=_NO_DEVICE)
        if not present:
            await ip("addr", "add", str(want), "dev", BRIDGE, netns=self.netns, ok=("File exists",))

    async def teardown(self, *, forget_addresses: bool = False) -> None:
        """Remove taps, bridge and namespace (VMs still running lose their NIC). Idempotent.

        IP assignments stay unless ``forget_addresses``: a host network torn down and set up again
        gives running pods their addresses back.
        """
        for ext in reversed(self.extensions):
            await ext.teardown(self)
        async with self._lock:
            path = self.netns_path
            if is_netns_mounted(path):
                # delete links first: a tap a QEMU still holds would otherwise keep the namespace alive
                for name in await self._tap_names():
                    await ip("link", "del", name, netns=self.netns, ok=_NO_DEVICE)
                await ip("link", "del", BRIDGE, netns=self.netns, ok=_NO_DEVICE)
                await ip("netns", "del", self.netns, ok=("No such file",))
            elif path.exists():
                path.unlink()
            if forget_addresses:
                await asyncio.to_thread(self.ipam.retain, ())

    # -- taps ----------------------------------------------------------------------------------

    async def create_tap(self, pod_uid: str) -> TapDevice:
        """The pod's tap, a port of the bridge (created if missing). `ensure` must have run."""
        name = tap_name(pod_uid)
        if not is_netns_mounted(self.netns_path):
            raise NetworkError(f"host network {self.netns} is not set up (call ensure() first)")
        async with self._lock:
            await run_in_netns(self.netns_path, lambda: create_tap_in_netns(name, bridge=BRIDGE, mtu=self.mtu))
        return TapDevice(name=name, mac=guest_mac(pod_uid), netns=self.netns)

    async def delete_tap(self, name: str) -> None:
        """Remove a tap (idempotent). A QEMU still holding it sees its NIC's link go away."""
        if not name.startswith(TAP_PREFIX):
            raise ValueError(f"{name!r} is not a Podvisor tap")
        if is_netns_mounted(self.netns_path):
            await ip("link", "del", name, netns=self.netns, ok=_NO_DEVICE)

    async def list_taps(self) -> list[str]:
        return await self._tap_names() if is_netns_mounted(self.netns_path) else []

    async def _tap_names(self) -> list[str]:
        links = await ip_json("link", "show", netns=self.netns)
        return sorted(n for link in links if (n := str(link.get("ifname", ""))).startswith(TAP_PREFIX))

    # -- pods ----------------------------------------------------------------------------------

    def guest_config(self, pod_uid: str, address: ipaddress.IPv4Address) -> GuestNetConfig:
        return GuestNetConfig(mac=guest_mac(pod_uid),
                              address=ipaddress.IPv4Interface(f"{address}/{self.ipam.prefixlen}"),
                              gateway=self.ipam.gateway, mtu=self.mtu, dns=self.dns)

    async def attach_pod(self, pod_uid: str) -> PodInterface:
        """Give the pod an address (the same one again if it has one) and its tap. Idempotent.

        Raises `podvisor.network.ipam.IPAMExhausted` when the podCIDR is full.
        """
        address = await asyncio.to_thread(self.ipam.allocate, pod_uid)
        tap = await self.create_tap(pod_uid)
        return PodInterface(pod_uid=pod_uid, tap=tap, guest=self.guest_config(pod_uid, address))

    async def pod_interface(self, pod_uid: str) -> PodInterface | None:
        """The pod's interface if it has an address (for a restarted agent adopting a running VM)."""
        address = await asyncio.to_thread(self.ipam.get, pod_uid)
        if address is None:
            return None
        tap = TapDevice(name=tap_name(pod_uid), mac=guest_mac(pod_uid), netns=self.netns)
        return PodInterface(pod_uid=pod_uid, tap=tap, guest=self.guest_config(pod_uid, address))

    async def detach_pod(self, pod_uid: str) -> None:
        """Delete the pod's tap and release its address. Idempotent."""
        await self.delete_tap(tap_name(pod_uid))
        await asyncio.to_thread(self.ipam.release, pod_uid)

    async def retain_pods(self, pod_uids: Iterable[str]) -> list[str]:
        """Remove taps and addresses of every pod not in ``pod_uids``; returns the UIDs whose address was freed."""
        keep = set(pod_uids)
        keep_taps = {tap_name(uid) for uid in keep}
        for name in await self.list_taps():
            if name not in keep_taps:
                await self.delete_tap(name)
        released = await asyncio.to_thread(self.ipam.retain, keep)
        return sorted(released)
