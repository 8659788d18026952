"""Filters: can this pod run on this host at all? And, when no host can, the sentence that says why.

Filters run in kube-scheduler's order and a node stops at the first that rejects it, so each host is
counted under one cause (resources may name several: a host short of both CPU and memory counts for
both):

1. unschedulable (cordoned) hosts — "node(s) were unschedulable";
2. taints with effect NoSchedule or NoExecute the pod does not tolerate — "node(s) had untolerated taint
   {key: value}" (a host that is not Ready, or under pressure, carries Kubernetes' condition taint,
   e.g. ``node.kubernetes.io/not-ready``, see cache.py);
3. nodeSelector and required node affinity — "node(s) didn't match Pod's node affinity/selector";
4. host ports already taken — "node(s) didn't have free ports for the requested pod ports";
5. resources against allocatable, counting placed and assumed pods and every pod VM's overhead —
   "Too many pods", "Insufficient cpu", "Insufficient memory", "Insufficient ephemeral-storage",
   "Insufficient <extended resource>";
6. pod (anti-)affinity (interpod.py).

The message is Kubernetes' (``FitError``): ``0/N nodes are available: <count> <reason>, ... .`` with the
"<count> <reason>" strings sorted as strings, then the preemption verdict in the same shape. Podvisor
does not preempt, so a host rejected for a reason preemption could cure (resources, ports,
anti-affinity) reads "No preemption victims found for incoming pod" and any other "Preemption is not
helpful for scheduling", as a cluster without lower-priority pods would say.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from podvisor.scheduler.cache import NodeInfo, PodInfo
from podvisor.scheduler.interpod import InterPodState
from podvisor.scheduler.interpod import filter_node as interpod_filter
from podvisor.scheduler.selectors import first_untolerated, node_selector_matches, tolerates

__all__ = [
    "NodeStatus", "filter_node", "fit_error_message", "NO_NODES_MESSAGE", "REASON_UNSCHEDULABLE",
    "REASON_NODE_AFFINITY", "REASON_PORTS", "REASON_TOO_MANY_PODS", "untolerated_taint_reason",
]

NO_NODES_MESSAGE = "no nodes available to schedule pods"
REASON_UNSCHEDULABLE = "node(s) were unschedulable"
REASON_NODE_AFFINITY = "node(s) didn't match Pod's node affinity/selector"
REASON_PORTS = "node(s) didn't have free ports for the requested pod ports"
REASON_TOO_MANY_PODS = "Too many pods"
_NOT_HELPFUL = "Preemption is not helpful for scheduling"
_NO_VICTIMS = "No preemption victims found for incoming pod"

_UNSCHEDULABLE_TAINT = {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}


@dataclass(frozen=True)
class NodeStatus:
    reasons: tuple[str, ...]
    resolvable: bool  # could evicting other pods make room (resources, ports, anti-affinity)?


def untolerated_taint_reason(taint: dict[str, Any]) -> str:
    return f"node(s) had untolerated taint {{{taint.get('key', '')}: {taint.get('value') or ''}}}"


def pod_matches_node_selector(pod: dict[str, Any], node: dict[str, Any]) -> bool:
    spec = pod.get("spec") or {}
    labels = (node.get("metadata") or {}).get("labels") or {}
    for k, v in (spec.get("nodeSelector") or {}).items():
        if labels.get(k) != str(v):
            return False
    required = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution"))
    return required is None or node_selector_matches(required, node)


def _ports_conflict(want: Iterable[tuple[str, str, int]], used: set[tuple[str, str, int]]) -> bool:
    for ip, proto, port in want:
        for uip, uproto, uport in used:
            if port == uport and proto == uproto and (ip == uip or "0.0.0.0" in (ip, uip)):
                return True
    return False


def _resource_reasons(pod: PodInfo, node: NodeInfo) -> list[str]:
    reasons: list[str] = []
    if len(node.pods) + 1 > node.allowed_pods:
        reasons.append(REASON_TOO_MANY_PODS)
    want, used, have = pod.requests, node.requested, node.allocatable
    if want.cpu > 0 and want.cpu > have.cpu - used.cpu:
        reasons.append("Insufficient cpu")
    if want.memory > 0 and want.memory > have.memory - used.memory:
        reasons.append("Insufficient memory")
    if want.ephemeral > 0 and want.ephemeral > have.ephemeral - used.ephemeral:
        reasons.append("Insufficient ephemeral-storage")
    for name, q in sorted(want.scalars.items()):
        if q > 0 and q > have.scalars.get(name, 0) - used.scalars.get(name, 0):
            reasons.append(f"Insufficient {name}")
    return reasons


def filter_node(pod: PodInfo, node: NodeInfo, interpod: InterPodState) -> NodeStatus | None:
    """None when the pod fits on the node; else why not."""
    assert node.node is not None
    spec = pod.pod.get("spec") or {}
    tolerations = [t for t in spec.get("tolerations") or [] if isinstance(t, dict)]
    if (node.node.get("spec") or {}).get("unschedulable") and not tolerates(tolerations, _UNSCHEDULABLE_TAINT):
        return NodeStatus((REASON_UNSCHEDULABLE,), False)
    taint = first_untolerated(node.taints, tolerations, ("NoSchedule", "NoExecute"))
    if taint is not None:
        return NodeStatus((untolerated_taint_reason(dict(taint)),), False)
    if not pod_matches_node_selector(pod.pod, node.node):
        return NodeStatus((REASON_NODE_AFFINITY,), False)
    if pod.host_ports and _ports_conflict(pod.host_ports, node.used_ports()):
        return NodeStatus((REASON_PORTS,), True)
    reasons = _resource_reasons(pod, node)
    if reasons:
        return NodeStatus(tuple(reasons), True)
    verdict = interpod_filter(interpod, node)
    if verdict is not None:
        return NodeStatus((verdict[0],), verdict[1])
    return None


def _histogram(counts: Counter[str]) -> str:
    return ", ".join(sorted(f"{n} {reason}" for reason, n in counts.items()))


def fit_error_message(pod: dict[str, Any], num_nodes: int, statuses: dict[str, NodeStatus]) -> str:
    if num_nodes == 0:
        return NO_NODES_MESSAGE
    reasons: Counter[str] = Counter()
    for st in statuses.values():
        for r in st.reasons:
            reasons[r] += 1
    msg = f"0/{num_nodes} nodes are available:"
    if reasons:
        msg += f" {_histogram(reasons)}."
    if (pod.get("spec") or {}).get("preemptionPolicy") == "Never":
        return msg + " preemption: not eligible due to preemptionPolicy=Never."
    verdicts: Counter[str] = Counter()
    for st in statuses.values():
        verdicts[_NO_VICTIMS if st.resolvable else _NOT_HELPFUL] += 1
    return msg + f" preemption: 0/{num_nodes} nodes are available: {_histogram(verdicts)}."
