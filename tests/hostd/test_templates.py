"""Templated start: one template per layout, clones restored with their own disks, NIC MACs and entropy."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from podvisor.hostd.client import HostdAPIError, HostdClient
from tests.crx.harness import HostdHarness, tap_namespace, vm_spec

pytestmark = [pytest.mark.vm, pytest.mark.asyncio(loop_scope="module")]


@pytest.fixture(scope="module")
def netns() -> Iterator[str | None]:
    with tap_namespace(["pvtapa", "pvtapb"], subnet="10.98.0") as name:
        yield name


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def hostd_t(crx_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[HostdHarness]:
    harness = HostdHarness(tmp_path_factory.mktemp("hostd-templates"), crx_dir, templates=True)
    await harness.component.start()
    try:
        yield harness
    finally:
        async with harness.client() as c:
            for vm in await c.list_vms():
                await c.destroy_vm(vm["id"])
        await harness.component.stop()


def _spec(name: str, image: Path, netns: str | None, tap: str, ip: str) -> dict[str, Any]:
    nics = [{"id": "eth0", "tap": tap, "netns": netns, "ip": ip, "gateway": "10.98.0.1"}] if netns else []
    return vm_spec(name, image, nics=nics)


async def _output(client: HostdClient, vm: str, args: list[str]) -> bytes:
    agent = await client.agent(vm)
    try:
        await agent.create_container({"containerId": "c", "image": "img0", "args": args, "logPath": "logs/c.log"})
        await agent.start_container("c")
        await agent.wait_container("c")
        log, _ = await (await agent.read_log(container_id="c")).read_all()
        return log
    finally:
        await agent.close()


async def test_clones_start_from_the_template(hostd_t: HostdHarness, busybox_image: Path, netns: str | None) -> None:
    nics = 1 if netns else 0
    async with hostd_t.client() as client:
        with pytest.raises(HostdAPIError) as none_yet:
            await client.create_vm(_spec("early", busybox_image, netns, "pvtapa", "10.98.0.2/24"),
                                   power_on=True, start_mode="template")
        assert none_yet.value.status == 409
        await client.destroy_vm("early")
        template = await client.build_template({"vcpus": 1, "memoryMiB": 256, "nics": nics,
                                                "disks": [{"kind": "image"}, {"kind": "ephemeral", "readOnly": False}]})
        assert template["ramBytesOnDisk"] > 0
        assert [t["key"] for t in await client.list_templates()] == [template["key"]]
        a = await client.create_vm(_spec("clone-a", busybox_image, netns, "pvtapa", "10.98.0.2/24"), power_on=True)
        b = await client.create_vm(_spec("clone-b", busybox_image, netns, "pvtapb", "10.98.0.3/24"), power_on=True)
        assert a["startMode"] == b["startMode"] == "template"
        assert "restoreMs" in a["boot"]
        script = ["sh", "-c", "hostname; head -c 16 /dev/urandom | od -A n -t x1; cat /sys/class/net/eth0/address "
                  "2>/dev/null; df -k / | tail -1"]
        out_a, out_b = await asyncio.gather(_output(client, "clone-a", script), _output(client, "clone-b", script))
    lines_a = [line.split(b" ", 3)[3] for line in out_a.splitlines()]
    lines_b = [line.split(b" ", 3)[3] for line in out_b.splitlines()]
    assert lines_a[0] == b"clone-a" and lines_b[0] == b"clone-b"
    assert lines_a[1] != lines_b[1]  # each clone got its own entropy
    if netns:
        assert lines_a[2].decode() == a["nics"][0]["mac"] and lines_b[2].decode() == b["nics"][0]["mac"]
        ping = await asyncio.create_subprocess_exec("ip", "netns", "exec", netns, "busybox", "ping", "-c", "1", "-W", "5",
                                                    "10.98.0.3", stdout=asyncio.subprocess.PIPE)
        out, _ = await ping.communicate()
        assert ping.returncode == 0, out


async def test_other_layouts_boot_cold(hostd_t: HostdHarness, busybox_image: Path) -> None:
    async with hostd_t.client() as client:
        vm = await client.create_vm(vm_spec("bigger", busybox_image, memoryMiB=320), power_on=True)
        assert vm["startMode"] == "cold" and vm["power"] == "on"
        await client.destroy_vm("bigger")
