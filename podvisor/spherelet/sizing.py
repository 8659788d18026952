"""How big a pod's VM is: vCPUs, memory and ephemeral disk from the pod's requests and limits.

A kubelet shares one kernel between pods, so limits are only cgroup ceilings. Here each pod *is* a
machine, and its memory is a hard size: a pod VM gets what its containers may use (limits, or
requests where no limit is set; init containers run alone, so the larger of the two sums) plus the
guest's own overhead (kernel, CRX init, agent). A pod that states nothing gets ``DEFAULT_MEMORY``.
vCPUs are the CPU limit (or request) rounded up to whole CPUs, at least one and at most the host's.
The ephemeral disk is the ``ephemeral-storage`` limit (or request) plus the emptyDir size limits,
or ``DEFAULT_EPHEMERAL`` when nothing is stated.

The same numbers feed the container cgroups inside the guest (``memory_limit_bytes``,
``cpu_limit_millis``) so a container exceeding its own limit is OOM-killed as on a kubelet.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from podvisor.scheduler.quantity import quantity_milli, quantity_value

__all__ = [
    "VMSize", "vm_size", "container_limits", "GUEST_OVERHEAD_MIB", "DEFAULT_MEMORY_MIB", "MIN_MEMORY_MIB",
    "DEFAULT_EPHEMERAL", "qos_class",
]

GUEST_OVERHEAD_MIB = 64         # kernel, CRX init and agent, page cache headroom
DEFAULT_MEMORY_MIB = 256        # a pod that states no memory at all
MIN_MEMORY_MIB = 128
DEFAULT_EPHEMERAL = 1 << 30
_EPHEMERAL_FLOOR = 64 << 20     # logs, writable layers and files need some room


@dataclass(frozen=True)
class VMSize:
    vcpus: int
    memory_mib: int
    ephemeral_bytes: int


def _amount(c: dict[str, Any], name: str, *, milli: bool) -> int:
    res = c.get("resources") or {}
    for source in (res.get("limits") or {}, res.get("requests") or {}):
        if name in source:
            try:
                return quantity_milli(source[name]) if milli else quantity_value(source[name])
            except ValueError:
                return 0
    return 0


def _combined(spec: dict[str, Any], name: str, *, milli: bool) -> tuple[int, bool]:
    """(sum over app containers max'ed with each init container, whether any container states it)."""
    stated = False
    total = 0
    for c in spec.get("containers") or []:
        v = _amount(c, name, milli=milli)
        stated = stated or v > 0
        total += v
    sidecars = 0
    init_max = 0
    for c in spec.get("initContainers") or []:
        v = _amount(c, name, milli=milli)
        stated = stated or v > 0
        if c.get("restartPolicy") == "Always":
            sidecars += v
            total += v
            init_max = max(init_max, sidecars)
        else:
            init_max = max(init_max, v + sidecars)
    return max(total, init_max), stated


def vm_size(pod: dict[str, Any], *, host_cpus: int = 0) -> VMSize:
    spec = pod.get("spec") or {}
    mem, mem_stated = _combined(spec, "memory", milli=False)
    if mem_stated:
        memory_mib = max(MIN_MEMORY_MIB, math.ceil(mem / 2**20) + GUEST_OVERHEAD_MIB)
    else:
        memory_mib = DEFAULT_MEMORY_MIB
    memory_mib = (memory_mib + 1) // 2 * 2
    cpu, _ = _combined(spec, "cpu", milli=True)
    vcpus = max(1, math.ceil(cpu / 1000))
    if host_cpus > 0:
        vcpus = min(vcpus, host_cpus)
    eph, eph_stated = _combined(spec, "ephemeral-storage", milli=False)
    empty_dirs = 0
    for v in spec.get("volumes") or []:
        ed = v.get("emptyDir")
        if isinstance(ed, dict) and ed.get("sizeLimit") and (ed.get("medium") or "") != "Memory":
            try:
                empty_dirs += quantity_value(ed["sizeLimit"])
            except ValueError:
                pass
    if eph_stated or empty_dirs:
        ephemeral = max(_EPHEMERAL_FLOOR, eph + empty_dirs + _EPHEMERAL_FLOOR)
    else:
        ephemeral = DEFAULT_EPHEMERAL
    return VMSize(vcpus=vcpus, memory_mib=memory_mib, ephemeral_bytes=ephemeral)


def container_limits(c: dict[str, Any]) -> tuple[int, int]:
    """(memory limit bytes, CPU limit millis) of one container; 0 where none is set."""
    limits = (c.get("resources") or {}).get("limits") or {}
    mem = cpu = 0
    try:
        if "memory" in limits:
            mem = quantity_value(limits["memory"])
        if "cpu" in limits:
            cpu = quantity_milli(limits["cpu"])
    except ValueError:
        pass
    return mem, cpu


def qos_class(spec: dict[str, Any]) -> str:
    """Guaranteed, Burstable or BestEffort, by Kubernetes' rules (used when the API server did not say)."""
    containers = list(spec.get("containers") or []) + list(spec.get("initContainers") or [])
    any_set = False
    guaranteed = True
    for c in containers:
        res = c.get("resources") or {}
        req, lim = res.get("requests") or {}, res.get("limits") or {}
        for name in ("cpu", "memory"):
            r, lm = req.get(name, lim.get(name)), lim.get(name)
            if r is not None or lm is not None:
                any_set = True
            if lm is None or r is None or str(r) != str(lm):
                try:
                    if lm is None or r is None or quantity_milli(r) != quantity_milli(lm):
                        guaranteed = False
                except ValueError:
                    guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"
