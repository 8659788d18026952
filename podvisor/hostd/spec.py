"""What a VM is made of (`VMSpec`) and what hostd reports about it (`VMRecord`), with their JSON forms.

The spec is the hardware: vCPUs, memory, disks (by id: image disks read-only, one ephemeral disk), NICs
(MAC, tap), plus the guest identity hostd applies when the agent comes up (hostname, first IPv4 per NIC,
/etc files). Ids double as the virtio serial a guest finds a disk by, hence the short id rule.

`VMRecord` is the spec plus state: power, QEMU pid, start time, accel, boot timings. It is what
``vm.json`` holds on disk and what the API returns; one shape in both places keeps adoption after a
restart a plain re-read.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "SpecError",
    "DiskSpec",
    "NicSpec",
    "VMSpec",
    "VMRecord",
    "PowerState",
    "DISK_KINDS",
    "new_vm_id",
    "random_mac",
]

PowerState = Literal["off", "starting", "on", "stopping"]
DISK_KINDS = ("image", "ephemeral", "runtime", "data")
_ID_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,18}[a-z0-9])?$")
_VM_ID_RE = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$")
_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_TAP_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")


class SpecError(ValueError):
    """A VM spec that cannot be run (HTTP 400)."""


def new_vm_id() -> str:
    return "vm-" + secrets.token_hex(5)


def random_mac() -> str:
    """A locally administered unicast MAC (02:xx:...)."""
    return "02:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(5))


def _int(body: dict[str, Any], key: str, default: int, *, lo: int, hi: int) -> int:
    value = body.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise SpecError(f"{key} must be an integer from {lo} to {hi}")
    return value


def _str(body: dict[str, Any], key: str, default: str = "") -> str:
    value = body.get(key, default)
    if not isinstance(value, str):
        raise SpecError(f"{key} must be a string")
    return value


@dataclass
class DiskSpec:
    id: str
    kind: str
    path: str = ""            # empty for an ephemeral disk hostd makes in the VM's directory
    read_only: bool = False
    size_bytes: int = 0       # for a disk hostd makes
    owned: bool = False       # hostd deletes the file with the VM

    @classmethod
    def from_json(cls, body: Any) -> DiskSpec:
        if not isinstance(body, dict):
            raise SpecError("a disk must be an object")
        disk_id = _str(body, "id")
        if not _ID_RE.match(disk_id):
            raise SpecError(f"disk id {disk_id!r}: 1-20 lowercase letters, digits or '-'")
        kind = _str(body, "kind", "image")
        if kind not in DISK_KINDS:
            raise SpecError(f"disk {disk_id}: kind must be one of {', '.join(DISK_KINDS)}")
        path = _str(body, "path")
        if path and not path.startswith("/"):
            raise SpecError(f"disk {disk_id}: path must be absolute")
        if not path and kind != "ephemeral":
            raise SpecError(f"disk {disk_id}: a path is required (only an ephemeral disk can be made by hostd)")
        read_only = body.get("readOnly", kind == "image")
        if not isinstance(read_only, bool):
            raise SpecError(f"disk {disk_id}: readOnly must be a boolean")
        if kind == "image" and not read_only:
            raise SpecError(f"disk {disk_id}: image disks are read-only")
        size = _int(body, "sizeBytes", 0, lo=0, hi=1 << 44)
        owned = body.get("owned", not path)
        if not isinstance(owned, bool):
            raise SpecError(f"disk {disk_id}: owned must be a boolean")
        return cls(disk_id, kind, path, read_only, size, owned)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "path": self.path, "readOnly": self.read_only,
                "sizeBytes": self.size_bytes, "owned": self.owned}


@dataclass
class NicSpec:
    id: str
    mac: str
    tap: str
    netns: str = ""            # network namespace holding the tap (name under /run/netns, or a path)
    ip: str = ""               # "10.88.0.5/24", configured in the guest when the agent comes up
    gateway: str = ""
    mtu: int = 0

    @classmethod
    def from_json(cls, body: Any) -> NicSpec:
        if not isinstance(body, dict):
            raise SpecError("a NIC must be an object")
        nic_id = _str(body, "id", "eth0")
        if not re.match(r"^[a-z][a-z0-9]{0,14}$", nic_id):
            raise SpecError(f"NIC id {nic_id!r}: a guest interface name such as eth0")
        mac = _str(body, "mac").lower() or random_mac()
        if not _MAC_RE.match(mac):
            raise SpecError(f"NIC {nic_id}: bad MAC {mac!r}")
        tap = _str(body, "tap")
        if not _TAP_RE.match(tap):
            raise SpecError(f"NIC {nic_id}: tap must name a tap device (1-15 characters)")
        ip = _str(body, "ip")
        if ip and not re.match(r"^\d{1,3}(\.\d{1,3}){3}/\d{1,2}$", ip):
            raise SpecError(f"NIC {nic_id}: ip must be an IPv4 address with a prefix length (10.88.0.5/24)")
        return cls(nic_id, mac, tap, _str(body, "netns"), ip, _str(body, "gateway"),
                   _int(body, "mtu", 0, lo=0, hi=65535))

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "mac": self.mac, "tap": self.tap, "netns": self.netns, "ip": self.ip,
                "gateway": self.gateway, "mtu": self.mtu}


@dataclass
class VMSpec:
    id: str
    vcpus: int = 1
    memory_mib: int = 256
    disks: list[DiskSpec] = field(default_factory=list)
    nics: list[NicSpec] = field(default_factory=list)
    hostname: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    guest_files: dict[str, str] = field(default_factory=dict)  # "hosts", "resolvConf"

    @classmethod
    def from_json(cls, body: Any) -> VMSpec:
        if not isinstance(body, dict):
            raise SpecError("the VM spec must be a JSON object")
        vm_id = _str(body, "id") or new_vm_id()
        if not _VM_ID_RE.match(vm_id):
            raise SpecError(f"VM id {vm_id!r}: lowercase letters, digits, '-' or '.', at most 63")
        disks = [DiskSpec.from_json(d) for d in body.get("disks") or []]
        nics = [NicSpec.from_json(n) for n in body.get("nics") or []]
        spec = cls(
            id=vm_id,
            vcpus=_int(body, "vcpus", 1, lo=1, hi=64),
            memory_mib=_int(body, "memoryMiB", 256, lo=64, hi=1 << 20),
            disks=disks,
            nics=nics,
            hostname=_str(body, "hostname"),
            labels=_labels(body.get("labels")),
            guest_files=_guest_files(body.get("guest")),
        )
        spec.check()
        return spec

    def check(self) -> None:
        ids = [d.id for d in self.disks]
        if len(set(ids)) != len(ids):
            raise SpecError("disk ids must be unique")
        if sum(1 for d in self.disks if d.kind == "ephemeral") > 1:
            raise SpecError("a VM has at most one ephemeral disk")
        nic_ids = [n.id for n in self.nics]
        if len(set(nic_ids)) != len(nic_ids):
            raise SpecError("NIC ids must be unique")
        if len({n.netns for n in self.nics}) > 1:
            raise SpecError("all NICs of a VM must be in the same network namespace")
        if len(self.hostname) > 63:
            raise SpecError("hostname is at most 63 characters")

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "vcpus": self.vcpus, "memoryMiB": self.memory_mib,
                "disks": [d.to_json() for d in self.disks], "nics": [n.to_json() for n in self.nics],
                "hostname": self.hostname, "labels": dict(self.labels), "guest": dict(self.guest_files)}


def _labels(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise SpecError("labels must map strings to strings")
    return dict(value)


def _guest_files(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SpecError("guest must be an object")
    out = {}
    for key in ("hosts", "resolvConf"):
        if key in value:
            if not isinstance(value[key], str):
                raise SpecError(f"guest.{key} must be a string")
            out[key] = value[key]
    return out


@dataclass
class VMRecord:
    """A VM as hostd knows it: spec + state. Serialised to vm.json and to the API."""

    spec: VMSpec
    created_at: float
    power: PowerState = "off"
    qemu_pid: int = 0
    started_at: float = 0.0
    accel: str = ""
    boot: dict[str, float] = field(default_factory=dict)   # timings of the last power-on
    agent: dict[str, Any] = field(default_factory=dict)    # hello: version, capabilities
    last_exit: str = ""                                     # why the VM last stopped
    start_mode: str = ""                                    # "cold" or "template"

    def to_json(self) -> dict[str, Any]:
        return {"spec": self.spec.to_json(), "createdAt": self.created_at, "power": self.power,
                "qemuPid": self.qemu_pid, "startedAt": self.started_at, "accel": self.accel,
                "boot": self.boot, "agent": self.agent, "lastExit": self.last_exit, "startMode": self.start_mode}

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> VMRecord:
        return cls(spec=VMSpec.from_json(body["spec"]), created_at=float(body.get("createdAt", 0)),
                   power=body.get("power", "off"), qemu_pid=int(body.get("qemuPid", 0)),
                   started_at=float(body.get("startedAt", 0)), accel=str(body.get("accel", "")),
                   boot=dict(body.get("boot") or {}), agent=dict(body.get("agent") or {}),
                   last_exit=str(body.get("lastExit", "")), start_mode=str(body.get("startMode", "")))
