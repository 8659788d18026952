"""Facts about this machine that a Node reports and that no VM layer needs to be asked for: OS image,
kernel, machine and boot ids, memory, disk and PID use. Read from /proc and /etc, cheaply, every time
the node status is checked (pressure conditions must follow the host as it is now)."""

from __future__ import annotations

import os
import platform
import shutil
from pathlib import Path

from podvisor.spherelet.runtime import HostInfo

__all__ = ["local_host_info", "meminfo"]

_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x"}


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def meminfo() -> dict[str, int]:
    out: dict[str, int] = {}
    for line in _read("/proc/meminfo").splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            out[key] = int(parts[0]) * (1024 if len(parts) > 1 and parts[1] == "kB" else 1)
    return out


def _os_image() -> str:
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip().strip('"')
    return platform.system()


def _pids_used() -> int:
    try:
        return sum(1 for e in os.scandir("/proc") if e.name.isdigit())
    except OSError:
        return -1


def local_host_info(data_dir: Path, *, max_pods: int = 110) -> HostInfo:
    mem = meminfo()
    try:
        du = shutil.disk_usage(data_dir)
        disk_total, disk_free = du.total, du.free
    except OSError:
        disk_total, disk_free = 0, -1
    pid_max = _read("/proc/sys/kernel/pid_max")
    return HostInfo(
        cpus=os.cpu_count() or 1,
        memory_bytes=mem.get("MemTotal", 0),
        ephemeral_bytes=disk_total,
        max_pods=max_pods,
        memory_available_bytes=mem.get("MemAvailable", -1),
        ephemeral_available_bytes=disk_free,
        pids_max=int(pid_max) if pid_max.isdigit() else -1,
        pids_used=_pids_used(),
        kernel_version=platform.release(),
        os_image=_os_image(),
        architecture=_ARCH.get(platform.machine(), platform.machine()),
        machine_id=_read("/etc/machine-id"),
        system_uuid=_read("/sys/class/dmi/id/product_uuid") or _read("/etc/machine-id"),
        boot_id=_read("/proc/sys/kernel/random/boot_id"),
    )
