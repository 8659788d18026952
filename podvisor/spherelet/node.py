"""The Node object of this host: registration, status, and the heartbeat Lease.

As a kubelet with node leases does it: the Node is created (or its labels brought up to date) at
start; its status — capacity and allocatable from the runtime's host info, addresses, nodeInfo,
the daemon endpoint where the API server reaches our streaming server, and the conditions
MemoryPressure, DiskPressure, PIDPressure and Ready — is checked every ``status_interval`` and
written when it changed or ``status_report`` seconds have passed; liveness is the Lease
``kube-node-lease/<node>``, renewed every ``renew_interval`` (10 s) and owned by the Node so it goes
with it. A Node deleted under us is registered again on the next check.

Ready is True only while the runtime answers and the pod network (when one is configured) is up;
otherwise False with reason ``KubeletNotReady`` and a message saying what is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from podvisor.client import AlreadyExists, APIClient, APIStatusError, NotFound, Res
from podvisor.spherelet.aio import cancel_and_wait
from podvisor.spherelet.clock import Clock
from podvisor.spherelet.runtime import HostInfo, Runtime, RuntimeFailure

__all__ = ["NodeAgent", "NODES", "LEASES", "KUBELET_VERSION", "node_conditions", "capacity_of"]

log = logging.getLogger("podvisor.spherelet.node")

NODES = Res("", "v1", "nodes", namespaced=False, kind="Node")
LEASES = Res("coordination.k8s.io", "v1", "leases", kind="Lease")
LEASE_NAMESPACE = "kube-node-lease"
KUBELET_VERSION = "v1.32.0-podvisor"

MEMORY_PRESSURE_BYTES = 100 * 2**20      # kubelet's default eviction threshold memory.available<100Mi
DISK_PRESSURE_FRACTION = 0.10            # nodefs.available<10%
PID_PRESSURE_FRACTION = 0.95


def _ts(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _micro(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def capacity_of(info: HostInfo) -> dict[str, str]:
    return {"cpu": str(info.cpus), "memory": f"{info.memory_bytes // 1024}Ki",
            "ephemeral-storage": f"{info.ephemeral_bytes // 1024}Ki", "pods": str(info.max_pods)}


def _allocatable(info: HostInfo, reserved_memory: int, reserved_cpu_milli: int) -> dict[str, str]:
    cpu_milli = max(0, info.cpus * 1000 - reserved_cpu_milli)
    cpu = str(cpu_milli // 1000) if cpu_milli % 1000 == 0 else f"{cpu_milli}m"
    return {"cpu": cpu, "memory": f"{max(0, info.memory_bytes - reserved_memory) // 1024}Ki",
            "ephemeral-storage": f"{info.ephemeral_bytes // 1024}Ki", "pods": str(info.max_pods)}


def node_conditions(info: HostInfo | None, *, ready: bool, not_ready_message: str) -> list[tuple[str, bool, str, str]]:
    """(type, status, reason, message) in kubelet's order. Pressure is False when it is unknown."""
    mem = info is not None and 0 <= info.memory_available_bytes < MEMORY_PRESSURE_BYTES
    disk = info is not None and info.ephemeral_available_bytes >= 0 and info.ephemeral_bytes > 0 and \
        info.ephemeral_available_bytes < DISK_PRESSURE_FRACTION * info.ephemeral_bytes
    pid = info is not None and info.pids_max > 0 and info.pids_used >= PID_PRESSURE_FRACTION * info.pids_max
    return [
        ("MemoryPressure", mem, "KubeletHasInsufficientMemory" if mem else "KubeletHasSufficientMemory",
         "kubelet has insufficient memory available" if mem else "kubelet has sufficient memory available"),
        ("DiskPressure", disk, "KubeletHasDiskPressure" if disk else "KubeletHasNoDiskPressure",
         "kubelet has disk pressure" if disk else "kubelet has no disk pressure"),
        ("PIDPressure", pid, "KubeletHasInsufficientPID" if pid else "KubeletHasSufficientPID",
         "kubelet has insufficient PID available" if pid else "kubelet has sufficient PID available"),
        ("Ready", ready, "KubeletReady" if ready else "KubeletNotReady",
         "kubelet is posting ready status" if ready else not_ready_message),
    ]


