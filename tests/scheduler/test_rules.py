"""The scheduler's rules on their own: quantities, requests, selectors, messages, back-off.

These are the pure parts of what the end-to-end tests exercise through the API; here each rule's
corner cases are checked directly (Kubernetes' documented semantics).
"""

from __future__ import annotations

from typing import Any

import pytest

from podvisor.scheduler.cache import PodInfo, SchedulerCache
from podvisor.scheduler.filters import NodeStatus, filter_node, fit_error_message
from podvisor.scheduler.interpod import prefilter
from podvisor.scheduler.quantity import parse_quantity, quantity_milli, quantity_value
from podvisor.scheduler.queue import SchedulingQueue
from podvisor.scheduler.resources import (
    DEFAULT_VM_OVERHEAD_CPU_MILLI,
    DEFAULT_VM_OVERHEAD_MEMORY,
    nonzero_requests,
    pod_requests,
)
from podvisor.scheduler.selectors import label_selector_matches, node_selector_matches, tolerates

Mi = 2**20


@pytest.mark.parametrize(("text", "milli", "value"), [
    ("100m", 100, 1), ("1", 1000, 1), ("0.5", 500, 1), ("1e3", 1_000_000, 1000), ("2k", 2_000_000, 2000),
    ("1Gi", 2**30 * 1000, 2**30), ("1.5Gi", 3 * 2**29 * 1000, 3 * 2**29), ("64Mi", 64 * Mi * 1000, 64 * Mi),
    ("250u", 1, 1), ("1E", 10**21, 10**18), (3, 3000, 3), ("1e-3", 1, 1), (".5", 500, 1),
])
def test_quantities(text: Any, milli: int, value: int) -> None:
    assert quantity_milli(text) == milli
    assert quantity_value(text) == value


def test_quantities_are_exact() -> None:
    assert parse_quantity("0.1") * 3 == parse_quantity("300m")


@pytest.mark.parametrize("bad", ["", "abc", "1Q", "1.2.3", "Gi", "1 Gi", "1e"])
def test_bad_quantities(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_quantity(bad)


def _c(name: str, cpu: str | None = None, mem: str | None = None, *, limits: bool = False, **kw: Any) -> dict[str, Any]:
    rl = {k: v for k, v in (("cpu", cpu), ("memory", mem)) if v}
    return {"name": name, "resources": {"limits" if limits else "requests": rl}, **kw}


def test_requests_sum_containers_max_init_and_add_vm_overhead() -> None:
    pod = {"spec": {"containers": [_c("a", "200m", "100Mi"), _c("b", "300m", "50Mi")],
                    "initContainers": [_c("i1", "1", "10Mi"), _c("i2", "100m", "500Mi")]}}
    r = pod_requests(pod)
    assert r.cpu == 1000 + DEFAULT_VM_OVERHEAD_CPU_MILLI
    assert r.memory == 500 * Mi + DEFAULT_VM_OVERHEAD_MEMORY


def test_sidecars_add_to_the_sum_and_to_later_init_containers() -> None:
    pod = {"spec": {"containers": [_c("app", "500m", "100Mi")],
                    "initContainers": [_c("proxy", "200m", "50Mi", restartPolicy="Always"), _c("migrate", "1", "10Mi")]}}
    r = pod_requests(pod)
    assert r.cpu == 1200 + DEFAULT_VM_OVERHEAD_CPU_MILLI  # migrate runs beside the proxy: 1000m + 200m
    assert r.memory == 150 * Mi + DEFAULT_VM_OVERHEAD_MEMORY  # steady state: app + proxy


def test_limits_stand_in_for_missing_requests_and_runtimeclass_overhead_replaces_default() -> None:
    pod = {"spec": {"containers": [_c("a", "1", "1Gi", limits=True)], "overhead": {"cpu": "250m", "memory": "160Mi"}}}
    r = pod_requests(pod)
    assert (r.cpu, r.memory) == (1250, 2**30 + 160 * Mi)


def test_best_effort_pods_count_defaults_for_scoring_only() -> None:
    pod = {"spec": {"containers": [{"name": "a"}]}}
    assert pod_requests(pod).cpu == DEFAULT_VM_OVERHEAD_CPU_MILLI
    assert nonzero_requests(pod).cpu == 100 + DEFAULT_VM_OVERHEAD_CPU_MILLI
    assert nonzero_requests(pod).memory == 200 * Mi + DEFAULT_VM_OVERHEAD_MEMORY


def _node(name: str, labels: dict[str, str] | None = None, **status: Any) -> dict[str, Any]:
    st = {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
          "conditions": [{"type": "Ready", "status": "True"}], **status}
    return {"metadata": {"name": name, "labels": labels or {}}, "spec": {}, "status": st}


def _term(*exprs: dict[str, Any], fields: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    t: dict[str, Any] = {"matchExpressions": list(exprs)}
    if fields:
        t["matchFields"] = fields
    return {"nodeSelectorTerms": [t]}


@pytest.mark.parametrize(("expr", "labels", "want"), [
    ({"key": "zone", "operator": "In", "values": ["a", "b"]}, {"zone": "b"}, True),
    ({"key": "zone", "operator": "In", "values": ["a"]}, {}, False),
    ({"key": "zone", "operator": "NotIn", "values": ["a"]}, {}, True),
    ({"key": "zone", "operator": "NotIn", "values": ["a"]}, {"zone": "a"}, False),
    ({"key": "gpu", "operator": "Exists"}, {"gpu": ""}, True),
    ({"key": "gpu", "operator": "DoesNotExist"}, {"gpu": "x"}, False),
    ({"key": "cores", "operator": "Gt", "values": ["8"]}, {"cores": "16"}, True),
    ({"key": "cores", "operator": "Gt", "values": ["8"]}, {"cores": "8"}, False),
    ({"key": "cores", "operator": "Lt", "values": ["8"]}, {"cores": "4"}, True),
    ({"key": "cores", "operator": "Lt", "values": ["8"]}, {"cores": "many"}, False),
    ({"key": "cores", "operator": "Gt", "values": ["8"]}, {}, False),
])
def test_node_selector_operators(expr: dict[str, Any], labels: dict[str, str], want: bool) -> None:
    assert node_selector_matches(_term(expr), _node("n", labels)) is want


def test_node_selector_terms_are_ored_and_fields_match_names() -> None:
    sel = {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["x"]}]},
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n2"]}]},
    ]}
    assert node_selector_matches(sel, _node("n2"))
    assert not node_selector_matches(sel, _node("n1"))
    assert not node_selector_matches({"nodeSelectorTerms": [{}]}, _node("n1"))  # an empty term matches nothing


