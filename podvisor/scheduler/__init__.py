"""The scheduler: Podvisor's DRS. Places unbound pods on hosts (filters, scores, binds) through the API."""

from podvisor.scheduler.resources import (
    DEFAULT_VM_OVERHEAD,
    DEFAULT_VM_OVERHEAD_CPU_MILLI,
    DEFAULT_VM_OVERHEAD_MEMORY,
    pod_requests,
)
from podvisor.scheduler.scheduler import DEFAULT_SCHEDULER_NAMES, Scheduler

__all__ = [
    "DEFAULT_SCHEDULER_NAMES", "DEFAULT_VM_OVERHEAD", "DEFAULT_VM_OVERHEAD_CPU_MILLI", "DEFAULT_VM_OVERHEAD_MEMORY",
    "Scheduler", "pod_requests",
]
