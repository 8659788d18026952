"""The scheduler's picture of the cluster: each node with the pods placed on it, including *assumed* ones.

Binding is a network round trip, and the watch that confirms it comes later still. If the scheduler
placed the next pod from the informer's view alone, it would not yet see the pod it just bound and
would overfill the same host. So, as kube-scheduler does, a pod is *assumed* onto its node the moment
it is chosen (counted at once), the binding runs in the background, and the assumption is replaced by
the real object when the watch shows the pod bound — or dropped if the binding fails.

Pods that finished (Succeeded/Failed) free their share and are not kept. Pods bound to a node the
cache does not know yet (the Node object arrives later) are kept under that name, so the node starts
with them counted.

Every pod is digested once into a ``PodInfo`` (requests, ports, affinity terms) so that filtering a
pod against N nodes does not re-parse the same specs N times.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from podvisor.scheduler.resources import Resources, node_allocatable, nonzero_requests, pod_requests
from podvisor.scheduler.selectors import label_selector_matches, node_labels

__all__ = [
    "AffinityTerm", "WeightedTerm", "PodInfo", "NodeInfo", "SchedulerCache", "HOSTNAME_LABEL", "topology_value",
    "condition_taints",
]

HOSTNAME_LABEL = "kubernetes.io/hostname"

NamespaceLabels = Callable[[str], dict[str, str]]


@dataclass(frozen=True)
class AffinityTerm:
    selector: dict[str, Any] | None
    namespaces: frozenset[str]
    namespace_selector: dict[str, Any] | None
    topology_key: str

    @classmethod
    def parse(cls, pod_ns: str, pod_labels: dict[str, str], term: dict[str, Any]) -> AffinityTerm:
        selector = term.get("labelSelector")
        if selector is not None:
            exprs = list(selector.get("matchExpressions") or [])
            for k in term.get("matchLabelKeys") or []:
                if k in pod_labels:
                    exprs.append({"key": k, "operator": "In", "values": [pod_labels[k]]})
            for k in term.get("mismatchLabelKeys") or []:
                if k in pod_labels:
                    exprs.append({"key": k, "operator": "NotIn", "values": [pod_labels[k]]})
            selector = {"matchLabels": dict(selector.get("matchLabels") or {}), "matchExpressions": exprs}
        namespaces = frozenset(str(n) for n in term.get("namespaces") or [])
        ns_selector = term.get("namespaceSelector")
        if not namespaces and ns_selector is None:
            namespaces = frozenset({pod_ns})
        return cls(selector, namespaces, ns_selector, str(term.get("topologyKey") or ""))

    def matches(self, pod: PodInfo, ns_labels: NamespaceLabels) -> bool:
        if pod.namespace not in self.namespaces:
            if self.namespace_selector is None:
                return False
            if not label_selector_matches(self.namespace_selector, ns_labels(pod.namespace)):
                return False
        return label_selector_matches(self.selector, pod.labels)


@dataclass(frozen=True)
class WeightedTerm:
    term: AffinityTerm
    weight: int


def _terms(pod_ns: str, labels: dict[str, str], raw: list[Any] | None) -> tuple[AffinityTerm, ...]:
    return tuple(AffinityTerm.parse(pod_ns, labels, t) for t in raw or [] if isinstance(t, dict))


def _weighted(pod_ns: str, labels: dict[str, str], raw: list[Any] | None) -> tuple[WeightedTerm, ...]:
    out = []
    for w in raw or []:
        if isinstance(w, dict) and isinstance(w.get("podAffinityTerm"), dict):
            out.append(WeightedTerm(AffinityTerm.parse(pod_ns, labels, w["podAffinityTerm"]), int(w.get("weight") or 0)))
    return tuple(out)


@dataclass
class PodInfo:
    pod: dict[str, Any]
    uid: str
    key: str
    namespace: str
    labels: dict[str, str]
    requests: Resources
    nonzero: Resources
    host_ports: tuple[tuple[str, str, int], ...]
    affinity: tuple[AffinityTerm, ...]
    anti_affinity: tuple[AffinityTerm, ...]
    preferred_affinity: tuple[WeightedTerm, ...]
    preferred_anti_affinity: tuple[WeightedTerm, ...]

    @classmethod
    def of(cls, pod: dict[str, Any]) -> PodInfo:
        md = pod.get("metadata") or {}
        spec = pod.get("spec") or {}
        ns = str(md.get("namespace") or "default")
        labels = {str(k): str(v) for k, v in (md.get("labels") or {}).items()}
        ports = []
        for c in [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]:
            for p in c.get("ports") or []:
                if p.get("hostPort"):
                    ports.append((str(p.get("hostIP") or "0.0.0.0"), str(p.get("protocol") or "TCP"), int(p["hostPort"])))
        aff = spec.get("affinity") or {}
        pa, paa = aff.get("podAffinity") or {}, aff.get("podAntiAffinity") or {}
        req = "requiredDuringSchedulingIgnoredDuringExecution"
        pref = "preferredDuringSchedulingIgnoredDuringExecution"
        return cls(
            pod=pod, uid=str(md.get("uid") or f"{ns}/{md.get('name')}"), key=f"{ns}/{md.get('name')}",
            namespace=ns, labels=labels, requests=pod_requests(pod), nonzero=nonzero_requests(pod),
            host_ports=tuple(ports),
            affinity=_terms(ns, labels, pa.get(req)), anti_affinity=_terms(ns, labels, paa.get(req)),
            preferred_affinity=_weighted(ns, labels, pa.get(pref)),
            preferred_anti_affinity=_weighted(ns, labels, paa.get(pref)),
        )

    @property
    def has_affinity(self) -> bool:
        return bool(self.affinity or self.anti_affinity or self.preferred_affinity or self.preferred_anti_affinity)


# condition type -> (status that means trouble, taint key), as Kubernetes taints nodes by condition
_CONDITION_TAINTS = {
    "MemoryPressure": ("True", "node.kubernetes.io/memory-pressure"),
    "DiskPressure": ("True", "node.kubernetes.io/disk-pressure"),
    "PIDPressure": ("True", "node.kubernetes.io/pid-pressure"),
    "NetworkUnavailable": ("True", "node.kubernetes.io/network-unavailable"),
}


def condition_taints(node: dict[str, Any]) -> list[dict[str, Any]]:
    """The NoSchedule taints Kubernetes' node lifecycle puts on a node by its conditions, if missing.

    A host whose Ready condition is False (or not reported yet) is ``node.kubernetes.io/not-ready``; one
    whose agent stopped reporting (Unknown) is ``node.kubernetes.io/unreachable``; a host under memory,
    disk or PID pressure, or without its network, carries the matching taint. So the scheduler skips
    such hosts with Kubernetes' own wording, whether or not a lifecycle controller has written the
    taints yet, while a pod that tolerates one (as DaemonSet pods do) may still land there.
    """
    ready = "False"
    wanted: list[str] = []
    for c in (node.get("status") or {}).get("conditions") or []:
        typ, status = c.get("type"), str(c.get("status") or "Unknown")
        if typ == "Ready":
            ready = status
        elif typ in _CONDITION_TAINTS and status == _CONDITION_TAINTS[typ][0]:
            wanted.append(_CONDITION_TAINTS[typ][1])
    if ready != "True":
        wanted.insert(0, "node.kubernetes.io/unreachable" if ready == "Unknown" else "node.kubernetes.io/not-ready")
    existing = {(t.get("key"), t.get("effect")) for t in (node.get("spec") or {}).get("taints") or []}
    return [{"key": k, "effect": "NoSchedule"} for k in wanted if (k, "NoSchedule") not in existing]


def topology_value(node: dict[str, Any], key: str) -> str | None:
    """The node's value for a topology key; a node without a hostname label is its own hostname."""
    labels = (node.get("metadata") or {}).get("labels") or {}
    if key in labels:
        return str(labels[key])
    if key == HOSTNAME_LABEL:
        return str((node.get("metadata") or {}).get("name", "")) or None
    return None