def test_label_selectors() -> None:
    assert label_selector_matches({}, {"a": "b"})
    assert not label_selector_matches(None, {"a": "b"})
    assert label_selector_matches({"matchLabels": {"a": "b"}, "matchExpressions": [
        {"key": "c", "operator": "DoesNotExist"}]}, {"a": "b"})


@pytest.mark.parametrize(("tol", "want"), [
    ({"operator": "Exists"}, True),
    ({"key": "k", "operator": "Exists"}, True),
    ({"key": "k", "operator": "Exists", "effect": "NoExecute"}, False),
    ({"key": "k", "value": "v"}, True),
    ({"key": "k", "operator": "Equal", "value": "w"}, False),
    ({"key": "other", "operator": "Exists"}, False),
])
def test_tolerations(tol: dict[str, Any], want: bool) -> None:
    assert tolerates([tol], {"key": "k", "value": "v", "effect": "NoSchedule"}) is want


def test_message_sorts_counts_as_strings_like_kubernetes() -> None:
    st = {f"n{i}": NodeStatus(("Insufficient cpu",), True) for i in range(10)}
    st["m"] = NodeStatus(("Insufficient memory", "Insufficient cpu"), True)
    st["x"] = NodeStatus(("node(s) were unschedulable",), False)
    st["y"] = NodeStatus(("node(s) were unschedulable",), False)
    msg = fit_error_message({"spec": {}}, 13, st)
    assert msg == ("0/13 nodes are available: 1 Insufficient memory, 11 Insufficient cpu, 2 node(s) were "
                   "unschedulable. preemption: 0/13 nodes are available: 11 No preemption victims found for "
                   "incoming pod, 2 Preemption is not helpful for scheduling.")


def test_message_when_preemption_is_off_or_there_are_no_nodes() -> None:
    st = {"n": NodeStatus(("Too many pods",), True)}
    assert fit_error_message({"spec": {"preemptionPolicy": "Never"}}, 1, st) == (
        "0/1 nodes are available: 1 Too many pods. preemption: not eligible due to preemptionPolicy=Never.")
    assert fit_error_message({"spec": {}}, 0, {}) == "no nodes available to schedule pods"


def _pod(name: str, labels: dict[str, str] | None = None, node: str = "", **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}", "labels": labels or {}},
            "spec": {"containers": [{"name": "c"}], **({"nodeName": node} if node else {}), **spec}}


def _hostname_term(**match: str) -> list[dict[str, Any]]:
    return [{"labelSelector": {"matchLabels": match}, "topologyKey": "kubernetes.io/hostname"}]


