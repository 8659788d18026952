"""One pod VM's life on this host: boot (cold), adopt after a hostd restart, stop, observe.

Cold boot, in order: the bundle's signature is checked and its files opened; QEMU starts *paused*
with those very files while a thread hashes them against the signed manifest; only if every digest
matches do the vCPUs run (QMP ``cont``), else QEMU is killed and `BundleRejected` says why. Then the
agent port is opened, Hello (host time, fresh entropy), SetupSandbox (hostname, disks by serial, NIC
addresses) - and the VM is "on". Timings of each step are kept on the record (``boot``).

A VM's QEMU is never hostd's child: hostd watches its QMP socket, and when that closes the VM is off.
Stopping hostd only closes the sockets; `adopt` reconnects to a QEMU found alive by its pidfile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from podvisor.crx.accel import tcg_kernel_args
from podvisor.crx.bundle import Bundle, BundleError, check_digests, load_signed_manifest, open_bundle_files
from podvisor.crx.client import AgentClient, AgentError
from podvisor.crx.protocol import SetupSandbox
from podvisor.crx.qemu import (
    DEFAULT_TB_MIB,
    DiskConfig,
    MachineConfig,
    NicConfig,
    QemuError,
    QmpClient,
    kill_pid,
    launch_qemu,
    pid_alive,
    read_pidfile,
)
from podvisor.disks import DEFAULT_EPHEMERAL_BYTES, create_ephemeral_disk, disk_usage
from podvisor.hostd.errors import BootFailed, BundleRejected, Conflict
from podvisor.hostd.spec import DiskSpec, VMRecord
from podvisor.hostd.templates import Layout, Template, TemplateStore, placeholder_mac, wait_migration

__all__ = ["VirtualMachine", "BootContext"]

log = logging.getLogger("podvisor.hostd.vm")


class BootContext:
    """What every boot on this host shares: the bundle location and its trusted key, the accelerator,
    the template store (None: always cold boot)."""

    def __init__(self, *, bundle_dir: Path, public_key: Any, accel: Callable[[Bundle], Awaitable[str]],
                 tb_size_mib: int = DEFAULT_TB_MIB, templates: TemplateStore | None = None) -> None:
        self.bundle_dir = bundle_dir
        self.public_key = public_key
        self.accel = accel
        self.tb_size_mib = tb_size_mib
        self.templates = templates


_DISK_ORDER = {"image": 0, "runtime": 1, "data": 2, "ephemeral": 3}


def ordered_disks(disks: list[DiskSpec]) -> list[DiskSpec]:
    """Device order on the virtio-mmio bus: images, runtime, data, ephemeral (templates rely on it)."""
    return sorted(disks, key=lambda d: _DISK_ORDER.get(d.kind, 9))


class VirtualMachine:
    def __init__(self, record: VMRecord, vm_dir: Path, *, on_change: Callable[[VirtualMachine], None]) -> None:
        self.record = record
        self.dir = vm_dir
        self.lock = asyncio.Lock()
        self.qmp: QmpClient | None = None
        self.agent: AgentClient | None = None
        self._watch: asyncio.Task[None] | None = None
        self._on_change = on_change
        self._stopping = False

    @property
    def id(self) -> str:
        return self.record.spec.id

    # ---- persistence ----

    def save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / "vm.json.tmp"
        tmp.write_text(json.dumps(self.record.to_json(), indent=1, sort_keys=True))
        os.replace(tmp, self.dir / "vm.json")
        self._on_change(self)

    def machine(self, *, accel: str, kernel: str, initrd: str, cmdline: str, tb_size_mib: int,
                template: Template | None = None) -> MachineConfig:
        spec = self.record.spec
        return MachineConfig(
            name=spec.id, vm_dir=self.dir, vcpus=spec.vcpus, memory_mib=spec.memory_mib, kernel=kernel,
            initrd=initrd, cmdline=cmdline, accel=accel, tb_size_mib=tb_size_mib,
            disks=[DiskConfig(d.id, Path(d.path), d.read_only) for d in ordered_disks(spec.disks)],
            nics=[NicConfig(n.id, n.mac, n.tap) for n in spec.nics], paused=True,
            memory_file=template.ram if template else None, memory_shared=False,
            incoming="defer" if template else None)

    def layout(self, accel: str) -> Layout:
        spec = self.record.spec
        return Layout(vcpus=spec.vcpus, memory_mib=spec.memory_mib, nics=len(spec.nics), accel=accel,
                      disks=tuple((d.kind, d.read_only) for d in ordered_disks(spec.disks)))

    def disk_path(self, disk: DiskSpec) -> Path:
        return Path(disk.path) if disk.path else self.dir / f"{disk.id}.img"

    # ---- boot ----

    async def _prepare_disks(self) -> None:
        for disk in self.record.spec.disks:
            path = self.disk_path(disk)
            if not disk.path:
                disk.path = str(path)
            if not path.exists():
                if disk.kind == "ephemeral":
                    await create_ephemeral_disk(path, disk.size_bytes or DEFAULT_EPHEMERAL_BYTES)
                    if not disk.size_bytes:
                        disk.size_bytes = path.stat().st_size
                else:
                    raise BootFailed(f"disk {disk.id}: {path} does not exist")

    async def power_on(self, ctx: BootContext, *, timeout_s: float = 120.0, start_mode: str = "auto") -> None:
        """Boot the VM: restored from its layout's template if there is one (``start_mode`` auto or
        template), else cold; "auto" then builds the template in the background for the next VM."""
        rec = self.record
        if rec.power == "on" and self.alive():
            return
        if rec.power in ("starting", "stopping"):
            raise Conflict(f"VM {self.id} is {rec.power}")
        rec.power, rec.boot, rec.last_exit = "starting", {}, ""
        self.save()
        t0 = time.monotonic()
        bundle: Bundle | None = None
        template: Template | None = None
        try:
            await self._prepare_disks()
            t_sig = time.monotonic()
            try:
                bundle = load_signed_manifest(ctx.bundle_dir, public_key=ctx.public_key)
                open_bundle_files(bundle)
            except BundleError as exc:
                raise BundleRejected(str(exc)) from exc
            t_manifest = time.monotonic() - t_sig
            accel = await ctx.accel(bundle)
            cmdline = (bundle.cmdline + (" " + tcg_kernel_args() if accel == "tcg" else "")).strip()
            layout = self.layout(accel)
            if ctx.templates is not None and ctx.templates.enabled and start_mode != "cold":
                template = ctx.templates.find(layout.key(bundle))
                if template is None and start_mode == "auto":
                    ctx.templates.ensure(ctx.bundle_dir, ctx.public_key, layout, cmdline)
            if template is None and start_mode == "template":
                raise Conflict(f"no template for this VM's layout yet ({layout.describe()})")
            rec.start_mode = "template" if template else "cold"
            cfg = self.machine(accel=accel, kernel=bundle.fd_path("kernel"), initrd=bundle.fd_path("initramfs.cpio"),
                               cmdline=cmdline, tb_size_mib=ctx.tb_size_mib, template=template)
            digests = asyncio.create_task(asyncio.to_thread(_timed, check_digests, bundle))
            t_launch = time.monotonic()
            netns = next((n.netns for n in rec.spec.nics if n.netns), None)
            try:
                pid = await launch_qemu(cfg, pass_fds=list(bundle.fds.values()), netns=netns)
            except QemuError as exc:
                with contextlib.suppress(BaseException):
                    await digests
                raise BootFailed(str(exc)) from exc
            rec.qemu_pid, rec.accel = pid, accel
            self.save()
            self.qmp = QmpClient(cfg.qmp_socket)
            await self.qmp.connect()
            t_qemu = time.monotonic()
            if template is not None:
                await self.qmp.execute("migrate-set-capabilities",
                                       {"capabilities": [{"capability": "x-ignore-shared", "state": True}]})
                await self.qmp.execute("migrate-incoming", {"uri": f"exec:cat {template.state}"})
                await wait_migration(self.qmp)
            t_restored = time.monotonic()
            try:
                verify_s = await digests
            except BundleError as exc:
                kill_pid(pid)
                raise BundleRejected(str(exc)) from exc
            await self.qmp.execute("cont")
            t_cont = time.monotonic()
            bundle.close()
            bundle = None
            self.agent = await AgentClient.connect_unix(cfg.agent_socket, timeout_s=10.0)
            async with asyncio.timeout(timeout_s):
                hello = await self.agent.hello(timeout_s=None)
            t_hello = time.monotonic()
            setup = await self.agent.setup_sandbox(self.sandbox_request(from_template=template is not None))
            t_setup = time.monotonic()
        except BaseException as exc:
            await self._teardown(kill=True)
            rec.power = "off"
            rec.last_exit = f"boot failed: {exc}"
            self.save()
            if isinstance(exc, (BundleRejected, BootFailed, Conflict)):
                raise
            if isinstance(exc, (TimeoutError, AgentError, QemuError, OSError)):
                raise BootFailed(f"VM {self.id} did not boot: {exc or type(exc).__name__}. "
                                 f"Console: {self.console_tail(400)!r}") from exc
            raise
        finally:
            if bundle is not None:
                bundle.close()
        rec.boot = {
            "verifyMs": round((t_manifest + verify_s) * 1000, 1),
            "qemuStartMs": round((t_qemu - t_launch) * 1000, 1),
        }
        if template is not None:
            rec.boot["restoreMs"] = round((t_restored - t_qemu) * 1000, 1)
            rec.boot["agentReadyMs"] = round((t_hello - t_cont) * 1000, 1)
        else:
            gb = hello.get("boot", {})
            guest_ms = lambda key: float(gb.get(key, 0)) / 1000.0  # noqa: E731
            # the guest's uptime clock starts with its kernel; place its marks on the host's timeline
            t_init = t_hello - (guest_ms("helloMs") - guest_ms("initStartMs"))
            t_agent = t_hello - (guest_ms("helloMs") - guest_ms("agentReadyMs"))
            rec.boot["kernelBootMs"] = round((t_init - t_cont) * 1000, 1)
            rec.boot["initMs"] = round((t_agent - t_init) * 1000, 1)
            rec.boot["agentReadyMs"] = round((t_hello - t_agent) * 1000, 1)
        rec.boot["sandboxSetupMs"] = round((t_setup - t_hello) * 1000, 1)
        rec.boot["totalMs"] = round((t_setup - t0) * 1000, 1)
        rec.agent = {"version": hello.get("agentVersion"), "protocol": hello.get("version"),
                     "capabilities": hello.get("capabilities", []), "disks": setup.get("disks", [])}
        rec.power = "on"
        rec.started_at = time.time()
        self.save()
        self._start_watch()

    def sandbox_request(self, *, from_template: bool = False) -> SetupSandbox:
        spec = self.record.spec
        req: SetupSandbox = {
            "hostname": spec.hostname or spec.id,
            "disks": [{"id": d.id, "kind": "ephemeral" if d.kind == "ephemeral" else "image"}
                      for d in spec.disks if d.kind in ("image", "ephemeral")],
            "interfaces": [],
        }
        for i, n in enumerate(spec.nics):
            iface: dict[str, Any] = {"mac": n.mac, "name": n.id}
            if from_template:
                iface["templateMac"] = placeholder_mac(i)
            if n.ip:
                iface["addresses"] = [n.ip]
            if n.gateway:
                iface["gateway"] = n.gateway
            if n.mtu:
                iface["mtu"] = n.mtu
            req["interfaces"].append(iface)  # type: ignore[arg-type]
        if "hosts" in spec.guest_files:
            req["hosts"] = spec.guest_files["hosts"]
        if "resolvConf" in spec.guest_files:
            req["resolvConf"] = spec.guest_files["resolvConf"]
        return req

    # ---- adoption and watching ----

    def alive(self) -> bool:
        return pid_alive(self.record.qemu_pid, expect=str(self.dir))

    async def adopt(self) -> None:
        """Reconnect to a VM that kept running while hostd was away (or record that it stopped)."""
        rec = self.record
        pid = read_pidfile(self.dir / "qemu.pid") or rec.qemu_pid
        if rec.power == "off":
            return
        if not pid_alive(pid, expect=str(self.dir)):
            rec.power, rec.qemu_pid = "off", 0
            rec.last_exit = rec.last_exit or "QEMU exited while hostd was not running"
            self.save()
            return
        rec.qemu_pid = pid or 0
        try:
            self.qmp = QmpClient(self.dir / "qmp.sock")
            await self.qmp.connect()
            self.agent = await AgentClient.connect_unix(self.dir / "agent.sock", timeout_s=5.0)
            hello = await self.agent.hello(timeout_s=10.0)
            rec.agent["capabilities"] = hello.get("capabilities", [])
            rec.power = "on"
        except (QemuError, AgentError, OSError, TimeoutError) as exc:
            log.warning("VM %s: QEMU %s is alive but could not be reattached: %s", self.id, pid, exc)
        self.save()
        self._start_watch()

    def _start_watch(self) -> None:
        if self.qmp is not None:
            self._watch = asyncio.create_task(self._watch_exit(self.qmp), name=f"watch-{self.id}")

    async def _watch_exit(self, qmp: QmpClient) -> None:
        await qmp.closed.wait()
        if self.qmp is not qmp or self._stopping:
            return
        # QEMU went away on its own: the guest powered off or crashed
        for _ in range(50):
            if not self.alive():
                break
            await asyncio.sleep(0.02)
        if self.alive():
            return  # only the monitor connection dropped
        await self._teardown(kill=False)
        self.record.power, self.record.qemu_pid = "off", 0
        self.record.last_exit = self.record.last_exit or "the guest powered off"
        self.save()

    # ---- stop ----

    async def power_off(self, *, timeout_s: float = 10.0, force: bool = False) -> None:
        rec = self.record
        if rec.power == "off" and not self.alive():
            return
        self._stopping = True
        rec.power = "stopping"
        self.save()
        try:
            graceful = False
            if not force and self.agent is not None and not self.agent.closed.is_set():
                with contextlib.suppress(AgentError, TimeoutError, OSError):
                    await self.agent.shutdown()
                deadline = time.monotonic() + timeout_s
                while time.monotonic() < deadline and self.alive():
                    await asyncio.sleep(0.02)
                graceful = not self.alive()
            await self._teardown(kill=True)
            rec.last_exit = "powered off" if graceful else "powered off (forced)"
        finally:
            self._stopping = False
            rec.power, rec.qemu_pid = "off", 0
            self.save()

    async def _teardown(self, *, kill: bool) -> None:
        if self._watch is not None and self._watch is not asyncio.current_task():
            self._watch.cancel()
        self._watch = None
        if kill and self.alive():
            if self.qmp is not None and not self.qmp.closed.is_set():
                with contextlib.suppress(QemuError, TimeoutError, OSError):
                    await self.qmp.execute("quit", timeout_s=2.0)
            for _ in range(100):
                if not self.alive():
                    break
                await asyncio.sleep(0.01)
            if self.alive():
                kill_pid(self.record.qemu_pid)
                for _ in range(100):
                    if not self.alive():
                        break
                    await asyncio.sleep(0.01)
        agent, qmp = self.agent, self.qmp
        self.agent = self.qmp = None
        if agent is not None:
            await agent.close()
        if qmp is not None:
            await qmp.close()
        for name in ("qmp.sock", "agent.sock", "qemu.pid"):
            (self.dir / name).unlink(missing_ok=True)

    async def detach(self) -> None:
        """Drop hostd's connections, leave the VM running (hostd is stopping)."""
        self._stopping = True
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        agent, qmp = self.agent, self.qmp
        self.agent = self.qmp = None
        if agent is not None:
            await agent.close()
        if qmp is not None:
            await qmp.close()

    async def destroy(self) -> None:
        await self.power_off(force=True)
        for disk in self.record.spec.disks:
            path = self.disk_path(disk)
            if disk.owned and not path.is_relative_to(self.dir):
                path.unlink(missing_ok=True)
        shutil.rmtree(self.dir, ignore_errors=True)

    # ---- observe ----

    def console_tail(self, limit: int = 65536) -> str:
        try:
            with open(self.dir / "console.log", "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - limit))
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def inspect(self) -> dict[str, Any]:
        rec, spec = self.record, self.record.spec
        disks = []
        for d in spec.disks:
            path = self.disk_path(d)
            size, allocated = disk_usage(path) if path.exists() else (d.size_bytes, 0)
            disks.append({"id": d.id, "kind": d.kind, "path": str(path), "sizeBytes": size,
                          "allocatedBytes": allocated, "readOnly": d.read_only, "owned": d.owned})
        alive = rec.power != "off" and self.alive()
        out: dict[str, Any] = {
            "id": spec.id, "labels": spec.labels, "hostname": spec.hostname or spec.id,
            "power": rec.power, "vcpus": spec.vcpus, "memoryMiB": spec.memory_mib,
            "disks": disks, "nics": [n.to_json() for n in spec.nics],
            "qemuPid": rec.qemu_pid if alive else 0, "accel": rec.accel, "startMode": rec.start_mode,
            "createdAt": rec.created_at, "startedAt": rec.started_at if alive else 0,
            "uptimeSeconds": round(time.time() - rec.started_at, 3) if alive and rec.started_at else 0,
            "agent": {**rec.agent, "connected": self.agent is not None and not self.agent.closed.is_set()},
            "boot": rec.boot, "lastExit": rec.last_exit, "consoleLog": str(self.dir / "console.log"),
        }
        if alive:
            out["hostMemory"] = qemu_memory(rec.qemu_pid, spec.memory_mib)
        return out


def _timed(fn: Callable[[Bundle], None], bundle: Bundle) -> float:
    started = time.monotonic()
    fn(bundle)
    return time.monotonic() - started


def qemu_memory(pid: int, guest_mib: int) -> dict[str, int]:
    """QEMU's resident memory, split into the guest RAM mapping and everything else (bytes)."""
    total = guest = anon = 0
    size_kb = rss_kb = 0
    try:
        with open(f"/proc/{pid}/smaps") as f:
            for line in f:
                if line[0] in "0123456789abcdef" and "-" in line.split(" ", 1)[0]:
                    size_kb = rss_kb = 0
                    continue
                key, _, rest = line.partition(":")
                if key == "Size":
                    size_kb = int(rest.split()[0])
                elif key == "Rss":
                    rss_kb = int(rest.split()[0])
                    total += rss_kb
                    if size_kb == guest_mib * 1024:
                        guest += rss_kb
                elif key == "Anonymous":
                    anon += int(rest.split()[0])
    except (FileNotFoundError, ProcessLookupError, ValueError):
        return {}
    return {"rssBytes": total * 1024, "guestRamRssBytes": guest * 1024, "beyondGuestBytes": (total - guest) * 1024,
            "anonymousBytes": anon * 1024, "anonymousBeyondGuestBytes": (anon - guest) * 1024}
