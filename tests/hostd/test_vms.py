"""A pod VM's life through hostd's API: create, inspect, reconfigure, restart hostd, power, destroy.

One VM (with a NIC on a tap in a network namespace the test makes) is shared by the ordered tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from podvisor.crx.qemu import pid_alive
from podvisor.disks import DiskFileNotFound, read_disk_file
from podvisor.hostd.client import HostdAPIError
from podvisor.hostd.component import HostdComponent
from tests.crx.harness import HostdHarness, size_of, tap_namespace, vm_spec

pytestmark = [pytest.mark.vm, pytest.mark.asyncio(loop_scope="module")]


@pytest.fixture(scope="module")
def netns() -> Iterator[str | None]:
    """A namespace with a tap (10.99.0.1/24) for the VM's NIC, or None when not root."""
    with tap_namespace(["pvtap0"]) as name:
        yield name


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def vm(hostd: HostdHarness, busybox_image: Path, netns: str | None) -> AsyncIterator[dict[str, Any]]:
    nics = [{"id": "eth0", "tap": "pvtap0", "netns": netns, "ip": "10.99.0.2/24", "gateway": "10.99.0.1"}] if netns else []
    async with hostd.client() as client:
        info = await client.create_vm(vm_spec("lifecycle", busybox_image, vcpus=1, memoryMiB=224, nics=nics,
                                              labels={"podvisor.io/pod": "default/lifecycle"}), power_on=True)
    yield info


async def test_inspect_shows_the_hardware(hostd: HostdHarness, vm: dict[str, Any], busybox_image: Path) -> None:
    async with hostd.client() as client:
        info = await client.get_vm("lifecycle")
        assert [v["id"] for v in await client.list_vms()] == ["lifecycle"]
        # the agent's boot line reaches the console once the agent is idle (it is not in the boot's path)
        for _ in range(100):
            console = await client.console("lifecycle")
            if "pv-agent" in console:
                break
            await asyncio.sleep(0.1)
    assert info["power"] == "on" and info["vcpus"] == 1 and info["memoryMiB"] == 224
    assert info["qemuPid"] > 0 and pid_alive(info["qemuPid"])
    assert info["uptimeSeconds"] > 0 and info["accel"] in ("kvm", "tcg")
    assert info["labels"] == {"podvisor.io/pod": "default/lifecycle"}
    disks = {d["id"]: d for d in info["disks"]}
    assert disks["img0"] == {**disks["img0"], "kind": "image", "readOnly": True, "path": str(busybox_image),
                             "sizeBytes": size_of(busybox_image)}
    assert disks["ephemeral"]["kind"] == "ephemeral" and disks["ephemeral"]["readOnly"] is False
    assert disks["ephemeral"]["sizeBytes"] == 128 << 20 and disks["ephemeral"]["owned"] is True
    assert info["agent"]["connected"] is True and "exec" in info["agent"]["capabilities"]
    assert set(info["boot"]) >= {"verifyMs", "qemuStartMs", "kernelBootMs", "initMs", "agentReadyMs"}
    assert info["hostMemory"]["rssBytes"] > 0
    assert "pv-agent" in console


