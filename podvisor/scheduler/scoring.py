"""Scores: among the hosts a pod fits on, which is best? This is where the DRS balances load.

Each scorer gives every candidate host 0..100; the total is their weighted sum, with kube-scheduler's
default weights, and the highest total wins (ties broken at random so equal hosts fill evenly):

- least allocated (weight 1): the share of CPU and memory left free after placing the pod, counting
  pod VM overhead and, like Kubernetes, 100m/200Mi for containers that request nothing — an emptier
  host scores higher, which spreads pods across hosts;
- balanced allocation (weight 1): prefers the host where CPU and memory would be used in the most even
  proportion, so no host runs out of one while the other idles;
- node affinity (weight 2): the summed weights of the pod's preferred node-affinity terms the host
  matches, scaled to the best host;
- taint toleration (weight 3): fewer untolerated PreferNoSchedule taints score higher;
- inter-pod affinity (weight 2): preferred pod (anti-)affinity, see interpod.py.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from podvisor.scheduler.cache import NodeInfo, PodInfo, SchedulerCache
from podvisor.scheduler.interpod import score_nodes as interpod_scores
from podvisor.scheduler.selectors import node_selector_term_matches, tolerates

__all__ = ["WEIGHTS", "score", "pick"]

MAX_SCORE = 100
WEIGHTS = {"least_allocated": 1, "balanced": 1, "node_affinity": 2, "taints": 3, "interpod": 2}


def _least_allocated(pod: PodInfo, node: NodeInfo) -> int:
    total = 0
    for have, used in ((node.allocatable.cpu, node.nonzero_requested.cpu + pod.nonzero.cpu),
                       (node.allocatable.memory, node.nonzero_requested.memory + pod.nonzero.memory)):
        if have > 0 and used <= have:
            total += (have - used) * MAX_SCORE // have
    return total // 2


def _balanced(pod: PodInfo, node: NodeInfo) -> int:
    fractions = []
    for have, used in ((node.allocatable.cpu, node.requested.cpu + pod.requests.cpu),
                       (node.allocatable.memory, node.requested.memory + pod.requests.memory)):
        fractions.append(min(1.0, used / have) if have > 0 else 1.0)
    std = abs(fractions[0] - fractions[1]) / 2
    return int((1 - std) * MAX_SCORE)


def _normalize(raw: dict[str, int], *, reverse: bool = False) -> dict[str, int]:
    top = max(raw.values(), default=0)
    if top == 0:
        return dict.fromkeys(raw, MAX_SCORE if reverse else 0)
    out = {k: v * MAX_SCORE // top for k, v in raw.items()}
    return {k: MAX_SCORE - v for k, v in out.items()} if reverse else out


def _node_affinity_raw(pod: dict[str, Any], node: dict[str, Any]) -> int:
    prefs = ((((pod.get("spec") or {}).get("affinity") or {}).get("nodeAffinity") or {})
             .get("preferredDuringSchedulingIgnoredDuringExecution")) or []
    total = 0
    for p in prefs:
        if isinstance(p, dict) and node_selector_term_matches(p.get("preference") or {}, node):
            total += int(p.get("weight") or 0)
    return total


def _prefer_no_schedule_raw(pod: dict[str, Any], node: NodeInfo) -> int:
    tols = [t for t in (pod.get("spec") or {}).get("tolerations") or []
            if isinstance(t, dict) and t.get("effect") in (None, "", "PreferNoSchedule")]
    return sum(1 for t in node.taints if t.get("effect") == "PreferNoSchedule" and not tolerates(tols, t))


def score(pod: PodInfo, nodes: list[NodeInfo], cache: SchedulerCache,
          ns_labels: Callable[[str], dict[str, str]]) -> dict[str, int]:
    """Weighted total per candidate node name."""
    totals = dict.fromkeys((n.name for n in nodes), 0)
    if len(nodes) <= 1:
        return totals
    for n in nodes:
        totals[n.name] += WEIGHTS["least_allocated"] * _least_allocated(pod, n)
        totals[n.name] += WEIGHTS["balanced"] * _balanced(pod, n)
    aff = _normalize({n.name: _node_affinity_raw(pod.pod, n.node or {}) for n in nodes})
    taints = _normalize({n.name: _prefer_no_schedule_raw(pod.pod, n) for n in nodes}, reverse=True)
    for name in totals:
        totals[name] += WEIGHTS["node_affinity"] * aff[name] + WEIGHTS["taints"] * taints[name]
    for name, s in interpod_scores(pod, cache, nodes, ns_labels).items():
        totals[name] += WEIGHTS["interpod"] * s
    return totals


def pick(totals: dict[str, int], rng: random.Random) -> str:
    """The best node; among equals, one chosen uniformly at random."""
    best = max(totals.values())
    return rng.choice(sorted(name for name, s in totals.items() if s == best))
