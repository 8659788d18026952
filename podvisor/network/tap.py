"""Tap devices for pod VMs: created inside the host's Podvisor namespace, opened by QEMU from outside.

QEMU runs in the root network namespace, but a pod's NIC must sit on the bridge inside the Podvisor
namespace. A tap's file descriptor belongs to the namespace the device lives in *when the descriptor
is opened* (``/dev/net/tun`` binds the file to the opener's namespace and ``TUNSETIFF`` looks the
device up there), and once opened it keeps working whatever namespace its holder is in. So:

1. `create_tap_in_netns` (run inside the namespace) creates a *persistent* tap (``TUNSETPERSIST``),
   sets its MTU, enslaves it to the bridge and sets it up: the port exists and forwards before any
   QEMU starts, and survives QEMU restarts (template restores) and agent restarts.
2. Whoever starts QEMU calls `TapDevice.open_fd` (or `open_tap_fd`): a thread enters the namespace,
   opens ``/dev/net/tun`` and attaches to the tap by name; the fd goes to QEMU as
   ``-netdev tap,fd=N`` (``pass_fds``) and the opener closes its own copy once QEMU runs.
   The tap is single-queue, so a second opener gets ``EBUSY``: two QEMUs can never share a pod's NIC.

Equally valid, and what `podvisor.crx.qemu.launch_qemu(netns=...)` does today: start QEMU itself
inside the namespace (``nsenter --net``) with ``ifname=NAME``. Rejected alternative: create the tap in
the root namespace, let QEMU open it, then move it with ``ip link set NAME netns NS`` — the fd does
survive the move (measured), but the device sits in the root namespace until then, and a restarted
QEMU cannot find it by name any more.

Names and MACs are derived from the pod UID, so every component computes the same ones without asking.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

from podvisor.network.iproute import NetworkError
from podvisor.network.netns import netns_path, run_in_netns, run_in_netns_sync

__all__ = [
    "TAP_PREFIX",
    "TapDevice",
    "tap_name",
    "guest_mac",
    "open_tap_fd",
    "create_tap_in_netns",
]

TAP_PREFIX = "pvt"
IFNAMSIZ = 16

TUNSETIFF = 0x400454CA
TUNSETPERSIST = 0x400454CB
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
IFF_UP = 0x0001
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
SIOCSIFMTU = 0x8922
SIOCBRADDIF = 0x89A2


def _digest(pod_uid: str) -> bytes:
    if not pod_uid:
        raise ValueError("a pod UID is required")
    return hashlib.sha256(pod_uid.encode()).digest()


def tap_name(pod_uid: str) -> str:
    """``pvt`` + 12 hex digits of the UID's hash: 15 characters, the longest a Linux interface name may be."""
    return TAP_PREFIX + _digest(pod_uid).hex()[:12]


def guest_mac(pod_uid: str) -> str:
    """The pod VM's MAC: locally administered, unicast (``02:…``), stable for the pod's life."""
    return ":".join(f"{b:02x}" for b in (b"\x02" + _digest(pod_uid)[16:21]))


def _ifreq(name: str, fmt: str = "", *values: int) -> bytes:
    raw = name.encode()
    if len(raw) >= IFNAMSIZ:
        raise ValueError(f"interface name too long: {name!r}")
    return struct.pack("16s" + fmt, raw, *values).ljust(40, b"\0")


def _attach(name: str, *, vnet_hdr: bool) -> int:
    """Open /dev/net/tun in the current thread's namespace and attach it to tap ``name``."""
    flags = IFF_TAP | IFF_NO_PI | (IFF_VNET_HDR if vnet_hdr else 0)
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, _ifreq(name, "H", flags))
    except OSError as e:
        os.close(fd)
        if e.errno == errno.EBUSY:
            raise NetworkError(f"tap {name} is already open (a QEMU holds it)") from e
        raise NetworkError(f"open tap {name}: {e.strerror}") from e
    return fd


def create_tap_in_netns(name: str, *, bridge: str, mtu: int) -> bool:
    """Inside the target namespace: make a persistent tap ``name`` (if missing), MTU, bridge port, up.

    Returns whether the tap was created. Idempotent: an existing tap is only (re)enslaved and set up.
    """
    created = False
    try:
        socket.if_nametoindex(name)
    except OSError:
        fd = _attach(name, vnet_hdr=True)
        try:
            fcntl.ioctl(fd, TUNSETPERSIST, 1)
        finally:
            os.close(fd)
        created = True
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        index = socket.if_nametoindex(name)
        fcntl.ioctl(s, SIOCSIFMTU, _ifreq(name, "i", mtu))
        try:
            fcntl.ioctl(s, SIOCBRADDIF, _ifreq(bridge, "i", index))
        except OSError as e:
            if e.errno != errno.EBUSY:  # EBUSY: already a port (our namespace has only our bridge)
                raise NetworkError(f"add {name} to bridge {bridge}: {e.strerror}") from e
        (flags,) = struct.unpack_from("h", fcntl.ioctl(s, SIOCGIFFLAGS, _ifreq(name)), 16)
        if not flags & IFF_UP:
            fcntl.ioctl(s, SIOCSIFFLAGS, _ifreq(name, "h", flags | IFF_UP))
    return created


def open_tap_fd(netns: str, name: str, *, vnet_hdr: bool = True) -> int:
    """Blocking form of `TapDevice.open_fd` for callers without an event loop."""
    return run_in_netns_sync(netns_path(netns), lambda: _attach(name, vnet_hdr=vnet_hdr))


@dataclass(frozen=True)
class TapDevice:
    """A pod VM's NIC on the host side: everything hostd needs to give it to QEMU.

    ``name`` is the tap inside namespace ``netns``; ``mac`` is the *guest's* MAC (QEMU's
    ``virtio-net-device,mac=``), which is also how the guest agent finds the NIC to configure.
    """

    name: str
    mac: str
    netns: str

    @property
    def netns_path(self) -> Path:
        return netns_path(self.netns)

    async def open_fd(self, *, vnet_hdr: bool = True) -> int:
        """A new descriptor on the tap for ``-netdev tap,fd=N``, close-on-exec (pass it with ``pass_fds``).

        ``vnet_hdr`` lets QEMU's virtio-net use checksum/segmentation offloads; frames then carry a
        10-byte virtio header, so a plain reader (a test) asks for ``vnet_hdr=False``.
        The caller closes its copy once QEMU is running. `NetworkError` if another process holds it.
        """
        return await run_in_netns(self.netns_path, lambda: _attach(self.name, vnet_hdr=vnet_hdr))

    def netdev_option(self, *, id: str, fd: int | None = None) -> str:
        """QEMU's ``-netdev`` value: by descriptor (QEMU anywhere) or by name (QEMU inside ``netns``)."""
        if fd is not None:
            return f"tap,id={id},fd={fd}"
        return f"tap,id={id},ifname={self.name},script=no,downscript=no"

    def to_json(self) -> dict[str, str]:
        """The NIC as hostd's API carries it (Firecracker's ``host_dev_name``/``guest_mac``, plus the namespace)."""
        return {"hostDevName": self.name, "guestMac": self.mac, "netns": self.netns}

    @classmethod
    def from_json(cls, data: dict[str, str]) -> TapDevice:
        return cls(name=data["hostDevName"], mac=data["guestMac"], netns=data["netns"])