async def test_nic_is_configured_and_reachable(hostd: HostdHarness, vm: dict[str, Any], netns: str | None) -> None:
    if netns is None:
        pytest.skip("needs root for a network namespace")
    nic = (await _get(hostd))["nics"][0]
    assert nic["tap"] == "pvtap0" and nic["ip"] == "10.99.0.2/24" and nic["mac"].startswith("02:")
    ping = await asyncio.create_subprocess_exec("ip", "netns", "exec", netns, "busybox", "ping", "-c", "1", "-W", "5",
                                                "10.99.0.2", stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    out, _ = await ping.communicate()
    assert ping.returncode == 0, out
    async with hostd.client() as client:
        agent = await client.agent("lifecycle")
        await agent.create_container({"containerId": "ip", "image": "img0", "args": ["cat", "/sys/class/net/eth0/address"],
                                      "logPath": "logs/ip.log"})
        await agent.start_container("ip")
        await agent.wait_container("ip")
        log, _ = await (await agent.read_log(container_id="ip")).read_all()
        await agent.close()
    assert nic["mac"].encode() in log


async def _get(hostd: HostdHarness) -> dict[str, Any]:
    async with hostd.client() as client:
        return await client.get_vm("lifecycle")


async def test_hot_plug_on_a_running_microvm_is_a_conflict(hostd: HostdHarness, vm: dict[str, Any],
                                                          busybox_image: Path) -> None:
    async with hostd.client() as client:
        with pytest.raises(HostdAPIError) as err:
            await client.attach_disk("lifecycle", {"id": "img1", "kind": "image", "path": str(busybox_image)})
    assert err.value.status == 409 and "hot-plug" in err.value.message


async def test_hostd_restart_keeps_the_vm(hostd: HostdHarness, vm: dict[str, Any]) -> None:
    async with hostd.client() as client:
        agent = await client.agent("lifecycle")
        await agent.create_container({"containerId": "survivor", "image": "img0",
                                      "args": ["sh", "-c", "echo before; sleep 3600"], "logPath": "logs/survivor.log"})
        await agent.start_container("survivor")
        await agent.close()
        before = await client.get_vm("lifecycle")
    await hostd.restart()
    assert pid_alive(before["qemuPid"])
    async with hostd.client() as client:
        after = await client.get_vm("lifecycle")
        assert after["power"] == "on" and after["qemuPid"] == before["qemuPid"]
        assert after["startedAt"] == before["startedAt"] and after["agent"]["connected"] is True
        agent = await client.agent("lifecycle")
        states = {c["containerId"]: c["state"] for c in await agent.list_containers()}
        assert states["survivor"] == "running"
        out, _ = await (await agent.exec("survivor", ["echo", "after"])).read_all()
        assert out == b"after\n"
        await agent.close()


async def test_power_off_keeps_logs_and_power_on_boots_again(hostd: HostdHarness, vm: dict[str, Any]) -> None:
    async with hostd.client() as client:
        relay = await client.agent("lifecycle")
        off = await client.power_off("lifecycle", timeout_s=10)
        await asyncio.wait_for(relay.closed.wait(), 10)  # relay users learn that the VM went away
        await relay.close()
        assert off["power"] == "off" and off["qemuPid"] == 0 and off["lastExit"] == "powered off"
        ephemeral = next(d["path"] for d in off["disks"] if d["id"] == "ephemeral")
        log = await read_disk_file(Path(ephemeral), "logs/survivor.log")
        assert b"stdout F before" in log
        with pytest.raises(DiskFileNotFound):
            await read_disk_file(Path(ephemeral), "logs/never-written.log")
        on = await client.power_on("lifecycle")
        assert on["power"] == "on" and on["qemuPid"] > 0
        agent = await client.agent("lifecycle")
        assert await agent.list_containers() == []  # a fresh guest; the disk and its logs remain
        log2, _ = await (await agent.read_log(path="logs/survivor.log")).read_all()
        assert b"before" in log2
        await agent.close()


async def test_destroy_removes_every_file(hostd: HostdHarness, vm: dict[str, Any]) -> None:
    async with hostd.client() as client:
        info = await client.get_vm("lifecycle")
        vm_dir = hostd.data_dir / "hostd" / "vms" / "lifecycle"
        assert vm_dir.is_dir()
        await client.destroy_vm("lifecycle")
        assert await client.list_vms() == []
    assert not vm_dir.exists()
    assert not pid_alive(info["qemuPid"])  # gone, or a zombie waiting for init to reap it


async def test_tampered_bundle_is_refused_and_nothing_boots(crx_copy: Path, tmp_path: Path, busybox_image: Path) -> None:
    kernel = crx_copy / "bundle" / "kernel"
    data = bytearray(kernel.read_bytes())
    data[4096] ^= 0x01
    kernel.write_bytes(bytes(data))
    component = HostdComponent(tmp_path / "data", host_name="pv-tamper", crx_dir=crx_copy)
    await component.start()
    try:
        from podvisor.hostd.client import HostdClient

        async with HostdClient.from_data_dir(tmp_path / "data") as client:
            with pytest.raises(HostdAPIError) as err:
                await client.create_vm(vm_spec("tampered", busybox_image), power_on=True)
            assert err.value.status == 412 and err.value.code == "BundleRejected"
            assert "does not match the signed manifest" in err.value.message
            info = await client.get_vm("tampered")
            assert info["power"] == "off" and info["qemuPid"] == 0
            assert "boot failed" in info["lastExit"]
            await client.destroy_vm("tampered")
    finally:
        await component.stop()
    pgrep = await asyncio.create_subprocess_exec("pgrep", "-f", str(tmp_path / "data"), stdout=asyncio.subprocess.PIPE)
    leftovers, _ = await pgrep.communicate()
    assert leftovers.strip() == b""