def test_incoming_anti_affinity_and_first_pod_of_a_self_attracting_group() -> None:
    cache = SchedulerCache()
    for n in ("a", "b"):
        cache.set_node(_node(n, {"kubernetes.io/hostname": n}))
    cache.add_pod(PodInfo.of(_pod("db", {"app": "db"}, "a")), "a")
    solo = PodInfo.of(_pod("solo", affinity={"podAntiAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": _hostname_term(app="db")}}))
    st = prefilter(solo, cache, lambda ns: {})
    verdicts = {n.name: filter_node(solo, n, st) for n in cache.known_nodes()}
    assert verdicts["a"] == NodeStatus(("node(s) didn't match pod anti-affinity rules",), True)
    assert verdicts["b"] is None
    # a pod attracted to its own label may start the group anywhere, when no such pod runs yet
    first = PodInfo.of(_pod("web0", {"app": "web"}, affinity={"podAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": _hostname_term(app="web")}}))
    st = prefilter(first, cache, lambda ns: {})
    assert all(filter_node(first, n, st) is None for n in cache.known_nodes())
    # ... but a pod attracted to another group waits for it
    follower = PodInfo.of(_pod("f", affinity={"podAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": _hostname_term(app="web")}}))
    st = prefilter(follower, cache, lambda ns: {})
    assert {filter_node(follower, n, st) for n in cache.known_nodes()} == {
        NodeStatus(("node(s) didn't match pod affinity rules",), False)}


def test_affinity_terms_respect_namespaces() -> None:
    cache = SchedulerCache()
    cache.set_node(_node("a", {"kubernetes.io/hostname": "a"}))
    other = _pod("db", {"app": "db"}, "a")
    other["metadata"]["namespace"] = "elsewhere"
    cache.add_pod(PodInfo.of(other), "a")
    same_ns = PodInfo.of(_pod("p", affinity={"podAntiAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": _hostname_term(app="db")}}))
    st = prefilter(same_ns, cache, lambda ns: {})
    assert filter_node(same_ns, cache.nodes["a"], st) is None  # the term looks in the pod's own namespace
    any_ns = PodInfo.of(_pod("q", affinity={"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "db"}}, "namespaceSelector": {},
         "topologyKey": "kubernetes.io/hostname"}]}}))
    st = prefilter(any_ns, cache, lambda ns: {})
    assert filter_node(any_ns, cache.nodes["a"], st) is not None


def test_assumed_pods_count_until_forgotten() -> None:
    cache = SchedulerCache()
    cache.set_node(_node("a", allocatable={"cpu": "1", "memory": "8Gi", "pods": "10"}))
    big = PodInfo.of(_pod("big", containers=[_c("c", "900m")]))
    cache.assume(big, "a")
    nxt = PodInfo.of(_pod("next", containers=[_c("c", "100m")]))
    st = prefilter(nxt, cache, lambda ns: {})
    assert filter_node(nxt, cache.nodes["a"], st) == NodeStatus(("Insufficient cpu",), True)
    cache.forget(big.uid)
    assert filter_node(nxt, cache.nodes["a"], st) is None


async def test_backoff_doubles_to_a_cap_and_parked_pods_wait_it_out() -> None:
    now = [100.0]
    q = SchedulingQueue(initial_backoff=1.0, max_backoff=10.0, unschedulable_timeout=60.0, clock=lambda: now[0])
    for expected in (1.0, 2.0, 4.0, 8.0, 10.0, 10.0):
        q.park("ns/p", "fp", affinity=False)
        assert q.backoff("ns/p") == expected
    now[0] += 3
    assert q.backoff_remaining("ns/p") == 7.0
    assert q.flush_stale() == 0
    now[0] += 60
    assert q.flush_stale() == 1 and q.parked("ns/p") is None
    q.park("ns/a", "fp", affinity=True)
    q.park("ns/b", "fp", affinity=False)
    assert q.move_all(only_affinity=True) == 1
    assert q.parked("ns/b") is not None
    q.forget("ns/b")
    assert q.parked("ns/b") is None and q.backoff("ns/b") == 0.0
    q.shutdown()


def test_hosts_under_pressure_or_not_ready_carry_kubernetes_condition_taints() -> None:
    cache = SchedulerCache()
    cache.set_node(_node("hot", conditions=[{"type": "Ready", "status": "True"},
                                            {"type": "MemoryPressure", "status": "True"}]))
    cache.set_node(_node("gone", conditions=[{"type": "Ready", "status": "Unknown"}]))
    cache.set_node(_node("new", conditions=[]))
    pod = PodInfo.of(_pod("p"))
    st = prefilter(pod, cache, lambda ns: {})
    reasons = {n.name: filter_node(pod, n, st) for n in cache.known_nodes()}
    assert reasons == {
        "hot": NodeStatus(("node(s) had untolerated taint {node.kubernetes.io/memory-pressure: }",), False),
        "gone": NodeStatus(("node(s) had untolerated taint {node.kubernetes.io/unreachable: }",), False),
        "new": NodeStatus(("node(s) had untolerated taint {node.kubernetes.io/not-ready: }",), False),
    }
    tolerant = PodInfo.of(_pod("t", tolerations=[{"key": "node.kubernetes.io/not-ready", "operator": "Exists"}]))
    assert filter_node(tolerant, cache.nodes["new"], prefilter(tolerant, cache, lambda ns: {})) is None