class NodeAgent:
    def __init__(self, client: APIClient, *, node_name: str, runtime: Runtime, clock: Clock, host_ip: str = "127.0.0.1",
                 daemon_port: int = 0, labels: Mapping[str, str] | None = None,
                 reserved_memory: int = 256 * 2**20, reserved_cpu_milli: int = 0,
                 renew_interval: float = 10.0, lease_duration: int = 40, status_interval: float = 10.0,
                 status_report: float = 60.0, readiness: Callable[[], tuple[bool, str]] | None = None) -> None:
        self.client, self.node_name, self.runtime, self.clock = client, node_name, runtime, clock
        self.host_ip, self.daemon_port = host_ip, daemon_port
        self.extra_labels = dict(labels or {})
        self.reserved_memory, self.reserved_cpu_milli = reserved_memory, reserved_cpu_milli
        self.renew_interval, self.lease_duration = renew_interval, lease_duration
        self.status_interval, self.status_report = status_interval, status_report
        self.readiness = readiness or (lambda: (True, ""))
        self.node: dict[str, Any] = {}
        self.info: HostInfo | None = None
        self.last_status: dict[str, Any] | None = None
        self._last_report = 0.0
        self._tasks: list[asyncio.Task[None]] = []
        self.pod_cidr_known = asyncio.Event()

    @property
    def uid(self) -> str:
        return str((self.node.get("metadata") or {}).get("uid", ""))

    @property
    def pod_cidr(self) -> str:
        return str((self.node.get("spec") or {}).get("podCIDR") or "")

    @property
    def allocatable(self) -> dict[str, str]:
        if self.info is None:
            return {}
        return _allocatable(self.info, self.reserved_memory, self.reserved_cpu_milli)

    def labels(self, info: HostInfo) -> dict[str, str]:
        out = {"kubernetes.io/hostname": self.node_name, "kubernetes.io/os": info.operating_system,
               "kubernetes.io/arch": info.architecture, "beta.kubernetes.io/os": info.operating_system,
               "beta.kubernetes.io/arch": info.architecture}
        if info.instance_type:
            out["node.kubernetes.io/instance-type"] = info.instance_type
        out.update(self.extra_labels)
        return out

    # ---- registration ------------------------------------------------------------------------------

    async def register(self) -> dict[str, Any]:
        info = await self.runtime.host_info()
        self.info = info
        labels = self.labels(info)
        body = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": self.node_name, "labels": labels,
                             "annotations": {"node.alpha.kubernetes.io/ttl": "0",
                                             "podvisor.io/accel": info.accel or "unknown"}},
                "spec": {}}
        try:
            self.node = await self.client.create(NODES, body, field_manager="spherelet")
            log.info("registered node %s", self.node_name)
        except AlreadyExists:
            current = await self.client.get(NODES, self.node_name)
            have = (current.get("metadata") or {}).get("labels") or {}
            if any(have.get(k) != v for k, v in labels.items()):
                current = await self.client.patch(NODES, self.node_name, {"metadata": {"labels": labels}},
                                                  field_manager="spherelet")
            self.node = current
        if self.pod_cidr:
            self.pod_cidr_known.set()
        self.last_status = None
        await self.sync_status(force=True)
        return self.node

    # ---- status ------------------------------------------------------------------------------------

    def desired_status(self, info: HostInfo | None) -> dict[str, Any]:
        ready, why = self.readiness()
        if info is None:
            ready, why = False, "container runtime is down: host information is not available"
        status: dict[str, Any] = {
            "conditions": [{"type": t, "status": "True" if ok else "False", "reason": r, "message": m}
                           for t, ok, r, m in node_conditions(info, ready=ready, not_ready_message=why)],
            "addresses": [{"type": "InternalIP", "address": self.host_ip},
                          {"type": "Hostname", "address": self.node_name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.daemon_port}},
        }
        if info is not None:
            status["capacity"] = capacity_of(info)
            status["allocatable"] = _allocatable(info, self.reserved_memory, self.reserved_cpu_milli)
            status["nodeInfo"] = {
                "machineID": info.machine_id, "systemUUID": info.system_uuid, "bootID": info.boot_id,
                "kernelVersion": info.kernel_version, "osImage": info.os_image,
                "containerRuntimeVersion": info.runtime_version, "kubeletVersion": KUBELET_VERSION,
                "kubeProxyVersion": "", "operatingSystem": info.operating_system, "architecture": info.architecture,
            }
        return status

    async def sync_status(self, *, force: bool = False) -> None:
        try:
            info: HostInfo | None = await self.runtime.host_info()
            self.info = info
        except RuntimeFailure as exc:
            log.warning("host info: %s", exc)
            info = None
        desired = self.desired_status(info)
        now = self.clock.now()
        if not force and desired == self.last_status and now - self._last_report < self.status_report:
            return
        old = {c.get("type"): c for c in (self.node.get("status") or {}).get("conditions") or []}
        stamp = _ts(now)
        conditions = []
        for c in desired["conditions"]:
            prev = old.get(c["type"])
            moved = prev is None or prev.get("status") != c["status"]
            since = stamp if prev is None or moved else str(prev.get("lastTransitionTime") or stamp)
            conditions.append({**c, "lastHeartbeatTime": stamp, "lastTransitionTime": since})
        body = {**desired, "conditions": conditions}
        try:
            self.node = await self.client.patch(NODES, self.node_name, {"status": body}, subresource="status",
                                                field_manager="spherelet")
        except NotFound:
            log.warning("node %s was deleted; registering it again", self.node_name)
            await self.register()
            return
        self.last_status = desired
        self._last_report = now
        if self.pod_cidr:
            self.pod_cidr_known.set()

    async def refresh(self) -> None:
        """Read the Node again (its podCIDR arrives after registration)."""
        with contextlib.suppress(NotFound):
            self.node = await self.client.get(NODES, self.node_name)
        if self.pod_cidr:
            self.pod_cidr_known.set()

    # ---- lease -------------------------------------------------------------------------------------

    async def renew_lease(self) -> None:
        now = _micro(self.clock.now())
        spec = {"holderIdentity": self.node_name, "leaseDurationSeconds": self.lease_duration, "renewTime": now}
        try:
            await self.client.patch(LEASES, self.node_name, {"spec": spec}, LEASE_NAMESPACE, field_manager="spherelet")
        except NotFound:
            md: dict[str, Any] = {"name": self.node_name, "namespace": LEASE_NAMESPACE}
            if self.uid:
                md["ownerReferences"] = [{"apiVersion": "v1", "kind": "Node", "name": self.node_name, "uid": self.uid}]
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": md,
                    "spec": {**spec, "acquireTime": now}}
            with contextlib.suppress(AlreadyExists):
                await self.client.create(LEASES, body, LEASE_NAMESPACE, field_manager="spherelet")

    # ---- loops -------------------------------------------------------------------------------------

    async def _every(self, interval: float, fn: Callable[[], Any], what: str) -> None:
        while True:
            try:
                await fn()
            except asyncio.CancelledError:
                raise
            except (APIStatusError, OSError, TimeoutError) as exc:
                log.warning("%s: %s", what, exc)
            except Exception:
                log.exception("%s failed", what)
            await self.clock.sleep(interval)

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._every(self.renew_interval, self.renew_lease, "lease renewal"), name="node-lease"),
            asyncio.create_task(self._every(self.status_interval, self._status_tick, "node status"), name="node-status"),
        ]

    async def _status_tick(self) -> None:
        if not self.pod_cidr_known.is_set():
            await self.refresh()
        await self.sync_status()

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        await cancel_and_wait(tasks)