@dataclass
class NodeInfo:
    name: str
    node: dict[str, Any] | None = None
    allocatable: Resources = field(default_factory=Resources)
    allowed_pods: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    taints: list[dict[str, Any]] = field(default_factory=list)
    pods: dict[str, PodInfo] = field(default_factory=dict)
    requested: Resources = field(default_factory=Resources)
    nonzero_requested: Resources = field(default_factory=Resources)

    def set_node(self, node: dict[str, Any]) -> None:
        self.node = node
        self.allocatable, self.allowed_pods = node_allocatable(node)
        self.labels = node_labels(node)
        self.taints = [*((node.get("spec") or {}).get("taints") or []), *condition_taints(node)]

    def add(self, p: PodInfo) -> None:
        self.remove(p.uid)
        self.pods[p.uid] = p
        self.requested.add(p.requests)
        self.nonzero_requested.add(p.nonzero)

    def remove(self, uid: str) -> None:
        old = self.pods.pop(uid, None)
        if old is not None:
            self.requested.sub(old.requests)
            self.nonzero_requested.sub(old.nonzero)

    def used_ports(self) -> set[tuple[str, str, int]]:
        return {hp for p in self.pods.values() for hp in p.host_ports}


class SchedulerCache:
    def __init__(self) -> None:
        self.nodes: dict[str, NodeInfo] = {}
        self._where: dict[str, str] = {}  # pod uid -> node name
        self._assumed: set[str] = set()
        self._with_affinity: dict[str, str] = {}  # uid -> node name, pods carrying any affinity term

    # nodes
    def set_node(self, node: dict[str, Any]) -> None:
        name = str(node["metadata"]["name"])
        self.nodes.setdefault(name, NodeInfo(name)).set_node(node)

    def remove_node(self, name: str) -> None:
        info = self.nodes.get(name)
        if info is None:
            return
        if info.pods:
            info.node = None  # keep the pods counted until they go too
        else:
            del self.nodes[name]

    def known_nodes(self) -> list[NodeInfo]:
        """Every node the API knows (whatever its condition): the N of "0/N nodes are available"."""
        return [n for n in self.nodes.values() if n.node is not None]

    # pods
    def add_pod(self, info: PodInfo, node_name: str) -> None:
        """A pod the watch shows bound to ``node_name`` (confirming an assumption if there was one)."""
        self._assumed.discard(info.uid)
        self._place(info, node_name)

    def assume(self, info: PodInfo, node_name: str) -> None:
        self._assumed.add(info.uid)
        self._place(info, node_name)

    def forget(self, uid: str) -> None:
        """Drop an assumption whose binding failed (a confirmed pod stays)."""
        if uid in self._assumed:
            self._assumed.discard(uid)
            self.remove_pod(uid)

    def is_assumed(self, uid: str) -> bool:
        return uid in self._assumed

    def has_pod(self, uid: str) -> bool:
        return uid in self._where

    def remove_pod(self, uid: str) -> None:
        self._assumed.discard(uid)
        self._with_affinity.pop(uid, None)
        name = self._where.pop(uid, None)
        if name is None:
            return
        info = self.nodes.get(name)
        if info is not None:
            info.remove(uid)
            if info.node is None and not info.pods:
                del self.nodes[name]

    def _place(self, info: PodInfo, node_name: str) -> None:
        old = self._where.get(info.uid)
        if old is not None and old != node_name:
            prev = self.nodes.get(old)
            if prev is not None:
                prev.remove(info.uid)
                if prev.node is None and not prev.pods:
                    del self.nodes[old]
        self._where[info.uid] = node_name
        self.nodes.setdefault(node_name, NodeInfo(node_name)).add(info)
        if info.has_affinity:
            self._with_affinity[info.uid] = node_name
        else:
            self._with_affinity.pop(info.uid, None)

    def pods(self, *, with_affinity_only: bool = False) -> Iterator[tuple[NodeInfo, PodInfo]]:
        """Placed pods with their nodes; optionally only those that carry affinity terms (few, usually)."""
        if with_affinity_only:
            for uid, name in list(self._with_affinity.items()):
                n = self.nodes.get(name)
                p = n.pods.get(uid) if n is not None else None
                if n is not None and p is not None:
                    yield n, p
            return
        for n in self.nodes.values():
            for p in n.pods.values():
                yield n, p
