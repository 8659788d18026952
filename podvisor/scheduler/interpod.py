"""Pod affinity and anti-affinity: placing a pod relative to the pods already on the hosts.

Terms group hosts into topology domains by a node label (``topologyKey``; with one VM host per node
that is usually ``kubernetes.io/hostname``, and any other label works the same way). Before filtering
the nodes, one pass over the pods already placed counts, per (topology key, value):

- existing pods whose *required anti-affinity* matches the incoming pod (they keep it out of their
  domain: "didn't satisfy existing pods anti-affinity rules");
- existing pods matching *all* of the incoming pod's required affinity terms (it must join one of their
  domains: "didn't match pod affinity rules" — unless no pod matches anywhere and the pod matches its
  own terms, so the first replica of a group that attracts itself can start);
- existing pods matching the incoming pod's required anti-affinity ("didn't match pod anti-affinity
  rules").

Scoring sums, per domain, the weights of preferred terms in both directions (the incoming pod's terms
over existing pods, existing pods' terms over the incoming pod, existing pods' required affinity
counting weight 1), then scales the sums to 0..100 across the candidate nodes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from podvisor.scheduler.cache import NodeInfo, PodInfo, SchedulerCache, topology_value

__all__ = [
    "InterPodState", "prefilter", "filter_node", "score_nodes", "REASON_EXISTING_ANTI", "REASON_ANTI",
    "REASON_AFFINITY",
]

REASON_EXISTING_ANTI = "node(s) didn't satisfy existing pods anti-affinity rules"
REASON_ANTI = "node(s) didn't match pod anti-affinity rules"
REASON_AFFINITY = "node(s) didn't match pod affinity rules"

HARD_AFFINITY_WEIGHT = 1

NamespaceLabels = Callable[[str], dict[str, str]]
Pair = tuple[str, str]


@dataclass
class InterPodState:
    pod: PodInfo
    existing_anti: Counter[Pair] = field(default_factory=Counter)
    affinity: Counter[Pair] = field(default_factory=Counter)
    anti: Counter[Pair] = field(default_factory=Counter)
    first_of_group: bool = False


def prefilter(pod: PodInfo, cache: SchedulerCache, ns_labels: NamespaceLabels) -> InterPodState:
    st = InterPodState(pod)
    # without terms of its own, only pods with (anti-)affinity can say anything about this pod
    for node, q in cache.pods(with_affinity_only=not (pod.affinity or pod.anti_affinity)):
        if node.node is None or q.uid == pod.uid:
            continue
        for t in q.anti_affinity:
            if t.matches(pod, ns_labels):
                v = topology_value(node.node, t.topology_key)
                if v is not None:
                    st.existing_anti[(t.topology_key, v)] += 1
        if pod.affinity and all(t.matches(q, ns_labels) for t in pod.affinity):
            for t in pod.affinity:
                v = topology_value(node.node, t.topology_key)
                if v is not None:
                    st.affinity[(t.topology_key, v)] += 1
        for t in pod.anti_affinity:
            if t.matches(q, ns_labels):
                v = topology_value(node.node, t.topology_key)
                if v is not None:
                    st.anti[(t.topology_key, v)] += 1
    st.first_of_group = bool(pod.affinity) and not st.affinity and all(
        t.matches(pod, ns_labels) for t in pod.affinity)
    return st


def filter_node(st: InterPodState, node: NodeInfo) -> tuple[str, bool] | None:
    """None if the node passes; else (reason, resolvable by preemption)."""
    assert node.node is not None
    if st.existing_anti:
        for key in {k for k, _ in st.existing_anti}:
            v = topology_value(node.node, key)
            if v is not None and st.existing_anti.get((key, v), 0) > 0:
                return REASON_EXISTING_ANTI, True
    for t in st.pod.anti_affinity:
        v = topology_value(node.node, t.topology_key)
        if v is not None and st.anti.get((t.topology_key, v), 0) > 0:
            return REASON_ANTI, True
    if st.pod.affinity:
        pods_exist = True
        for t in st.pod.affinity:
            v = topology_value(node.node, t.topology_key)
            if v is None:
                return REASON_AFFINITY, False
            if st.affinity.get((t.topology_key, v), 0) <= 0:
                pods_exist = False
        if not pods_exist and not st.first_of_group:
            return REASON_AFFINITY, False
    return None


def score_nodes(pod: PodInfo, cache: SchedulerCache, nodes: list[NodeInfo],
                ns_labels: NamespaceLabels) -> dict[str, int]:
    """0..100 per candidate node; all zero when no preference applies."""
    scores: dict[Pair, int] = Counter()
    mine = bool(pod.preferred_affinity or pod.preferred_anti_affinity)
    for node, q in cache.pods(with_affinity_only=not mine):
        if node.node is None or q.uid == pod.uid:
            continue
        contrib: list[tuple[str, int]] = []
        for w in pod.preferred_affinity:
            if w.term.matches(q, ns_labels):
                contrib.append((w.term.topology_key, w.weight))
        for w in pod.preferred_anti_affinity:
            if w.term.matches(q, ns_labels):
                contrib.append((w.term.topology_key, -w.weight))
        for t in q.affinity:
            if t.matches(pod, ns_labels):
                contrib.append((t.topology_key, HARD_AFFINITY_WEIGHT))
        for w in q.preferred_affinity:
            if w.term.matches(pod, ns_labels):
                contrib.append((w.term.topology_key, w.weight))
        for w in q.preferred_anti_affinity:
            if w.term.matches(pod, ns_labels):
                contrib.append((w.term.topology_key, -w.weight))
        for key, weight in contrib:
            v = topology_value(node.node, key)
            if v is not None:
                scores[(key, v)] += weight
    raw: dict[str, int] = {}
    keys = {k for k, _ in scores}
    for n in nodes:
        assert n.node is not None
        total = 0
        for key in keys:
            v = topology_value(n.node, key)
            if v is not None:
                total += scores.get((key, v), 0)
        raw[n.name] = total
    if not raw:
        return {}
    lo, hi = min(raw.values()), max(raw.values())
    if hi == lo:
        return dict.fromkeys(raw, 0)
    return {name: (s - lo) * 100 // (hi - lo) for name, s in raw.items()}
