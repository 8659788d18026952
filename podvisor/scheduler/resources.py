"""What a pod asks of a host, and what a host offers — including what a pod *VM* costs.

A pod's request follows Kubernetes: the app containers' requests are summed; an init container runs
alone (with the sidecars started before it), so the pod needs the larger of the two; restartable init
containers (sidecars, ``restartPolicy: Always``) keep running and add to the sum. A container with a
limit but no request requests its limit (the API server's defaulting, applied here too in case the
object predates it).

On top of that every pod here is a virtual machine: a guest kernel, the CRX init and agent, QEMU's own
memory and a vCPU thread cost the host something even when the containers request nothing. That is
the pod *overhead*. A RuntimeClass with ``overhead.podFixed`` puts it into ``spec.overhead`` at
admission and the scheduler takes it from there; a pod without one is charged
``DEFAULT_VM_OVERHEAD`` (64Mi of memory and 50m of CPU — the measured floor of an idle microvm guest
under QEMU minus what the guest kernel shares between VMs, rounded up).

For *scoring* only, Kubernetes counts a container without requests as 100m CPU / 200Mi memory so that
many best-effort pods still spread; ``nonzero_requests`` does the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from podvisor.scheduler.quantity import quantity_milli, quantity_value

__all__ = [
    "Resources", "DEFAULT_VM_OVERHEAD", "DEFAULT_VM_OVERHEAD_CPU_MILLI", "DEFAULT_VM_OVERHEAD_MEMORY",
    "DEFAULT_NONZERO_CPU_MILLI", "DEFAULT_NONZERO_MEMORY", "pod_overhead", "pod_requests", "nonzero_requests",
    "node_allocatable",
]

DEFAULT_VM_OVERHEAD_CPU_MILLI = 50
DEFAULT_VM_OVERHEAD_MEMORY = 64 * 2**20
DEFAULT_VM_OVERHEAD: dict[str, str] = {"cpu": "50m", "memory": "64Mi"}

DEFAULT_NONZERO_CPU_MILLI = 100
DEFAULT_NONZERO_MEMORY = 200 * 2**20

_CPU, _MEM, _EPH, _PODS = "cpu", "memory", "ephemeral-storage", "pods"


@dataclass
class Resources:
    """CPU in millicores, memory and ephemeral storage in bytes, other (extended) resources in units."""

    cpu: int = 0
    memory: int = 0
    ephemeral: int = 0
    scalars: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_list(cls, rl: dict[str, Any] | None) -> Resources:
        r = cls()
        for name, q in (rl or {}).items():
            r.add_one(str(name), q)
        return r

    def add_one(self, name: str, q: Any) -> None:
        if name == _CPU:
            self.cpu += quantity_milli(q)
        elif name == _MEM:
            self.memory += quantity_value(q)
        elif name == _EPH:
            self.ephemeral += quantity_value(q)
        elif name != _PODS:
            self.scalars[name] = self.scalars.get(name, 0) + quantity_value(q)

    def copy(self) -> Resources:
        return Resources(self.cpu, self.memory, self.ephemeral, dict(self.scalars))

    def add(self, other: Resources) -> None:
        self.cpu += other.cpu
        self.memory += other.memory
        self.ephemeral += other.ephemeral
        for k, v in other.scalars.items():
            self.scalars[k] = self.scalars.get(k, 0) + v

    def sub(self, other: Resources) -> None:
        self.cpu -= other.cpu
        self.memory -= other.memory
        self.ephemeral -= other.ephemeral
        for k, v in other.scalars.items():
            self.scalars[k] = self.scalars.get(k, 0) - v

    def set_max(self, other: Resources) -> None:
        self.cpu = max(self.cpu, other.cpu)
        self.memory = max(self.memory, other.memory)
        self.ephemeral = max(self.ephemeral, other.ephemeral)
        for k, v in other.scalars.items():
            self.scalars[k] = max(self.scalars.get(k, 0), v)

    def get(self, name: str) -> int:
        if name == _CPU:
            return self.cpu
        if name == _MEM:
            return self.memory
        if name == _EPH:
            return self.ephemeral
        return self.scalars.get(name, 0)


def _container_requests(c: dict[str, Any]) -> dict[str, Any]:
    res = c.get("resources") or {}
    out = dict(res.get("limits") or {})
    out.update(res.get("requests") or {})
    return out


def _combine(spec: dict[str, Any], per_container: Any) -> Resources:
    total = Resources()
    for c in spec.get("containers") or []:
        total.add(per_container(c))
    init_max = Resources()
    sidecars = Resources()
    for c in spec.get("initContainers") or []:
        r: Resources = per_container(c)
        if c.get("restartPolicy") == "Always":
            total.add(r)
            sidecars.add(r)
            r = sidecars.copy()
        else:
            r.add(sidecars)
        init_max.set_max(r)
    total.set_max(init_max)
    return total


def pod_overhead(pod: dict[str, Any]) -> Resources:
    """``spec.overhead`` when a RuntimeClass set it, else the default cost of a pod VM."""
    overhead = (pod.get("spec") or {}).get("overhead")
    return Resources.from_list(overhead if overhead else DEFAULT_VM_OVERHEAD)


def pod_requests(pod: dict[str, Any]) -> Resources:
    """What the pod needs of a host to fit: containers (sum, max with init containers) plus overhead."""
    spec = pod.get("spec") or {}
    total = _combine(spec, lambda c: Resources.from_list(_container_requests(c)))
    pod_level = ((spec.get("resources") or {}).get("requests")) or {}
    if pod_level:  # pod-level resources (when set) replace the container sum for what they name
        level = Resources.from_list(pod_level)
        for name in pod_level:
            if name == _CPU:
                total.cpu = level.cpu
            elif name == _MEM:
                total.memory = level.memory
    total.add(pod_overhead(pod))
    return total


def nonzero_requests(pod: dict[str, Any]) -> Resources:
    """CPU and memory for scoring: containers without a request count as 100m / 200Mi."""
    spec = pod.get("spec") or {}

    def one(c: dict[str, Any]) -> Resources:
        req = _container_requests(c)
        r = Resources()
        r.cpu = quantity_milli(req[_CPU]) if _CPU in req else DEFAULT_NONZERO_CPU_MILLI
        r.memory = quantity_value(req[_MEM]) if _MEM in req else DEFAULT_NONZERO_MEMORY
        return r

    total = _combine(spec, one)
    total.ephemeral, total.scalars = 0, {}
    ov = pod_overhead(pod)
    total.cpu += ov.cpu
    total.memory += ov.memory
    return total


def node_allocatable(node: dict[str, Any]) -> tuple[Resources, int]:
    """The node's allocatable resources (capacity when allocatable is absent) and its pod slots."""
    status = node.get("status") or {}
    rl = status.get("allocatable") or status.get("capacity") or {}
    res = Resources()
    pods = 0
    for name, q in rl.items():
        try:
            if name == _PODS:
                pods = quantity_value(q)
            else:
                res.add_one(str(name), q)
        except ValueError:
            continue  # a malformed quantity offers nothing
    return res, pods
