"""The scheduler (Podvisor's DRS): places each unbound pod on a host, through the API like any client.

Shape (kube-scheduler's, reduced to what Podvisor needs):
- informers on pods, nodes and namespaces keep a local picture; their handlers only update the cache
  (cache.py) and the queue (queue.py) — the decision is made by one worker, from the cache, one pod at
  a time, so two pods never count the same free memory twice;
- a pod is ours when it has no ``spec.nodeName``, is not being deleted, and names ``default-scheduler``
  or ``podvisor`` (configurable) as its ``schedulerName``; pods for other schedulers are left alone;
- an attempt filters every host (filters.py), scores the survivors (scoring.py), *assumes* the pod
  onto the winner and binds it in the background with ``POST pods/<name>/binding``; a Normal
  ``Scheduled`` event says "Successfully assigned <ns>/<pod> to <node>";
- a pod that fits nowhere gets ``PodScheduled=False``, reason ``Unschedulable``, with Kubernetes'
  message, and a Warning ``FailedScheduling`` event (repeats aggregate into one event's count), and is
  parked until the cluster changes (queue.py).

Events and conditions are written as ``default-scheduler``, the name kubectl users know.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import random
import socket
from datetime import UTC, datetime
from typing import Any

from podvisor.client import APIClient, APIStatusError, Conflict, Informer, NotFound, Res, obj_key
from podvisor.client.events import EventRecorder
from podvisor.scheduler.cache import PodInfo, SchedulerCache
from podvisor.scheduler.filters import NodeStatus, filter_node, fit_error_message
from podvisor.scheduler.interpod import REASON_AFFINITY, REASON_ANTI, REASON_EXISTING_ANTI, prefilter
from podvisor.scheduler.queue import SchedulingQueue
from podvisor.scheduler.scoring import pick, score

__all__ = ["Scheduler", "PODS", "NODES", "NAMESPACES", "DEFAULT_SCHEDULER_NAMES"]

log = logging.getLogger("podvisor.scheduler")

PODS = Res("", "v1", "pods", namespaced=True, kind="Pod")
NODES = Res("", "v1", "nodes", namespaced=False, kind="Node")
NAMESPACES = Res("", "v1", "namespaces", namespaced=False, kind="Namespace")

DEFAULT_SCHEDULER_NAMES = ("default-scheduler", "podvisor")
COMPONENT = "default-scheduler"
_TERMINAL = ("Succeeded", "Failed")
_INTERPOD_REASONS = {REASON_AFFINITY, REASON_ANTI, REASON_EXISTING_ANTI}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _fingerprint(pod: dict[str, Any]) -> str:
    """What the pod asks for (spec and labels), so our own status writes do not count as edits."""
    md = pod.get("metadata") or {}
    doc = {"spec": pod.get("spec"), "labels": md.get("labels"), "uid": md.get("uid")}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def _node_signature(node: dict[str, Any] | None) -> Any:
    """The parts of a Node that can change a placement (not heartbeats)."""
    if node is None:
        return None
    status = node.get("status") or {}
    spec = node.get("spec") or {}
    conditions = sorted((str(c.get("type")), str(c.get("status"))) for c in status.get("conditions") or [])
    return json.dumps([status.get("allocatable") or status.get("capacity"), (node.get("metadata") or {}).get("labels"),
                       spec.get("taints"), bool(spec.get("unschedulable")), conditions], sort_keys=True, default=str)


def _condition(pod: dict[str, Any], typ: str) -> dict[str, Any] | None:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == typ:
            return dict(c)
    return None


class Scheduler:
    name = "scheduler"

    def __init__(self, client: APIClient, *, scheduler_names: tuple[str, ...] = DEFAULT_SCHEDULER_NAMES,
                 initial_backoff: float = 1.0, max_backoff: float = 10.0, unschedulable_timeout: float = 60.0,
                 seed: int | None = None) -> None:
        self.client = client
        self.scheduler_names = frozenset(scheduler_names)
        self.cache = SchedulerCache()
        self.queue = SchedulingQueue(initial_backoff=initial_backoff, max_backoff=max_backoff,
                                     unschedulable_timeout=unschedulable_timeout)
        self.pods = Informer(client, PODS)
        self.nodes = Informer(client, NODES)
        self.namespaces = Informer(client, NAMESPACES)
        self.recorder = EventRecorder(client, component=COMPONENT, host=socket.gethostname())
        self.rng = random.Random(seed)
        self.stats = {"scheduled": 0, "failed_attempts": 0, "bind_errors": 0}
        self._tasks: list[asyncio.Task[None]] = []
        self._binds: set[asyncio.Task[None]] = set()
        self.nodes.add_handler(self._on_node)
        self.pods.add_handler(self._on_pod)
        self.namespaces.add_handler(self._on_namespace)

    # lifecycle
    async def start(self) -> None:
        self.namespaces.start()
        self.nodes.start()
        self.pods.start()
        self._tasks = [asyncio.create_task(self._run(), name="scheduler"),
                       asyncio.create_task(self._flush_loop(), name="scheduler-flush")]

    async def stop(self) -> None:
        for t in [*self._tasks, *self._binds]:
            t.cancel()
        await asyncio.gather(*self._tasks, *self._binds, return_exceptions=True)
        self._tasks.clear()
        self.queue.shutdown()
        for inf in (self.pods, self.nodes, self.namespaces):
            await inf.stop()
        await self.recorder.close()

    def describe(self) -> dict[str, Any]:
        return {"scheduler": {"names": sorted(self.scheduler_names), "nodes": len(self.cache.known_nodes()),
                              "unschedulable": self.queue.unschedulable_count, **self.stats}}

    async def wait_synced(self) -> None:
        for inf in (self.namespaces, self.nodes, self.pods):
            await inf.synced.wait()

    # informer handlers: update the picture, enqueue keys; never call the API
    def is_ours(self, pod: dict[str, Any]) -> bool:
        spec = pod.get("spec") or {}
        return (not spec.get("nodeName") and not (pod.get("metadata") or {}).get("deletionTimestamp")
                and (spec.get("schedulerName") or "default-scheduler") in self.scheduler_names
                and (pod.get("status") or {}).get("phase") not in _TERMINAL)

    def _on_node(self, typ: str, node: dict[str, Any]) -> None:
        name = str(node["metadata"]["name"])
        if typ == "DELETED":
            self.cache.remove_node(name)
            return
        old = self.cache.nodes.get(name)
        before = _node_signature(old.node if old else None)
        self.cache.set_node(node)
        if before != _node_signature(node):
            self.queue.move_all()

    def _on_namespace(self, typ: str, ns: dict[str, Any]) -> None:
        if typ != "DELETED":
            self.queue.move_all(only_affinity=True)

    def _on_pod(self, typ: str, pod: dict[str, Any]) -> None:
        md = pod.get("metadata") or {}
        key = obj_key(pod)
        uid = str(md.get("uid") or key)
        spec = pod.get("spec") or {}
        phase = (pod.get("status") or {}).get("phase")
        if typ == "DELETED" or phase in _TERMINAL:
            placed = self.cache.has_pod(uid)
            self.cache.remove_pod(uid)
            self.queue.forget(key)
            if placed:
                self.queue.move_all()  # its share of a host is free again
            return
        if spec.get("nodeName"):
            confirming = self.cache.is_assumed(uid)
            known = self.cache.has_pod(uid)
            try:
                info = PodInfo.of(pod)
            except ValueError as exc:
                log.warning("pod %s has requests we cannot read (%s); counting it as empty", key, exc)
                info = PodInfo.of({**pod, "spec": {**spec, "containers": [], "initContainers": [], "overhead": None}})
            self.cache.add_pod(info, str(spec["nodeName"]))
            self.queue.forget(key)
            if not known and not confirming:
                self.queue.move_all(only_affinity=True)  # a pod placed by someone else may attract or repel
            return
        if not self.is_ours(pod):
            self.queue.forget(key)
            return
        if self.cache.has_pod(uid):
            return  # assumed: its binding is in flight
        parked = self.queue.parked(key)
        if parked is not None:
            if parked.fingerprint != _fingerprint(pod):
                self.queue.activate(key)  # the user changed the pod: try again (after back-off)
            return
        self.queue.add(key)

    # the scheduling loop
    async def _run(self) -> None:
        await self.wait_synced()
        while True:
            key = await self.queue.get()
            try:
                await self.schedule_one(key)
            except asyncio.CancelledError:
                raise
            except (APIStatusError, OSError, TimeoutError) as exc:
                log.info("scheduling %s: %s; will retry", key, exc)
                self.queue.retry_after_error(key)
            except Exception:
                log.exception("scheduling %s failed unexpectedly; will retry", key)
                self.queue.retry_after_error(key)
            finally:
                self.queue.done(key)

    async def _flush_loop(self) -> None:
        period = min(30.0, max(1.0, self.queue.unschedulable_timeout / 4))
        while True:
            await asyncio.sleep(period)
            self.queue.flush_stale()

    def _ns_labels(self, name: str) -> dict[str, str]:
        ns = self.namespaces.get(name)
        return dict(((ns or {}).get("metadata") or {}).get("labels") or {})

    async def schedule_one(self, key: str) -> None:
        pod = self.pods.get(key)
        if pod is None or not self.is_ours(pod):
            self.queue.forget(key)
            return
        uid = str(pod["metadata"].get("uid") or key)
        if self.cache.has_pod(uid):
            return
        if (pod.get("spec") or {}).get("schedulingGates"):
            await self._set_condition(pod, "SchedulingGated", "Scheduling is blocked due to non-empty scheduling gates")
            return
        try:
            info = PodInfo.of(pod)
        except ValueError as exc:
            await self._unschedulable(pod, key, f"invalid resource requests: {exc}", affinity=False)
            return
        nodes = self.cache.known_nodes()
        statuses: dict[str, NodeStatus] = {}
        feasible = []
        if nodes:
            state = prefilter(info, self.cache, self._ns_labels)
            for n in nodes:
                st = filter_node(info, n, state)
                if st is None:
                    feasible.append(n)
                else:
                    statuses[n.name] = st
        if not feasible:
            interpod = info.has_affinity or any(r in _INTERPOD_REASONS for s in statuses.values() for r in s.reasons)
            await self._unschedulable(pod, key, fit_error_message(pod, len(nodes), statuses), affinity=interpod)
            return
        totals = score(info, feasible, self.cache, self._ns_labels)
        chosen = pick(totals, self.rng)
        self.cache.assume(info, chosen)
        self.queue.forget(key)
        task = asyncio.create_task(self._bind(pod, info, chosen), name=f"bind-{key}")
        self._binds.add(task)
        task.add_done_callback(self._binds.discard)

    async def _bind(self, pod: dict[str, Any], info: PodInfo, node: str) -> None:
        md = pod["metadata"]
        ns, name = info.namespace, str(md["name"])
        body = {"apiVersion": "v1", "kind": "Binding",
                "metadata": {"name": name, "namespace": ns, **({"uid": md["uid"]} if md.get("uid") else {})},
                "target": {"apiVersion": "v1", "kind": "Node", "name": node}}
        try:
            await self.client.request("POST", PODS.path(ns, name, "binding"), body=body)
        except NotFound:
            self.cache.forget(info.uid)  # the pod is gone
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # Conflict (bound elsewhere / deleting), transport errors, ...
            self.cache.forget(info.uid)
            self.stats["bind_errors"] += 1
            log.info("binding %s to %s failed: %s", info.key, node, exc)
            self.recorder.emit(pod, type="Warning", reason="FailedScheduling", action="Binding", kind="Pod",
                               message=f"Binding rejected: {exc}")
            if isinstance(exc, Conflict):
                self.queue.add(info.key)
            else:
                self.queue.retry_after_error(info.key)
            self.queue.move_all()
            return
        self.stats["scheduled"] += 1
        log.debug("bound %s to %s", info.key, node)
        self.recorder.emit(pod, type="Normal", reason="Scheduled", action="Binding", kind="Pod",
                           message=f"Successfully assigned {ns}/{name} to {node}")

    async def _unschedulable(self, pod: dict[str, Any], key: str, message: str, *, affinity: bool) -> None:
        self.queue.park(key, _fingerprint(pod), affinity=affinity)
        self.stats["failed_attempts"] += 1
        log.info("pod %s is unschedulable: %s", key, message)
        self.recorder.emit(pod, type="Warning", reason="FailedScheduling", action="Scheduling", kind="Pod",
                           message=message)
        await self._set_condition(pod, "Unschedulable", message)

    async def _set_condition(self, pod: dict[str, Any], reason: str, message: str) -> None:
        """PodScheduled=False with reason and message, unless the pod already says exactly that."""
        old = _condition(pod, "PodScheduled")
        if old and old.get("status") == "False" and old.get("reason") == reason and old.get("message") == message:
            return
        since = old.get("lastTransitionTime") if old and old.get("status") == "False" else None
        cond = {"type": "PodScheduled", "status": "False", "reason": reason, "message": message,
                "lastTransitionTime": since or _now()}
        md = pod["metadata"]
        with contextlib.suppress(NotFound):
            await self.client.patch(PODS, str(md["name"]), {"status": {"conditions": [cond]}},
                                     str(md.get("namespace") or "default"),
                                     patch_type="application/strategic-merge-patch+json", subresource="status")
