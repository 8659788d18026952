"""The spherelet: the node agent of one host, as `podvisor up` (or `podvisor host join`) runs it.

Start-up order, each step needing the one before: API client → streaming server (its port goes into
the Node) → Node registered and heartbeating → pod informer (``spec.nodeName=<node>``) synced →
the runtime's sandboxes listed and matched to pods: workers for every pod of this node, adopting the
sandboxes they own; sandboxes no pod owns are destroyed → events from then on go to the workers.
The pod network (when configured) is set up as soon as the Node has its podCIDR; pods wait for it.

Stopping stops the workers and the loops but not the VMs: pods keep running while the agent is
away, and the next start adopts them (the kubelet's contract).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from podvisor.client import APIClient, Informer, load_kubeconfig
from podvisor.client.events import EventRecorder
from podvisor.spherelet.aio import cancel_and_wait
from podvisor.spherelet.clock import Clock, RealClock
from podvisor.spherelet.context import ImageProvider, NodeContext, PodNetwork
from podvisor.spherelet.node import NodeAgent
from podvisor.spherelet.podapi import PODS, APIPods
from podvisor.spherelet.podsync import image_holder
from podvisor.spherelet.runtime import Runtime, RuntimeFailure, Sandbox
from podvisor.spherelet.server import PodHandle, StreamingServer, ensure_serving_cert, server_ssl_context
from podvisor.spherelet.sources import APISources
from podvisor.spherelet.worker import PodWorkers

__all__ = ["Spherelet", "NetworkFactory"]

log = logging.getLogger("podvisor.spherelet")

NetworkFactory = Callable[[str], PodNetwork]
"""podCIDR -> the host's pod network (e.g. ``lambda cidr: HostNetwork(node, pod_cidr=cidr, state_dir=...)``)."""


