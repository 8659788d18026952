"""Node IPAM: gives every Node a pod CIDR (``spec.podCIDR`` / ``spec.podCIDRs``) out of the cluster CIDR.

Each host's pod network hands out pod IPs from its node's range, so no two hosts may share one. The
Node objects are the only record: at start the controller lists the nodes and marks every range they
already hold as used (a range that is not one of our subnets but overlaps the cluster CIDR blocks
every subnet it touches), and only then hands out new ones — so a restart, or a second controller
after a failover, never gives out a range twice. A node keeps its range for life (Kubernetes forbids
changing it); deleting the node frees it.

Allocation is one worker, next-fit from after the last range given (so a just-freed range is not
reused at once while the old host may still be tearing its pods down). The API server refuses to
change a range once set, so if another writer got there first our patch fails and the node's newer
copy is taken as it is. When the cluster CIDR is full, the node gets a ``CIDRNotAvailable`` event and
is retried with back-off.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from typing import Any

from podvisor.client import APIClient, APIStatusError, Conflict, Informer, NotFound, Res, WorkQueue
from podvisor.client.events import EventRecorder

__all__ = ["NodeIPAMController", "DEFAULT_CLUSTER_CIDR", "DEFAULT_NODE_MASK_SIZE"]

log = logging.getLogger("podvisor.controllers.nodeipam")

NODES = Res("", "v1", "nodes", namespaced=False, kind="Node")
DEFAULT_CLUSTER_CIDR = "10.88.0.0/16"
DEFAULT_NODE_MASK_SIZE = 24
_MAX_SUBNET_BITS = 20  # at most ~1M node ranges: the set of used ranges stays small

Net = ipaddress.IPv4Network | ipaddress.IPv6Network


def _node_cidrs(node: dict[str, Any]) -> list[str]:
    spec = node.get("spec") or {}
    cidrs = [str(c) for c in spec.get("podCIDRs") or [] if c]
    if not cidrs and spec.get("podCIDR"):
        cidrs = [str(spec["podCIDR"])]
    return cidrs


class NodeIPAMController:
    name = "node-ipam-controller"

    def __init__(self, client: APIClient, *, cluster_cidr: str = DEFAULT_CLUSTER_CIDR,
                 node_mask_size: int = DEFAULT_NODE_MASK_SIZE) -> None:
        self.network: Net = ipaddress.ip_network(cluster_cidr, strict=True)
        if not self.network.prefixlen <= node_mask_size <= self.network.max_prefixlen:
            raise ValueError(f"node mask size /{node_mask_size} does not fit in cluster CIDR {cluster_cidr}")
        if node_mask_size - self.network.prefixlen > _MAX_SUBNET_BITS:
            raise ValueError(f"cluster CIDR {cluster_cidr} split into /{node_mask_size} has too many ranges")
        self.client = client
        self.mask = node_mask_size
        self.size = 2 ** (node_mask_size - self.network.prefixlen)
        self._step = 2 ** (self.network.max_prefixlen - node_mask_size)
        self.used: dict[int, str] = {}  # subnet index -> node name
        self._next = 0
        self._waiting: set[str] = set()  # nodes refused for want of a free range
        self.informer = Informer(client, NODES)
        self.queue: WorkQueue[str] = WorkQueue(base_delay=0.5, max_delay=30)
        self.recorder = EventRecorder(client, component="node-ipam-controller")
        self._tasks: list[asyncio.Task[None]] = []
        self.informer.add_handler(self._on_event)

    # ranges
    def subnet(self, index: int) -> Net:
        base = int(self.network.network_address) + index * self._step
        return ipaddress.ip_network((base, self.mask))

    def _indices(self, cidr: str) -> range:
        """The subnet indices a CIDR covers within the cluster CIDR (empty if it lies outside)."""
        try:
            net = ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            return range(0)
        if net.version != self.network.version or not net.overlaps(self.network):
            return range(0)
        start = max(int(net.network_address), int(self.network.network_address))
        end = min(int(net.broadcast_address), int(self.network.broadcast_address))
        first = (start - int(self.network.network_address)) // self._step
        last = (end - int(self.network.network_address)) // self._step
        return range(first, last + 1)

    def occupy(self, node: str, cidr: str) -> None:
        for i in self._indices(cidr):
            holder = self.used.get(i)
            if holder is not None and holder != node:
                log.warning("pod CIDR %s of node %s overlaps the range of node %s", cidr, node, holder)
                continue
            self.used[i] = node

    def release(self, node: str) -> None:
        for i in [i for i, n in self.used.items() if n == node]:
            del self.used[i]

    def allocate(self, node: str) -> Net | None:
        for k in range(self.size):
            i = (self._next + k) % self.size
            if i not in self.used:
                self.used[i] = node
                self._next = (i + 1) % self.size
                return self.subnet(i)
        return None

    def assigned(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for i, n in sorted(self.used.items()):
            out.setdefault(n, []).append(str(self.subnet(i)))
        return out

    # informer -> queue
    def _on_event(self, typ: str, node: dict[str, Any]) -> None:
        name = str(node["metadata"]["name"])
        if typ == "DELETED":
            self._waiting.discard(name)
            if any(n == name for n in self.used.values()):
                self.release(name)
                for waiting in self._waiting:  # a range came free: try them now, not at their next back-off
                    self.queue.add(waiting)
            return
        cidrs = _node_cidrs(node)
        if cidrs:
            for c in cidrs:
                self.occupy(name, c)
        else:
            self.queue.add(name)

    async def start(self) -> None:
        self.informer.start()
        self._tasks = [asyncio.create_task(self._worker(), name="node-ipam")]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        self.queue.shutdown()
        await self.informer.stop()
        await self.recorder.close()

    def describe(self) -> dict[str, Any]:
        return {"cluster_cidr": str(self.network), "node_mask_size": self.mask, "allocated": len(self.used)}

    async def _worker(self) -> None:
        await self.informer.synced.wait()  # every range already held is known before one is given
        while True:
            name = await self.queue.get()
            try:
                done = await self.sync(name)
            except (APIStatusError, OSError, TimeoutError) as exc:
                log.info("node %s: %s; retrying", name, exc)
                done = False
            except Exception:
                log.exception("node %s: unexpected failure", name)
                done = False
            finally:
                self.queue.done(name)
            if done:
                self.queue.forget(name)
            else:
                self.queue.add_rate_limited(name)

    async def sync(self, name: str) -> bool:
        """Give the node a range if it has none; True when nothing is left to do."""
        node = self.informer.get(name)
        if node is None:
            return True
        cidrs = _node_cidrs(node)
        if cidrs:
            for c in cidrs:
                self.occupy(name, c)
            self._waiting.discard(name)
            return True
        if any(n == name for n in self.used.values()):
            return True  # we gave it a range already; the cache has not seen that write yet
        net = self.allocate(name)
        if net is None:
            self._waiting.add(name)
            log.warning("no pod CIDR left in %s for node %s", self.network, name)
            self.recorder.emit(node, type="Normal", reason="CIDRNotAvailable", kind="Node",
                               message=f"Node {name} status is now: CIDRNotAvailable")
            return False
        patch = {"spec": {"podCIDR": str(net), "podCIDRs": [str(net)]}}
        try:
            await self.client.patch(NODES, name, patch)
        except NotFound:
            self.release(name)
            return True
        except (Conflict, APIStatusError) as exc:
            # most likely someone else gave it a range first (a range, once set, cannot change):
            # look again at the newer copy
            self.release(name)
            log.info("node %s: could not set pod CIDR %s: %s", name, net, exc)
            return False
        except BaseException:
            self.release(name)
            raise
        self._waiting.discard(name)
        log.info("node %s: pod CIDR %s", name, net)
        return True
