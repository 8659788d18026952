"""Pod IP addresses from the node's ``spec.podCIDR``, kept in one small file keyed by pod UID.

The file is the truth: every operation takes an exclusive ``flock`` on a lock file next to it, reads
the file, changes it and replaces it atomically (write a temporary file, fsync, rename, fsync the
directory), so a crash leaves either the old or the new assignments and a restarted node agent hands
every running pod the address it already has. Allocation is idempotent per UID.

Reserved: the network address, the broadcast address and the first usable address (the gateway on the
host's bridge). Free addresses are handed out round-robin after the last one given, like the CNI
``host-local`` plugin, so a just-released address is not reused at once while peers may still have it
in their ARP caches or connection tables.

IPv4 only for now (the bridge and the guest agent configure one IPv4 address).
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

__all__ = ["IPAM", "IPAMError", "IPAMExhausted", "parse_pod_cidr"]

STATE_VERSION = 1


class IPAMError(RuntimeError):
    """A bad podCIDR, an unreadable state file, or a state file for another podCIDR."""


class IPAMExhausted(IPAMError):
    """Every usable address of the podCIDR is taken."""


def parse_pod_cidr(pod_cidr: str) -> ipaddress.IPv4Network:
    """``"10.88.0.0/24"`` -> network; refuses IPv6, host bits set, and ranges with no room for a pod."""
    try:
        net = ipaddress.ip_network(pod_cidr, strict=True)
    except ValueError as e:
        raise IPAMError(f"invalid podCIDR {pod_cidr!r}: {e}") from None
    if not isinstance(net, ipaddress.IPv4Network):
        raise IPAMError(f"podCIDR {pod_cidr}: only IPv4 pod networks are supported")
    if net.prefixlen > 30:
        raise IPAMError(f"podCIDR {pod_cidr} is too small: it needs a gateway and at least one pod (/30 or larger)")
    return net


class IPAM:
    """Allocations of one node's podCIDR, persisted in ``state_file``. Methods are blocking but short."""

    def __init__(self, *, pod_cidr: str, state_file: Path) -> None:
        self.network = parse_pod_cidr(pod_cidr)
        self.gateway = self.network.network_address + 1
        self.state_file = Path(state_file)
        self._lock_file = self.state_file.with_name(self.state_file.name + ".lock")

    @property
    def prefixlen(self) -> int:
        return self.network.prefixlen

    @property
    def capacity(self) -> int:
        """How many pods fit: all addresses but network, broadcast and gateway."""
        return self.network.num_addresses - 3

    # -- public operations ---------------------------------------------------------------------

    def allocate(self, pod_uid: str) -> ipaddress.IPv4Address:
        """The pod's address: the one it already has, else the next free one. `IPAMExhausted` if none."""
        if not pod_uid:
            raise ValueError("a pod UID is required")
        with self._locked() as state:
            allocs: dict[str, str] = state["allocations"]
            if pod_uid in allocs:
                return ipaddress.IPv4Address(allocs[pod_uid])
            taken = {int(ipaddress.IPv4Address(a)) for a in allocs.values()}
            first = int(self.gateway) + 1
            last = int(self.network.broadcast_address) - 1
            size = last - first + 1
            start = int(ipaddress.IPv4Address(state["last"])) + 1 if state.get("last") else first
            for i in range(size):
                candidate = first + (start - first + i) % size
                if candidate not in taken:
                    addr = ipaddress.IPv4Address(candidate)
                    allocs[pod_uid] = str(addr)
                    state["last"] = str(addr)
                    self._write(state)
                    return addr
        raise IPAMExhausted(
            f"no free pod IP in {self.network}: all {self.capacity} addresses are allocated")

    def release(self, pod_uid: str) -> ipaddress.IPv4Address | None:
        """Free the pod's address; returns it, or None if the pod had none (idempotent)."""
        with self._locked() as state:
            addr = state["allocations"].pop(pod_uid, None)
            if addr is None:
                return None
            self._write(state)
            return ipaddress.IPv4Address(addr)

    def retain(self, pod_uids: Iterable[str]) -> dict[str, ipaddress.IPv4Address]:
        """Free every address whose pod is not in ``pod_uids``; returns what was freed (UID -> address)."""
        keep = set(pod_uids)
        with self._locked() as state:
            allocs: dict[str, str] = state["allocations"]
            gone = {uid: ipaddress.IPv4Address(a) for uid, a in allocs.items() if uid not in keep}
            if gone:
                for uid in gone:
                    del allocs[uid]
                self._write(state)
            return gone

    def get(self, pod_uid: str) -> ipaddress.IPv4Address | None:
        addr = self._read()["allocations"].get(pod_uid)
        return ipaddress.IPv4Address(addr) if addr else None

    def allocations(self) -> dict[str, ipaddress.IPv4Address]:
        return {uid: ipaddress.IPv4Address(a) for uid, a in self._read()["allocations"].items()}

    # -- the file ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield self._read()
        finally:
            os.close(fd)  # releases the lock

    def _read(self) -> dict[str, Any]:
        try:
            raw = self.state_file.read_text()
        except FileNotFoundError:
            return {"version": STATE_VERSION, "podCIDR": str(self.network), "last": None, "allocations": {}}
        try:
            state = json.loads(raw)
            if not isinstance(state, dict) or not isinstance(state.get("allocations"), dict):
                raise ValueError("not an IPAM state object")
        except ValueError as e:
            raise IPAMError(f"unreadable IPAM state {self.state_file}: {e}") from None
        if state.get("podCIDR") != str(self.network):
            raise IPAMError(f"{self.state_file} holds addresses of podCIDR {state.get('podCIDR')}, "
                            f"not {self.network}; release them or remove the file")
        for uid, addr in state["allocations"].items():
            try:
                ok = isinstance(uid, str) and ipaddress.IPv4Address(addr) in self.network
            except ValueError:
                ok = False
            if not ok:
                raise IPAMError(f"unreadable IPAM state {self.state_file}: bad entry {uid!r}: {addr!r}")
        return state

    def _write(self, state: dict[str, Any]) -> None:
        state["version"] = STATE_VERSION
        state["podCIDR"] = str(self.network)
        tmp = self.state_file.with_name(f".{self.state_file.name}.{os.getpid()}.tmp")
        data = json.dumps(state, indent=1, sort_keys=True).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.state_file)
        dfd = os.open(self.state_file.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
