"""The scheduler against a real API server: where pods land, and what a user reads when they cannot."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable

import pytest

from podvisor.scheduler.scheduler import NODES, PODS
from tests.scheduler.conftest import Env

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_binds_to_the_node_that_fits_and_records_it(env: Env) -> None:
    small = await env.add_node("small", cpu="1", memory="1Gi")
    big = await env.add_node("big", cpu="4", memory="8Gi")
    await env.start_scheduler().start()
    await env.create_pod("web", cpu="2", memory="1Gi")
    assert await env.wait_bound("web") == big
    pod = await env.pod("web")
    cond = next(c for c in pod["status"]["conditions"] if c["type"] == "PodScheduled")
    assert cond["status"] == "True"

    async def scheduled_event() -> list[dict]:
        return [e for e in await env.events("web") if e.get("reason") == "Scheduled"]
    (ev,) = await env.wait_for("Scheduled event", scheduled_event)
    assert ev["type"] == "Normal"
    assert ev["message"] == f"Successfully assigned {env.namespace}/web to {big}"
    assert ev["source"]["component"] == "default-scheduler"
    assert ev["reportingComponent"] == "default-scheduler"
    assert small != big


async def test_unschedulable_pod_is_explained_then_placed_when_a_host_appears(env: Env) -> None:
    await env.add_node("tight", cpu="4", memory="1Gi", labels={"disk": "ssd"})
    await env.add_node("hdd1", cpu="4", memory="16Gi", labels={"disk": "hdd"})
    await env.add_node("hdd2", cpu="4", memory="16Gi", labels={"disk": "hdd"})
    await env.start_scheduler().start()
    await env.create_pod("db", cpu="1", memory="2Gi", nodeSelector={"disk": "ssd"})
    msg = await env.wait_unschedulable("db")
    assert msg == ("0/3 nodes are available: 1 Insufficient memory, 2 node(s) didn't match Pod's node "
                   "affinity/selector. preemption: 0/3 nodes are available: 1 No preemption victims found for "
                   "incoming pod, 2 Preemption is not helpful for scheduling.")

    async def failed_event() -> list[dict]:
        return [e for e in await env.events("db") if e.get("reason") == "FailedScheduling"]
    (ev,) = await env.wait_for("FailedScheduling event", failed_event)
    assert ev["type"] == "Warning" and ev["message"] == msg

    described = await env.cp.kubectl("-n", env.namespace, "describe", "pod", "db")
    assert "FailedScheduling" in described and "default-scheduler" in described
    assert "1 Insufficient memory" in described

    # a host changes (not enough to help): the pod is tried again, and the same verdict is counted on the
    # same event rather than repeated
    await env.client.patch(NODES, env.prefix + "hdd1", {"metadata": {"labels": {"rack": "r2"}}})

    async def counted_twice() -> bool:
        evs = [e for e in await env.events("db") if e.get("reason") == "FailedScheduling"]
        return len(evs) == 1 and evs[0].get("count") == 2
    assert await env.wait_for("FailedScheduling counted twice", counted_twice)
    assert await env.wait_unschedulable("db") == msg

    roomy = await env.add_node("roomy", cpu="8", memory="32Gi", labels={"disk": "ssd"})
    assert await env.wait_bound("db") == roomy


async def test_resource_exhaustion_counts_assumed_pods_and_vm_overhead(env: Env) -> None:
    # 2 CPUs: two pods of 900m plus 50m VM overhead each fit (1900m); a third does not
    node = await env.add_node("only", cpu="2", memory="8Gi")
    await env.start_scheduler().start()
    await asyncio.gather(*(env.create_pod(f"w{i}", cpu="900m", memory="100Mi") for i in range(3)))
    placed = await env.wait_for("two placed", _bound_count(env, ["w0", "w1", "w2"], 2))
    assert placed
    pending = [n for n in ("w0", "w1", "w2") if not (await env.pod(n))["spec"].get("nodeName")]
    assert len(pending) == 1
    msg = await env.wait_unschedulable(pending[0])
    assert msg.startswith("0/1 nodes are available: 1 Insufficient cpu.")
    # a pod going away frees its share: the waiting pod is retried and placed
    gone = next(n for n in ("w0", "w1", "w2") if n != pending[0])
    await env.client.delete(PODS, gone, env.namespace, body={"gracePeriodSeconds": 0})
    assert await env.wait_bound(pending[0]) == node


async def test_a_burst_never_overcommits_a_host(env: Env) -> None:
    # 2 CPUs hold 13 pods of 100m + 50m overhead (1950m); the other 7 of a burst of 20 must wait
    await env.add_node("burst", cpu="2", memory="64Gi")
    await env.start_scheduler().start()
    names = [f"s{i}" for i in range(20)]
    await asyncio.gather(*(env.create_pod(n, cpu="100m", memory="10Mi") for n in names))

    async def settled() -> bool:
        bound = waiting = 0
        for n in names:
            pod = await env.pod(n)
            if pod["spec"].get("nodeName"):
                bound += 1
            elif any(c.get("reason") == "Unschedulable" for c in pod.get("status", {}).get("conditions") or []):
                waiting += 1
        return bound + waiting == len(names) and bound == 13
    assert await env.wait_for("13 placed, 7 waiting", settled)


async def test_vm_overhead_alone_can_exhaust_memory(env: Env) -> None:
    await env.add_node("m", cpu="4", memory="1Gi")
    await env.start_scheduler().start()
    await env.create_pod("fat", memory="992Mi")  # + 64Mi per pod VM > 1Gi
    msg = await env.wait_unschedulable("fat")
    assert msg.startswith("0/1 nodes are available: 1 Insufficient memory.")


async def test_too_many_pods(env: Env) -> None:
    await env.add_node("p", pods="1")
    await env.start_scheduler().start()
    await env.create_pod("a")
    await env.wait_bound("a")
    await env.create_pod("b")
    assert (await env.wait_unschedulable("b")).startswith("0/1 nodes are available: 1 Too many pods.")


async def test_taints_tolerations_affinity_and_cordon(env: Env) -> None:
    dedicated = await env.add_node("a", labels={"zone": "a"},
                                   taints=[{"key": "dedicated", "value": "db", "effect": "NoSchedule"}])
    await env.add_node("b", labels={"zone": "b"})
    await env.add_node("c", labels={"zone": "c"}, unschedulable=True)
    await env.add_node("d", labels={"zone": "a"}, ready="False")
    await env.start_scheduler().start()
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "c"]}]}]}}}
    await env.create_pod("plain", affinity=affinity)
    msg = await env.wait_unschedulable("plain")
    assert msg == ("0/4 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 1 node(s) had "
                   "untolerated taint {dedicated: db}, 1 node(s) had untolerated taint "
                   "{node.kubernetes.io/not-ready: }, 1 node(s) were unschedulable. preemption: 0/4 nodes are "
                   "available: 4 Preemption is not helpful for scheduling.")
    await env.create_pod("tolerant", affinity=affinity,
                         tolerations=[{"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}])
    assert await env.wait_bound("tolerant") == dedicated
    # matchFields picks a host by name; Exists/DoesNotExist and Gt work on labels
    by_name = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [env.prefix + "b"]}]}]}}}
    await env.create_pod("named", affinity=by_name)
    assert await env.wait_bound("named") == env.prefix + "b"


async def test_not_ready_node_gets_pods_once_ready(env: Env) -> None:
    name = await env.add_node("late", ready="False")
    await env.start_scheduler().start()
    await env.create_pod("waiting")
    msg = await env.wait_unschedulable("waiting")
    assert "1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }" in msg
    await env.client.patch(NODES, name, {"status": {"conditions": [{"type": "Ready", "status": "True"}]}},
                           subresource="status", patch_type="application/strategic-merge-patch+json")
    assert await env.wait_bound("waiting") == name


async def test_required_anti_affinity_spreads_and_affinity_follows(env: Env) -> None:
    nodes = [await env.add_node(n) for n in ("h1", "h2")]
    await env.start_scheduler().start()
    anti = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "kv"}}, "topologyKey": "kubernetes.io/hostname"}]}}
    for i in range(3):
        await env.create_pod(f"kv{i}", labels={"app": "kv"}, affinity=anti)
    placed = await env.wait_for("two replicas placed", _bound_count(env, ["kv0", "kv1", "kv2"], 2))
    assert placed
    hosts = [(await env.pod(f"kv{i}"))["spec"].get("nodeName") for i in range(3)]
    assert sorted(h for h in hosts if h) == sorted(nodes)
    stuck = f"kv{hosts.index(None)}"
    msg = await env.wait_unschedulable(stuck)
    # the replicas already placed repel it too, and Kubernetes checks their rules first
    assert msg == ("0/2 nodes are available: 2 node(s) didn't satisfy existing pods anti-affinity rules. preemption: "
                   "0/2 nodes are available: 2 No preemption victims found for incoming pod.")
    # pod affinity: a cache pod goes next to kv0
    near = {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "kv"}}, "topologyKey": "kubernetes.io/hostname"}]}}
    await env.create_pod("cache", affinity=near)
    assert await env.wait_bound("cache") in nodes
    # an existing pod's anti-affinity keeps others away: "loner" repels everything labelled role=any
    await env.client.delete(PODS, stuck, env.namespace, body={"gracePeriodSeconds": 0})
    h3 = await env.add_node("h3")
    repel = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"role": "any"}}, "topologyKey": "kubernetes.io/hostname"}]}}
    await env.create_pod("loner", affinity=repel, nodeSelector={"kubernetes.io/hostname": h3})
    assert await env.wait_bound("loner") == h3
    await env.create_pod("visitor", labels={"role": "any"}, nodeSelector={"kubernetes.io/hostname": h3})
    msg = await env.wait_unschedulable("visitor")
    assert "1 node(s) didn't satisfy existing pods anti-affinity rules" in msg


async def test_pods_are_balanced_across_equal_hosts(env: Env) -> None:
    nodes = [await env.add_node(n, cpu="8", memory="16Gi") for n in ("x", "y", "z")]
    await env.start_scheduler().start()
    names = [f"b{i}" for i in range(9)]
    await asyncio.gather(*(env.create_pod(n, cpu="500m", memory="512Mi") for n in names))
    assert await env.wait_for("all placed", _bound_count(env, names, 9))
    where = Counter([(await env.pod(n))["spec"]["nodeName"] for n in names])
    assert where == Counter(dict.fromkeys(nodes, 3))


async def test_prefer_no_schedule_and_preferred_affinity_steer_placement(env: Env) -> None:
    await env.add_node("soft", taints=[{"key": "maintenance", "effect": "PreferNoSchedule"}])
    clean = await env.add_node("clean")
    await env.add_node("other")
    await env.start_scheduler().start()
    prefer_clean = {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 100, "preference": {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [clean]}]}}]}}
    await env.create_pod("steered", affinity=prefer_clean)
    assert await env.wait_bound("steered") == clean
    await env.create_pod("must-go-soft", nodeSelector={"kubernetes.io/hostname": env.prefix + "soft"})
    # PreferNoSchedule only scores: a pod that must go there still goes
    assert await env.wait_bound("must-go-soft") == env.prefix + "soft"


async def test_other_scheduler_names_are_left_alone(env: Env) -> None:
    await env.add_node("n")
    await env.start_scheduler().start()
    await env.create_pod("theirs", scheduler_name="someone-else")
    await env.create_pod("ours")
    await env.wait_bound("ours")
    pod = await env.pod("theirs")
    assert not pod["spec"].get("nodeName")
    assert not [c for c in pod.get("status", {}).get("conditions") or [] if c["type"] == "PodScheduled"]
    assert not await env.events("theirs")


async def test_default_scheduler_name_is_ours(env: Env) -> None:
    node = await env.add_node("n", labels={"only-for": env.namespace})
    await env.start_scheduler(scheduler_names=("default-scheduler", "podvisor")).start()
    await env.create_pod("dflt", scheduler_name="default-scheduler", nodeSelector={"only-for": env.namespace})
    await env.create_pod("pv", scheduler_name="podvisor", nodeSelector={"only-for": env.namespace})
    assert await env.wait_bound("dflt") == node
    assert await env.wait_bound("pv") == node


async def test_no_nodes_at_all(env: Env) -> None:
    await env.start_scheduler().start()
    await env.create_pod("alone")
    msg = await env.wait_unschedulable("alone")
    assert msg == "no nodes available to schedule pods"


def _bound_count(env: Env, names: list[str], want: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        n = 0
        for name in names:
            if (await env.pod(name))["spec"].get("nodeName"):
                n += 1
        return n >= want
    return check
