"""A host's pod network in real namespaces: namespace, bridge, gateway, taps, pods reaching each other."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from podvisor.network import GuestNetConfig, HostNetwork, NetworkError, tap_name
from tests.network.frames import TapEndpoint
from tests.network.nettools import (
    leave_stale_mount_point,
    needs_root,
    netns_exists,
    new_host_name,
    ping_from,
    root_has_link,
    sh,
)

pytestmark = needs_root

FakePods = Callable[[HostNetwork, GuestNetConfig], str]


def links(netns: str) -> dict[str, dict]:
    out = sh("ip", "-n", netns, "-j", "-d", "link", "show").stdout
    return {link["ifname"]: link for link in json.loads(out)}


def bridge_addresses(net: HostNetwork) -> list[str]:
    out = sh("ip", "-n", net.netns, "-j", "-4", "addr", "show", "dev", net.bridge).stdout
    return [f"{a['local']}/{a['prefixlen']}" for e in json.loads(out) for a in e["addr_info"]]


def root_ipv4_addresses() -> str:
    return sh("ip", "-4", "-o", "addr", "show").stdout


async def test_ensure_makes_namespace_bridge_and_gateway(host_net: HostNetwork) -> None:
    assert host_net.netns == f"pv-{host_net.host_name}"
    assert netns_exists(host_net.netns)
    br = links(host_net.netns)["pvbr0"]
    assert br["linkinfo"]["info_kind"] == "bridge"
    assert "UP" in br["flags"]
    assert br["address"] == host_net.bridge_mac
    assert bridge_addresses(host_net) == ["10.88.0.1/24"]
    # the host side speaks IPv4 only, and nothing of it is in the root namespace
    assert sh("ip", "-n", host_net.netns, "-6", "addr", "show").stdout == ""
    assert "10.88.0." not in root_ipv4_addresses()


async def test_ensure_is_idempotent_and_repairs(host_net: HostNetwork, tmp_path: Path) -> None:
    tap = await host_net.create_tap("pod-a")
    await host_net.ensure()
    # a restarted agent: a new object for the same host finds everything and fixes what drifted
    sh("ip", "-n", host_net.netns, "addr", "flush", "dev", "pvbr0")
    sh("ip", "-n", host_net.netns, "link", "set", tap.name, "nomaster")
    again = HostNetwork(host_net.host_name, pod_cidr="10.88.0.0/24", state_dir=tmp_path / "state")
    await again.ensure()
    await again.ensure()
    found = links(host_net.netns)
    assert sorted(n for n in found if n != "lo") == sorted(["pvbr0", tap.name])
    assert found[tap.name]["master"] == "pvbr0"
    assert bridge_addresses(host_net) == ["10.88.0.1/24"]


async def test_ensure_replaces_a_stale_namespace_mount_point(tmp_path: Path, host_names: list[str]) -> None:
    name = new_host_name()
    host_names.append(name)
    leave_stale_mount_point(f"pv-{name}")   # what a crash or reboot can leave behind
    net = HostNetwork(name, pod_cidr="10.89.0.0/24", state_dir=tmp_path)
    try:
        await net.ensure()
        assert bridge_addresses(net) == ["10.89.0.1/24"]
    finally:
        await net.teardown()


async def test_teardown_removes_everything_and_is_idempotent(tmp_path: Path, host_names: list[str]) -> None:
    name = new_host_name()
    host_names.append(name)
    net = HostNetwork(name, pod_cidr="10.88.0.0/24", state_dir=tmp_path)
    await net.ensure()
    pod = await net.attach_pod("pod-a")
    await net.teardown()
    assert not netns_exists(net.netns)
    assert not root_has_link(pod.tap.name)
    await net.teardown()
    # addresses survive a teardown unless asked to forget them
    assert str(net.ipam.get("pod-a")) == pod.pod_ip
    await net.teardown(forget_addresses=True)
    assert net.ipam.allocations() == {}


async def test_taps_are_bridge_ports_inside_the_namespace_only(host_net: HostNetwork) -> None:
    a1 = await host_net.create_tap("pod-a")
    a2 = await host_net.create_tap("pod-a")
    b = await host_net.create_tap("pod-b")
    assert a1 == a2 and a1.name == tap_name("pod-a") and len(a1.name) <= 15
    assert a1.name != b.name and a1.mac != b.mac
    assert a1.mac.startswith("02:")
    assert await host_net.list_taps() == sorted([a1.name, b.name])
    found = links(host_net.netns)
    for t in (a1, b):
        assert found[t.name]["linkinfo"]["info_kind"] == "tun"
        assert found[t.name]["master"] == "pvbr0"
        assert not root_has_link(t.name)
    await host_net.delete_tap(a1.name)
    await host_net.delete_tap(a1.name)
    assert await host_net.list_taps() == [b.name]


async def test_a_tap_talks_to_the_gateway(host_net: HostNetwork) -> None:
    pod = await host_net.attach_pod("pod-a")
    fd = await pod.tap.open_fd(vnet_hdr=False)
    try:
        with TapEndpoint(fd, mac=pod.guest.mac, ip=pod.pod_ip) as ep:
            gateway = str(host_net.gateway.ip)
            assert ep.resolve(gateway).hex(":") == host_net.bridge_mac
            ep.ping(gateway)
            assert ping_from(host_net.netns, pod.pod_ip)   # the host namespace pings the "VM"
    finally:
        os.close(fd)


async def test_two_taps_reach_each_other_over_the_bridge(host_net: HostNetwork) -> None:
    a = await host_net.attach_pod("pod-a")
    b = await host_net.attach_pod("pod-b")
    fa, fb = await a.tap.open_fd(vnet_hdr=False), await b.tap.open_fd(vnet_hdr=False)
    try:
        with TapEndpoint(fa, mac=a.guest.mac, ip=a.pod_ip) as ea, \
             TapEndpoint(fb, mac=b.guest.mac, ip=b.pod_ip) as eb:
            ea.ping(b.pod_ip)
            eb.ping(a.pod_ip)
    finally:
        os.close(fa)
        os.close(fb)


async def test_a_tap_has_one_holder(host_net: HostNetwork) -> None:
    tap = await host_net.create_tap("pod-a")
    fd = await tap.open_fd()
    try:
        with pytest.raises(NetworkError, match="already open"):
            await tap.open_fd()
    finally:
        os.close(fd)
    os.close(await tap.open_fd())   # free again once the holder is gone


async def test_fake_pods_reach_each_other_and_the_gateway(host_net: HostNetwork, fake_pods: FakePods) -> None:
    a = await host_net.attach_pod("pod-a")
    b = await host_net.attach_pod("pod-b")
    ns_a, ns_b = fake_pods(host_net, a.guest), fake_pods(host_net, b.guest)
    assert ping_from(ns_a, b.pod_ip)
    assert ping_from(ns_b, a.pod_ip)
    assert ping_from(ns_a, str(host_net.gateway.ip))
    route = sh("ip", "-n", ns_a, "route", "show", "default").stdout
    assert f"via {host_net.gateway.ip}" in route


async def test_attach_detach_and_retain_pods(host_net: HostNetwork) -> None:
    a = await host_net.attach_pod("pod-a")
    assert a.pod_ip == "10.88.0.2" and a.pod_ips == [{"ip": "10.88.0.2"}]
    assert a.guest.to_interface_spec() == {
        "mac": a.tap.mac, "name": "eth0", "addresses": ["10.88.0.2/24"], "gateway": "10.88.0.1", "mtu": 1500}
    assert a.guest.resolv_conf() is None
    assert await host_net.attach_pod("pod-a") == a
    assert await host_net.pod_interface("pod-a") == a
    b = await host_net.attach_pod("pod-b")
    c = await host_net.attach_pod("pod-c")
    await host_net.detach_pod("pod-a")
    await host_net.detach_pod("pod-a")
    assert await host_net.pod_interface("pod-a") is None
    assert await host_net.list_taps() == sorted([b.tap.name, c.tap.name])
    assert await host_net.retain_pods(["pod-c"]) == ["pod-b"]
    assert await host_net.list_taps() == [c.tap.name]
    assert list(host_net.ipam.allocations()) == ["pod-c"]


async def test_create_tap_needs_ensure(tmp_path: Path) -> None:
    net = HostNetwork(new_host_name(), pod_cidr="10.88.0.0/24", state_dir=tmp_path)
    with pytest.raises(NetworkError, match="not set up"):
        await net.create_tap("pod-a")
