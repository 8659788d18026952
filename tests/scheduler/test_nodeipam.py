"""Pod CIDRs for hosts: unique, kept in the Node objects only, stable across a controller restart."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from podvisor.client import NotFound
from podvisor.controllers.nodeipam import NodeIPAMController
from podvisor.scheduler.scheduler import NODES
from tests.scheduler.conftest import Env, node_object

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def _cidrs(env: Env, names: list[str]) -> dict[str, list[str]]:
    out = {}
    for n in names:
        spec = (await env.client.get(NODES, n)).get("spec") or {}
        out[n] = list(spec.get("podCIDRs") or [])
        if out[n]:
            assert spec.get("podCIDR") == out[n][0]
    return out


async def _wait_all(env: Env, names: list[str]) -> dict[str, list[str]]:
    async def check() -> dict[str, list[str]] | None:
        got = await _cidrs(env, names)
        return got if all(got.values()) else None
    result: dict[str, list[str]] = await env.wait_for(f"pod CIDRs on {names}", check)
    return result


async def _add(env: Env, short: str) -> str:
    name = env.prefix + short
    await env.client.create(NODES, node_object(name))
    env.nodes.append(name)
    return name


async def test_default_range_is_10_88_slash_16_in_slash_24s(env: Env) -> None:
    ipam = NodeIPAMController(env.client)
    await ipam.start()
    try:
        name = await _add(env, "first")
        (cidr,) = (await _wait_all(env, [name]))[name]
        net = ipaddress.IPv4Network(cidr)
        assert net.prefixlen == 24 and net.subnet_of(ipaddress.IPv4Network("10.88.0.0/16"))
    finally:
        await ipam.stop()
        await env.client.delete(NODES, name)
        env.nodes.remove(name)


async def test_unique_stable_across_restart_and_released_on_delete(env: Env) -> None:
    cluster = "10.123.0.0/22"  # four /24s
    ipam = NodeIPAMController(env.client, cluster_cidr=cluster, node_mask_size=24)
    await ipam.start()
    names = [await _add(env, s) for s in ("a", "b", "c")]
    first = await _wait_all(env, names)
    await ipam.stop()
    flat = [c for v in first.values() for c in v]
    assert len(set(flat)) == 3
    assert all(ipaddress.IPv4Network(c).subnet_of(ipaddress.IPv4Network(cluster)) for c in flat)

    # while no controller runs, a node goes away and two arrive
    await env.client.delete(NODES, names[1])
    env.nodes.remove(names[1])
    late = [await _add(env, s) for s in ("d", "e")]

    # a new controller learns the used ranges from the Node objects alone
    ipam2 = NodeIPAMController(env.client, cluster_cidr=cluster, node_mask_size=24)
    await ipam2.start()
    try:
        after = await _wait_all(env, [names[0], names[2], *late])
        assert after[names[0]] == first[names[0]] and after[names[2]] == first[names[2]]
        all_now = [c for v in after.values() for c in v]
        assert len(set(all_now)) == 4  # every /24 used once: the freed one was given again
        assert first[names[1]][0] in all_now

        # the range is full: a fifth host waits, with an event, until one is freed
        last = await _add(env, "f")

        async def cidr_not_available() -> list[dict[str, Any]]:
            from podvisor.client.events import EVENTS
            items = (await env.client.list(EVENTS, "default", field_selector=f"involvedObject.name={last}")).get("items")
            return [e for e in items or [] if e.get("reason") == "CIDRNotAvailable"]
        await env.wait_for("CIDRNotAvailable event", cidr_not_available)
        assert not (await _cidrs(env, [last]))[last]
        await env.client.delete(NODES, late[0])
        env.nodes.remove(late[0])
        got = (await _wait_all(env, [last]))[last]
        assert got == after[late[0]]
    finally:
        await ipam2.stop()


async def test_a_range_set_by_hand_is_respected(env: Env) -> None:
    cluster = "10.124.0.0/23"  # two /24s
    taken = await _add(env, "manual")
    await env.client.patch(NODES, taken, {"spec": {"podCIDR": "10.124.0.0/24", "podCIDRs": ["10.124.0.0/24"]}})
    ipam = NodeIPAMController(env.client, cluster_cidr=cluster)
    await ipam.start()
    try:
        auto = await _add(env, "auto")
        assert (await _wait_all(env, [auto]))[auto] == ["10.124.1.0/24"]
    finally:
        await ipam.stop()
        for n in (taken, auto):
            try:
                await env.client.delete(NODES, n)
            except NotFound:
                pass
            env.nodes.remove(n)