class Spherelet:
    """One host's node agent. ``name``/``start()``/``stop()``/``describe()`` make it a `podvisor up` component."""

    name = "spherelet"

    def __init__(self, *, kubeconfig: Path, node_name: str, data_dir: Path, runtime: Runtime,
                 images: ImageProvider, network: NetworkFactory | None = None, host_ip: str = "127.0.0.1",
                 listen: str = "127.0.0.1", port: int = 0, serving_cert: tuple[Path, Path] | None = None,
                 client_ca: Path | None = None, clock: Clock | None = None, resync_seconds: float = 10.0,
                 source_ttl: float = 10.0, node_status_interval: float = 10.0, lease_renew_interval: float = 10.0,
                 labels: Mapping[str, str] | None = None, reserved_memory: int = 256 * 2**20) -> None:
        self.kubeconfig, self.node_name, self.data_dir = Path(kubeconfig), node_name, Path(data_dir)
        self.runtime, self.images, self.network_factory = runtime, images, network
        self.host_ip, self.listen, self.port = host_ip, listen, port
        self.serving_cert, self.client_ca = serving_cert, client_ca
        self.clock: Clock = clock or RealClock()
        self.resync_seconds, self.source_ttl = resync_seconds, source_ttl
        self.node_status_interval, self.lease_renew_interval = node_status_interval, lease_renew_interval
        self.labels, self.reserved_memory = dict(labels or {}), reserved_memory
        self.client: APIClient | None = None
        self.node: NodeAgent | None = None
        self.server: StreamingServer | None = None
        self.informer: Informer | None = None
        self.workers: PodWorkers | None = None
        self.ctx: NodeContext | None = None
        self.recorder: EventRecorder | None = None
        self.network: PodNetwork | None = None
        self.network_error = ""
        self._adopted = False
        self._tasks: list[asyncio.Task[None]] = []
        self.orphans_removed: list[str] = []
        self._owns_runtime = False

    @classmethod
    def with_hostd(cls, *, kubeconfig: Path, node_name: str, data_dir: Path, hostd_url: str, hostd_secret: str,
                   hostd_cert: Path | None, images: ImageProvider, network: NetworkFactory | None = None,
                   **kw: Any) -> Spherelet:
        """A spherelet whose pods are VMs of the hostd at ``hostd_url`` (logged in with the host secret,
        trusting exactly ``hostd_cert``); the hostd client is closed when the spherelet stops."""
        from podvisor.hostd.client import HostdClient
        from podvisor.spherelet.hostd_runtime import HostdRuntime

        runtime = HostdRuntime(HostdClient(hostd_url, secret=hostd_secret, cert_file=hostd_cert), data_dir=data_dir)
        agent = cls(kubeconfig=kubeconfig, node_name=node_name, data_dir=data_dir, runtime=runtime, images=images,
                    network=network, **kw)
        agent._owns_runtime = True
        return agent

    # ---- the component -----------------------------------------------------------------------------

    async def start(self) -> None:
        self.client = APIClient(load_kubeconfig(self.kubeconfig, user_agent=f"spherelet/{self.node_name}"))
        if self.client_ca is None and self.listen not in ("127.0.0.1", "::1", "localhost"):
            raise ValueError("the spherelet serves exec and port-forward: listening beyond loopback needs a client CA")
        if hasattr(self.runtime, "read_log"):
            cert, key = self.serving_cert or ensure_serving_cert(self.data_dir / "pki", node_name=self.node_name,
                                                                 addresses=[self.host_ip, "127.0.0.1"])
            ctx_ssl = server_ssl_context(cert, key, client_ca=self.client_ca)
            self.server = StreamingServer(lookup=self, runtime=self.runtime, host=self.listen, port=self.port,  # type: ignore[arg-type]
                                          ssl_context=ctx_ssl, now=self.clock.now)
            await self.server.start()
            self.port = self.server.port
        self.node = NodeAgent(self.client, node_name=self.node_name, runtime=self.runtime, clock=self.clock,
                              host_ip=self.host_ip, daemon_port=self.port, labels=self.labels,
                              reserved_memory=self.reserved_memory, renew_interval=self.lease_renew_interval,
                              status_interval=self.node_status_interval, readiness=self._readiness)
        await self.node.register()
        await self.node.renew_lease()
        self.node.start()
        self.recorder = EventRecorder(self.client, component="kubelet", host=self.node_name)
        info = self.node.info
        self.ctx = NodeContext(
            node_name=self.node_name, runtime=self.runtime, images=self.images,
            sources=APISources(self.client, clock=self.clock.monotonic, ttl=self.source_ttl),
            api=APIPods(self.client), recorder=self.recorder, clock=self.clock, host_ip=self.host_ip,
            network_required=self.network_factory is not None, allocatable=dict(self.node.allocatable),
            host_cpus=info.cpus if info else 0, resync_seconds=self.resync_seconds)
        self.workers = PodWorkers(self.ctx)
        if self.network_factory is not None:
            self._tasks.append(asyncio.create_task(self._network_up(), name="spherelet-network"))
        self.informer = Informer(self.client, PODS, field_selector=f"spec.nodeName={self.node_name}")
        self.informer.add_handler(self._on_pod)
        self.informer.start()
        await self.informer.synced.wait()
        try:
            sandboxes = await self.runtime.list_sandboxes()
        except RuntimeFailure as exc:
            # without the runtime's list no pod may be started: it could own a running VM already
            log.warning("cannot list sandboxes yet (%s); pods wait until the runtime answers", exc)
            self._tasks.append(asyncio.create_task(self._adopt_when_ready(), name="spherelet-adopt"))
        else:
            await self._adopt(sandboxes)

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        await cancel_and_wait(tasks)
        if self.informer is not None:
            await self.informer.stop()
        if self.workers is not None:
            await self.workers.stop()
        if self.node is not None:
            await self.node.stop()
        if self.server is not None:
            await self.server.stop()
        if self.recorder is not None:
            await self.recorder.flush()
            await self.recorder.close()
        if self.client is not None:
            await self.client.close()
        close = getattr(self.runtime, "close", None)
        if self._owns_runtime and close is not None:
            await close()

    def describe(self) -> dict[str, Any]:
        return {"node": self.node_name, "spherelet": f"https://{self.listen}:{self.port}" if self.server else "",
                "pods": len(self.workers.workers) if self.workers else 0,
                "podCIDR": self.node.pod_cidr if self.node else ""}

    # ---- internals ---------------------------------------------------------------------------------

    def _readiness(self) -> tuple[bool, str]:
        if self.network_factory is not None and self.network is None:
            why = self.network_error or "waiting for the node's podCIDR"
            return False, f"container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady " \
                          f"message:{why}"
        return True, ""

    async def _network_up(self) -> None:
        assert self.node is not None and self.network_factory is not None and self.ctx is not None
        while True:
            if not self.node.pod_cidr:
                await self.node.refresh()
            if self.node.pod_cidr:
                try:
                    net = self.network_factory(self.node.pod_cidr)
                    await net.ensure()
                except Exception as exc:
                    self.network_error = str(exc)
                    log.warning("pod network: %s", exc)
                else:
                    self.network = net
                    self.ctx.network = net
                    self.network_error = ""
                    await self.node.sync_status(force=True)
                    if self.workers is not None:
                        await net.retain_pods(self.workers.running_uids())
                        self.workers.resync()
                    return
            await self.clock.sleep(1.0)

    def _on_pod(self, typ: str, pod: dict[str, Any]) -> None:
        if not self._adopted or self.workers is None:
            return
        if typ == "DELETED":
            self.workers.pod_deleted(pod)
        else:
            self.workers.pod_update(pod)

    async def _adopt_when_ready(self) -> None:
        delay = 1.0
        while True:
            await self.clock.sleep(delay)
            try:
                sandboxes = await self.runtime.list_sandboxes()
            except RuntimeFailure as exc:
                log.info("runtime still not answering: %s", exc)
                delay = min(30.0, delay * 2)
                continue
            await self._adopt(sandboxes)
            return

    async def _adopt(self, sandboxes: list[Sandbox]) -> None:
        """Match the runtime's sandboxes to this node's pods; start a worker per pod; remove the rest."""
        assert self.workers is not None and self.informer is not None
        pods = self.informer.items()
        orphans = self.workers.adopt(pods, sandboxes)
        self._release_stale_leases({str((p.get("metadata") or {}).get("uid", "")) for p in pods})
        self._adopted = True
        current = {str((p.get("metadata") or {}).get("uid", "")): p for p in self.informer.items()}
        for pod in current.values():   # anything that changed while adopting
            self.workers.pod_update(pod)
        for uid, worker in list(self.workers.workers.items()):
            if uid not in current:
                self.workers.pod_deleted(worker.last_pod)
        for sb in orphans:
            log.info("removing sandbox %s: no pod on this node owns it", sb.id)
            try:
                await self.runtime.destroy_sandbox(sb.id)
                self.orphans_removed.append(sb.id)
            except RuntimeFailure as exc:
                log.warning("remove orphan sandbox %s: %s", sb.id, exc)
            if self.network is not None and sb.pod_uid not in self.workers.workers:
                with contextlib.suppress(Exception):
                    await self.network.detach_pod(sb.pod_uid)

    def _release_stale_leases(self, live: set[str]) -> None:
        """Image leases of pods that are gone (deleted while the agent was away) are given back."""
        holders = getattr(self.images, "holders", None)
        if holders is None:
            return
        prefix = image_holder(self.node_name, "")
        for digest, names in holders().items():
            for name in names:
                if name.startswith(prefix) and name[len(prefix):] not in live:
                    self.images.release(digest, name)

    # ---- PodLookup for the streaming server --------------------------------------------------------

    def find(self, namespace: str, name: str) -> PodHandle | None:
        if self.informer is None or self.workers is None:
            return None
        pod = self.informer.get(f"{namespace}/{name}")
        if pod is None:
            return None
        worker = self.workers.workers.get(str((pod.get("metadata") or {}).get("uid", "")))
        if worker is None or worker.state.sandbox is None:
            return PodHandle(pod=pod, sandbox_id="", containers=[])
        return PodHandle(pod=pod, sandbox_id=worker.state.sandbox.id, containers=list(worker.state.containers))

    def pods(self) -> list[Mapping[str, Any]]:
        return list(self.informer.items()) if self.informer is not None else []
