"""How big a pod's VM is: vCPUs and memory from the pod's requests and limits plus a stated overhead.

Memory: the pod's memory limit (sum over its containers; without limits the requests; without either
`DEFAULT_POD_MEMORY_MIB`) plus `GUEST_OVERHEAD_MIB` for the guest kernel, page cache and agent, rounded
up to 32 MiB. A container's own limit is still enforced inside the guest by its cgroup (OOMKilled).
vCPUs: the CPU limit (else request) rounded up to whole CPUs, at least one. On the host, each VM also
costs QEMU's own memory, stated as `HOST_OVERHEAD_MIB` for the scheduler's arithmetic.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from podvisor.hostd.templates import Layout

__all__ = ["GUEST_OVERHEAD_MIB", "HOST_OVERHEAD_MIB", "DEFAULT_POD_MEMORY_MIB", "vm_size", "pod_layout"]

GUEST_OVERHEAD_MIB = 64
HOST_OVERHEAD_MIB = 32
DEFAULT_POD_MEMORY_MIB = 256


def vm_size(*, cpu_request_milli: int = 0, cpu_limit_milli: int = 0, memory_request_bytes: int = 0,
            memory_limit_bytes: int = 0) -> tuple[int, int]:
    """(vcpus, memory MiB) for a pod with these summed requests/limits (0 = not set)."""
    cpu = cpu_limit_milli or cpu_request_milli
    vcpus = max(1, math.ceil(cpu / 1000)) if cpu else 1
    mem_bytes = memory_limit_bytes or memory_request_bytes
    pod_mib = math.ceil(mem_bytes / 2**20) if mem_bytes else DEFAULT_POD_MEMORY_MIB
    total = pod_mib + GUEST_OVERHEAD_MIB
    return vcpus, int(math.ceil(total / 32) * 32)


def pod_layout(*, vcpus: int = 1, memory_mib: int = DEFAULT_POD_MEMORY_MIB + GUEST_OVERHEAD_MIB, images: int = 1,
               nics: int = 1) -> Layout:
    """The device layout of a pod VM (``images`` read-only image disks, the ephemeral disk, NICs), as
    hostd keys templates by it; the accelerator is filled in by hostd."""
    from podvisor.hostd.templates import Layout

    disks = tuple([("image", True)] * images + [("ephemeral", False)])
    return Layout(vcpus=vcpus, memory_mib=memory_mib, disks=disks, nics=nics, accel="")
