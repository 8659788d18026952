"""A real QEMU moves a pod's frames through the tap `HostNetwork.attach_pod` made.

No guest is booted (that is CRX's business): QEMU's network hub joins the pod's tap to a UDP socket on
loopback, and the test's endpoint sits on that socket, so every frame goes endpoint -> QEMU -> tap ->
bridge -> gateway and back. Two ways of handing the tap to QEMU are checked: by descriptor
(``-netdev tap,fd=N``, QEMU in the root namespace, what hostd does) and by name with QEMU started
inside the namespace (``nsenter``, what ``launch_qemu(netns=...)`` does). The UDP socket lives on the
loopback of the namespace QEMU runs in.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
from collections.abc import AsyncIterator

import pytest

from podvisor.network import HostNetwork
from podvisor.network.netns import run_in_netns
from tests.network.frames import TapEndpoint
from tests.network.nettools import needs_root, ping_from

QEMU = shutil.which("qemu-system-x86_64")
pytestmark = [needs_root, pytest.mark.skipif(QEMU is None, reason="needs qemu-system-x86_64")]


def _udp_pair() -> tuple[socket.socket, int]:
    """Our socket (bound) and a free port for QEMU's end, both on 127.0.0.1 of the calling namespace."""
    ours = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    ours.bind(("127.0.0.1", 0))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    ours.connect(("127.0.0.1", port))
    return ours, port


@pytest.fixture
async def processes() -> AsyncIterator[list[asyncio.subprocess.Process]]:
    procs: list[asyncio.subprocess.Process] = []
    yield procs
    for p in procs:
        if p.returncode is None:
            p.kill()
        await asyncio.wait_for(p.wait(), 10)


@pytest.mark.parametrize("mode", ["fd", "netns"])
async def test_qemu_carries_frames_between_the_tap_and_the_pod(
        host_net: HostNetwork, processes: list[asyncio.subprocess.Process], mode: str) -> None:
    assert QEMU is not None
    pod = await host_net.attach_pod("pod-q")
    if mode == "fd":
        sock, qemu_port = _udp_pair()
        fd = await pod.tap.open_fd()          # with the virtio header, as for a real virtio-net
        netdev, prefix, pass_fds = pod.tap.netdev_option(id="t0", fd=fd), [], [fd]
    else:
        sock, qemu_port = await run_in_netns(host_net.netns_path, _udp_pair)
        netdev, prefix, pass_fds = pod.tap.netdev_option(id="t0"), ["nsenter", f"--net={host_net.netns_path}", "--"], []
    our_port = sock.getsockname()[1]
    argv = [*prefix, QEMU, "-machine", "none", "-nodefaults", "-display", "none",
            "-netdev", netdev,
            "-netdev", f"socket,id=s0,udp=127.0.0.1:{our_port},localaddr=127.0.0.1:{qemu_port}",
            "-netdev", "hubport,id=p0,hubid=0,netdev=t0", "-netdev", "hubport,id=p1,hubid=0,netdev=s0"]
    try:
        processes.append(await asyncio.create_subprocess_exec(
            *argv, pass_fds=pass_fds, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL))
    finally:
        if mode == "fd":
            os.close(fd)                      # QEMU has its own copy now
    try:
        with TapEndpoint(sock.fileno(), mac=pod.guest.mac, ip=pod.pod_ip) as ep:
            gateway = str(host_net.gateway.ip)
            assert ep.resolve(gateway, attempts=10).hex(":") == host_net.bridge_mac
            ep.ping(gateway)
            assert ping_from(host_net.netns, pod.pod_ip)
    finally:
        sock.close()
