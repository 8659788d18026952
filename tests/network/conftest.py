"""Real namespaces for the network tests, and their cleanup even when a test fails.

Every test host gets a fresh name (``pv-tn<hex>``); fake pods are namespaces ``pvtest-<hex>`` with a
veth whose other end is created straight inside the host namespace: nothing a test makes ever has an
address in the root namespace, and all test traffic stays between these namespaces.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from podvisor.network import GuestNetConfig, HostNetwork
from tests.network.nettools import netns_exists, new_host_name, sh


@pytest.fixture
def host_names() -> Iterator[list[str]]:
    """Names of the host networks a test makes; their namespaces are deleted afterwards, whatever happened."""
    names: list[str] = []
    yield names
    for name in names:
        ns = f"pv-{name}"
        if netns_exists(ns):
            sh("ip", "netns", "del", ns, check=False)
            Path("/run/netns", ns).unlink(missing_ok=True)


@pytest.fixture
async def host_net(tmp_path: Path, host_names: list[str]) -> AsyncIterator[HostNetwork]:
    name = new_host_name()
    host_names.append(name)
    net = HostNetwork(name, pod_cidr="10.88.0.0/24", state_dir=tmp_path / "state")
    await net.ensure()
    try:
        yield net
    finally:
        await net.teardown(forget_addresses=True)


@pytest.fixture
def fake_pods() -> Iterator[Callable[[HostNetwork, GuestNetConfig], str]]:
    """Make a namespace that plays a pod: a veth on the host's bridge, configured from a GuestNetConfig."""
    made: list[str] = []

    def make(net: HostNetwork, guest: GuestNetConfig) -> str:
        tag = uuid.uuid4().hex[:8]
        ns, host_end = f"pvtest-{tag}", f"pvv{tag}"
        sh("ip", "netns", "add", ns)
        made.append(ns)
        # both ends are born inside namespaces: eth0 in the fake pod, its peer in the host namespace
        sh("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", host_end, "netns", net.netns)
        sh("ip", "-n", net.netns, "link", "set", host_end, "master", net.bridge, "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        for argv in guest.ip_commands("eth0"):   # as a guest does it: with busybox's ip
            sh("ip", "netns", "exec", ns, "busybox", *argv)
        return ns

    yield make
    for ns in made:
        sh("ip", "netns", "del", ns, check=False)
