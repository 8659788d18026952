"""Fixtures shared by the CRX and hostd tests: the signed bundle, a busybox image disk, a hostd with VMs.

The bundle is the one `podvisor crx build` made (``make setup`` builds it); if there is none it is
built here once per session. VM tests share one module-scoped hostd and VM: a boot costs seconds of
CPU under TCG.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from podvisor.crx.bundle import BundleError, crx_home, load_public_key, verify_bundle


def _usable(home: Path) -> bool:
    try:
        verify_bundle(home / "bundle", public_key=load_public_key(home / "keys"))
        return True
    except BundleError:
        return False


@pytest.fixture(scope="session")
def crx_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CRX home with a verified bundle and its key."""
    home = crx_home()
    if _usable(home):
        return home
    from podvisor.crx.build import build_bundle

    home = tmp_path_factory.mktemp("crx-home")
    build_bundle(home=home)
    return home


@pytest.fixture
def crx_copy(crx_dir: Path, tmp_path: Path) -> Iterator[Path]:
    """A private copy of the CRX home that a test may tamper with."""
    home = tmp_path / "crx"
    shutil.copytree(crx_dir / "bundle", home / "bundle")
    shutil.copytree(crx_dir / "keys", home / "keys")
    yield home


@pytest.fixture(scope="session")
def busybox_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import asyncio

    from podvisor.disks import make_busybox_image

    path = tmp_path_factory.mktemp("images") / "busybox.img"
    asyncio.run(make_busybox_image(path))
    return path


@contextlib.contextmanager
def tap_namespace(taps: list[str], *, subnet: str = "10.99.0") -> Iterator[str | None]:
    """A network namespace of our own with a bridge (SUBNET.1/24) and the given taps on it; None unless root."""
    if os.geteuid() != 0:
        yield None
        return
    name = f"pvtest-{secrets.token_hex(3)}"
    _sh("ip", "netns", "add", name)
    try:
        _sh("ip", "-n", name, "link", "set", "lo", "up")
        _sh("ip", "-n", name, "link", "add", "pvbr0", "type", "bridge")
        _sh("ip", "-n", name, "addr", "add", f"{subnet}.1/24", "dev", "pvbr0")
        _sh("ip", "-n", name, "link", "set", "pvbr0", "up")
        for tap in taps:
            _sh("ip", "-n", name, "tuntap", "add", "dev", tap, "mode", "tap")
            _sh("ip", "-n", name, "link", "set", tap, "master", "pvbr0")
            _sh("ip", "-n", name, "link", "set", tap, "up")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def _sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


def size_of(path: Path) -> int:
    return path.stat().st_size


def vm_spec(name: str, image: Path, **extra: Any) -> dict[str, Any]:
    return {"id": name, "vcpus": 1, "memoryMiB": 256, "hostname": name,
            "disks": [{"id": "img0", "kind": "image", "path": str(image)},
                      {"id": "ephemeral", "kind": "ephemeral", "sizeBytes": 128 << 20}], **extra}


class HostdHarness:
    """An in-process hostd on a scratch data dir; templates off unless asked (no background builds)."""

    def __init__(self, data_dir: Path, crx_dir: Path, *, templates: bool = False) -> None:
        from podvisor.hostd.component import HostdComponent

        self.data_dir, self.crx_dir, self.templates = data_dir, crx_dir, templates
        self.component = HostdComponent(data_dir, host_name="pv-test", crx_dir=crx_dir, templates=templates)

    async def restart(self) -> None:
        from podvisor.hostd.component import HostdComponent

        await self.component.stop()
        self.component = HostdComponent(self.data_dir, host_name="pv-test", crx_dir=self.crx_dir,
                                         templates=self.templates)
        await self.component.start()

    def client(self) -> Any:
        from podvisor.hostd.client import HostdClient

        return HostdClient.from_data_dir(self.data_dir)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def hostd(crx_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[HostdHarness]:
    harness = HostdHarness(tmp_path_factory.mktemp("hostd-data"), crx_dir)
    await harness.component.start()
    try:
        yield harness
    finally:
        async with harness.client() as c:
            for vm in await c.list_vms():
                await c.destroy_vm(vm["id"])
        await harness.component.stop()
