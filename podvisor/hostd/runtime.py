"""The VM runtime behind hostd's API: a handful of verbs over `VirtualMachine` objects.

`VMRuntime` is the narrow interface (create, reconfigure, power, destroy, inspect, list); `QemuRuntime`
implements it with QEMU microvm. State lives in ``DATA/hostd/vms/<id>/vm.json`` next to the VM's
sockets, pidfile, console log and hostd-made disks, so a restarted hostd rebuilds its view from the
directory and reattaches to every QEMU still running. One lock per VM serialises its power operations;
different VMs proceed in parallel.

Reconfiguration follows the machine: microvm has no hot-plug bus, so disks and NICs change only while
the VM is off; on a running VM the answer is a 409 that says so.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, Protocol

from podvisor.crx.accel import probe_accel, qemu_version, tcg_kernel_args
from podvisor.crx.bundle import (
    Bundle,
    BundleError,
    check_digests,
    crx_home,
    load_public_key,
    load_signed_manifest,
    open_bundle_files,
)
from podvisor.crx.client import AgentClient, AgentError
from podvisor.crx.qemu import DEFAULT_TB_MIB, QemuError
from podvisor.hostd.errors import BadRequest, BootFailed, BundleRejected, Conflict, NotFound
from podvisor.hostd.sizing import GUEST_OVERHEAD_MIB, HOST_OVERHEAD_MIB
from podvisor.hostd.spec import DiskSpec, NicSpec, SpecError, VMRecord, VMSpec
from podvisor.hostd.templates import Layout, TemplateStore
from podvisor.hostd.vm import BootContext, VirtualMachine

__all__ = ["VMRuntime", "QemuRuntime"]

log = logging.getLogger("podvisor.hostd.runtime")


class VMRuntime(Protocol):
    async def create_vm(self, spec: VMSpec) -> dict[str, Any]: ...

    async def attach_disk(self, vm_id: str, disk: DiskSpec) -> dict[str, Any]: ...

    async def detach_disk(self, vm_id: str, disk_id: str) -> dict[str, Any]: ...

    async def attach_nic(self, vm_id: str, nic: NicSpec) -> dict[str, Any]: ...

    async def detach_nic(self, vm_id: str, nic_id: str) -> dict[str, Any]: ...

    async def power_on(self, vm_id: str, *, start_mode: str = "auto") -> dict[str, Any]: ...

    async def power_off(self, vm_id: str, *, timeout_s: float = 10.0, force: bool = False) -> dict[str, Any]: ...

    async def destroy(self, vm_id: str) -> None: ...

    def inspect(self, vm_id: str) -> dict[str, Any]: ...

    def vm_count(self) -> int: ...

    def list_vms(self) -> list[dict[str, Any]]: ...


class QemuRuntime:
    def __init__(self, root: Path, *, crx_dir: Path | None = None, templates: bool = True) -> None:
        self.root = root
        self.vms_dir = root / "vms"
        self.crx_dir = crx_dir or crx_home()
        self._vms: dict[str, VirtualMachine] = {}
        self._accel: str | None = None
        self._accel_lock = asyncio.Lock()
        tb_size = int(os.environ.get("PODVISOR_TCG_TB_MIB", "") or DEFAULT_TB_MIB)
        self.templates = TemplateStore(root / "templates", enabled=templates, tb_size_mib=tb_size)
        self.ctx = BootContext(bundle_dir=self.crx_dir / "bundle", public_key=None, accel=self._accel_for,
                               templates=self.templates, tb_size_mib=tb_size)

    # ---- lifecycle ----

    async def start(self) -> None:
        for record, vm_dir in _load_records(self.vms_dir):
            self._vms[record.spec.id] = VirtualMachine(record, vm_dir, on_change=self._changed)
        await asyncio.gather(*(vm.adopt() for vm in self._vms.values()))
        adopted = sum(1 for vm in self._vms.values() if vm.record.power == "on")
        if self._vms:
            log.info("found %d VM(s), %d running", len(self._vms), adopted)

    async def close(self) -> None:
        """Disconnect from every VM; the VMs keep running."""
        await asyncio.gather(*(vm.detach() for vm in self._vms.values()), return_exceptions=True)

    def _changed(self, vm: VirtualMachine) -> None:
        pass

    # ---- accelerator ----

    def _public_key(self) -> Any:
        try:
            return load_public_key(self.crx_dir / "keys")
        except BundleError as exc:
            raise BundleRejected(str(exc)) from exc

    async def _accel_for(self, bundle: Bundle) -> str:
        async with self._accel_lock:
            if self._accel is None:
                self._accel = await probe_accel(bundle, cache_file=self.root / "accel.json")
                log.info("accelerator: %s", self._accel)
            return self._accel

    async def accel(self) -> str:
        """kvm or tcg for this host (probed once with the bundle's kernel; tcg if there is no bundle)."""
        if self._accel is not None:
            return self._accel
        try:
            bundle = load_signed_manifest(self.crx_dir / "bundle", public_key=self._public_key())
        except (BundleError, BundleRejected):
            return "tcg"
        return await self._accel_for(bundle)

    # ---- verbs ----

    def _get(self, vm_id: str) -> VirtualMachine:
        vm = self._vms.get(vm_id)
        if vm is None:
            raise NotFound(f"no VM {vm_id}")
        return vm

    def vm_count(self) -> int:
        return len(self._vms)

    def list_vms(self) -> list[dict[str, Any]]:
        return [vm.inspect() for vm in sorted(self._vms.values(), key=lambda v: v.record.created_at)]

    def inspect(self, vm_id: str) -> dict[str, Any]:
        return self._get(vm_id).inspect()

    def agent(self, vm_id: str) -> AgentClient | None:
        vm = self._get(vm_id)
        return vm.agent if vm.agent is not None and not vm.agent.closed.is_set() else None

    def console(self, vm_id: str, *, limit: int = 65536) -> str:
        return self._get(vm_id).console_tail(limit)

    async def create_vm(self, spec: VMSpec) -> dict[str, Any]:
        if spec.id in self._vms:
            raise Conflict(f"VM {spec.id} already exists")
        for disk in spec.disks:
            _check_disk_path(disk)
        vm_dir = self.vms_dir / spec.id
        shutil.rmtree(vm_dir, ignore_errors=True)
        vm = VirtualMachine(VMRecord(spec=spec, created_at=time.time()), vm_dir, on_change=self._changed)
        self._vms[spec.id] = vm
        vm.save()
        return vm.inspect()

    async def _reconfigure(self, vm_id: str, change: str, apply: Any) -> dict[str, Any]:
        vm = self._get(vm_id)
        async with vm.lock:
            if vm.record.power != "off":
                raise Conflict(f"cannot {change} while VM {vm_id} is {vm.record.power}: the microvm machine has "
                               "no hot-plug bus; power the VM off first")
            try:
                apply(vm.record.spec)
                vm.record.spec.check()
            except SpecError as exc:
                raise BadRequest(str(exc)) from exc
            vm.save()
            return vm.inspect()

    async def attach_disk(self, vm_id: str, disk: DiskSpec) -> dict[str, Any]:
        _check_disk_path(disk)

        def apply(spec: VMSpec) -> None:
            spec.disks = [d for d in spec.disks if d.id != disk.id] + [disk]
        return await self._reconfigure(vm_id, f"attach disk {disk.id}", apply)

    async def detach_disk(self, vm_id: str, disk_id: str) -> dict[str, Any]:
        vm = self._get(vm_id)
        if not any(d.id == disk_id for d in vm.record.spec.disks):
            raise NotFound(f"VM {vm_id} has no disk {disk_id}")

        def apply(spec: VMSpec) -> None:
            spec.disks = [d for d in spec.disks if d.id != disk_id]
        return await self._reconfigure(vm_id, f"detach disk {disk_id}", apply)

    async def attach_nic(self, vm_id: str, nic: NicSpec) -> dict[str, Any]:
        def apply(spec: VMSpec) -> None:
            spec.nics = [n for n in spec.nics if n.id != nic.id] + [nic]
        return await self._reconfigure(vm_id, f"attach NIC {nic.id}", apply)

    async def detach_nic(self, vm_id: str, nic_id: str) -> dict[str, Any]:
        vm = self._get(vm_id)
        if not any(n.id == nic_id for n in vm.record.spec.nics):
            raise NotFound(f"VM {vm_id} has no NIC {nic_id}")

        def apply(spec: VMSpec) -> None:
            spec.nics = [n for n in spec.nics if n.id != nic_id]
        return await self._reconfigure(vm_id, f"detach NIC {nic_id}", apply)

    async def power_on(self, vm_id: str, *, start_mode: str = "auto") -> dict[str, Any]:
        if start_mode not in ("auto", "cold", "template"):
            raise BadRequest("startMode must be auto, cold or template")
        vm = self._get(vm_id)
        async with vm.lock:
            self.ctx.public_key = self._public_key()
            await vm.power_on(self.ctx, start_mode=start_mode)
            return vm.inspect()

    # ---- templates ----

    async def prewarm(self, layouts: list[Layout]) -> None:
        """Build these layouts' templates one after the other (failures are logged, not raised)."""
        for layout in layouts:
            try:
                await self.build_template(layout)
            except (BundleRejected, BootFailed) as exc:
                log.warning("prewarming %s failed: %s", layout.describe(), exc.message)

    def list_templates(self) -> list[dict[str, Any]]:
        return [t.describe() for t in self.templates.list()]

    async def build_template(self, layout: Layout) -> dict[str, Any]:
        """Build (or return) the template for ``layout``; the bundle is verified first."""
        public_key = self._public_key()
        bundle = load_signed_manifest(self.crx_dir / "bundle", public_key=public_key)
        accel = await self._accel_for(bundle)
        layout = Layout(layout.vcpus, layout.memory_mib, layout.disks, layout.nics, accel)
        cmdline = (bundle.cmdline + (" " + tcg_kernel_args() if accel == "tcg" else "")).strip()
        try:
            open_bundle_files(bundle)
            await asyncio.to_thread(check_digests, bundle)
            template = await self.templates.build(bundle, layout, cmdline)
        except BundleError as exc:
            raise BundleRejected(str(exc)) from exc
        except (QemuError, AgentError, OSError, TimeoutError) as exc:
            raise BootFailed(f"the template VM did not come up: {exc}") from exc
        finally:
            bundle.close()
        return template.describe()

    async def power_off(self, vm_id: str, *, timeout_s: float = 10.0, force: bool = False) -> dict[str, Any]:
        vm = self._get(vm_id)
        async with vm.lock:
            await vm.power_off(timeout_s=timeout_s, force=force)
            return vm.inspect()

    async def destroy(self, vm_id: str) -> None:
        vm = self._get(vm_id)
        async with vm.lock:
            await vm.destroy()
            self._vms.pop(vm_id, None)

    # ---- the host ----

    async def host_info(self, name: str) -> dict[str, Any]:
        accel = await self.accel()
        mem_total, mem_avail = _meminfo()
        disk = shutil.disk_usage(self.root)
        running = [vm for vm in self._vms.values() if vm.record.power != "off"]
        bundle: dict[str, Any] = {}
        try:
            manifest = load_signed_manifest(self.crx_dir / "bundle", public_key=self._public_key()).manifest
            bundle = {"kernel": manifest["kernel"]["version"], "builtAt": manifest.get("builtAt"),
                      "signingKey": manifest.get("signingKey"), "verified": "signature"}
        except (BundleError, BundleRejected) as exc:
            bundle = {"error": str(exc)}
        return {
            "name": name,
            "cpus": os.cpu_count() or 1,
            "memoryBytes": mem_total,
            "memoryAvailableBytes": mem_avail,
            "disk": {"path": str(self.root), "capacityBytes": disk.total, "availableBytes": disk.free},
            "accel": accel,
            "hypervisor": qemu_version(),
            "machine": "microvm",
            "vms": {"total": len(self._vms), "running": len(running),
                    "vcpus": sum(vm.record.spec.vcpus for vm in running),
                    "memoryMiB": sum(vm.record.spec.memory_mib for vm in running)},
            "vmOverhead": {"guestMemoryMiB": GUEST_OVERHEAD_MIB, "hostMemoryMiB": HOST_OVERHEAD_MIB},
            "bundle": bundle,
            "templates": {"enabled": self.templates.enabled, "count": len(self.templates.list())},
        }


def _load_records(vms_dir: Path) -> list[tuple[VMRecord, Path]]:
    vms_dir.mkdir(parents=True, exist_ok=True)
    out = []
    for path in sorted(vms_dir.glob("*/vm.json")):
        try:
            out.append((VMRecord.from_json(json.loads(path.read_text())), path.parent))
        except (ValueError, KeyError, SpecError) as exc:
            log.warning("ignoring unreadable %s: %s", path, exc)
    return out


def _check_disk_path(disk: DiskSpec) -> None:
    if disk.path and not os.path.exists(disk.path):
        raise BadRequest(f"disk {disk.id}: {disk.path} does not exist")


def _meminfo() -> tuple[int, int]:
    total = avail = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                total = int(line.split()[1]) * 1024
            elif line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
    return total, avail
