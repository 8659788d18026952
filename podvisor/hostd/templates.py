"""VM templates: boot once per device layout, save, and start every later VM of that layout by restoring.

A template is a VM booted cold from the verified bundle with placeholder devices - sparse 1 TiB disk
files (never mounted; the agent drops every cached sector before the save) and unconnected NICs with
fixed MACs - up to the point where its agent answers Hello, then saved with QMP ``migrate``. Its RAM
lives in a file (``memory-backend-file,share=on``) and the migration skips it (``x-ignore-shared``),
so saving writes only the device state (tens of KiB).

A clone starts QEMU with the same device layout but the pod's own disk files and taps, maps the
template's RAM file *privately* (copy-on-write: clean pages stay shared in the page cache between all
clones of a template), loads the device state (``-incoming``) and continues. The agent then takes the
host's time and fresh entropy (Hello reseeds the guest's CRNG), finds the pod's disks by serial and
flushes the block cache before mounting, and sets each NIC's MAC (virtio-net restores the template's).
Disk capacities stay the placeholders'; a file system never reads past its own end.

The layout key covers everything the saved state depends on: the bundle's digests, accelerator,
vCPUs, memory, the disk kinds/read-only flags in order, the NIC count and the QEMU version. Templates
are written to a fresh directory and never modified; a clone keeps its mapping if one is pruned.
The RAM file is protected by the directory's permissions (0700, root), not re-hashed per start.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from podvisor.crx.accel import qemu_version
from podvisor.crx.bundle import Bundle
from podvisor.crx.client import AgentClient
from podvisor.crx.qemu import (
    DEFAULT_TB_MIB,
    DiskConfig,
    MachineConfig,
    NicConfig,
    QemuError,
    QmpClient,
    kill_pid,
    launch_qemu,
)

__all__ = ["Layout", "Template", "TemplateStore", "placeholder_mac", "wait_migration"]

log = logging.getLogger("podvisor.hostd.templates")

PLACEHOLDER_BYTES = 1 << 40
MAX_TEMPLATES = 8


def placeholder_mac(index: int) -> str:
    return f"02:00:00:00:00:{index + 1:02x}"


@dataclass(frozen=True)
class Layout:
    vcpus: int
    memory_mib: int
    disks: tuple[tuple[str, bool], ...]   # (kind, read-only) in device order
    nics: int
    accel: str

    def key(self, bundle: Bundle) -> str:
        files = bundle.manifest["files"]
        parts = [files["kernel"]["sha256"], files["initramfs.cpio"]["sha256"], bundle.cmdline, qemu_version(),
                 json.dumps([self.vcpus, self.memory_mib, self.disks, self.nics, self.accel])]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:20]

    def describe(self) -> dict[str, Any]:
        return {"vcpus": self.vcpus, "memoryMiB": self.memory_mib, "nics": self.nics, "accel": self.accel,
                "disks": [{"kind": k, "readOnly": ro} for k, ro in self.disks]}


@dataclass(frozen=True)
class Template:
    dir: Path
    key: str
    layout: Layout
    built_at: float

    @property
    def ram(self) -> Path:
        return self.dir / "ram"

    @property
    def state(self) -> Path:
        return self.dir / "state"

    def describe(self) -> dict[str, Any]:
        ram_bytes = self.ram.stat().st_blocks * 512 if self.ram.exists() else 0
        return {"key": self.key, "layout": self.layout.describe(), "builtAt": self.built_at,
                "ramBytesOnDisk": ram_bytes}


async def wait_migration(qmp: QmpClient, *, timeout_s: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        status: dict[str, Any] = await qmp.execute("query-migrate")
        if status.get("status") in ("completed", "failed", "cancelled"):
            if status["status"] != "completed":
                raise QemuError(f"migration {status['status']}: {status.get('error-desc', '')}")
            return status
        if time.monotonic() > deadline:
            raise QemuError("migration did not finish")
        await asyncio.sleep(0.002)


class TemplateStore:
    def __init__(self, root: Path, *, enabled: bool = True, tb_size_mib: int = DEFAULT_TB_MIB) -> None:
        self.root = root
        self.enabled = enabled
        self.tb_size_mib = tb_size_mib
        self._locks: dict[str, asyncio.Lock] = {}
        self._building: dict[str, asyncio.Task[Template | None]] = {}

    def find(self, key: str) -> Template | None:
        meta = self.root / key / "template.json"
        try:
            body = json.loads(meta.read_text())
            layout = Layout(vcpus=body["layout"]["vcpus"], memory_mib=body["layout"]["memoryMiB"],
                            disks=tuple((d["kind"], d["readOnly"]) for d in body["layout"]["disks"]),
                            nics=body["layout"]["nics"], accel=body["layout"]["accel"])
            template = Template(dir=self.root / body["dir"], key=key, layout=layout, built_at=body["builtAt"])
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return None
        return template if template.state.exists() and template.ram.exists() else None

    def list(self) -> list[Template]:
        if not self.root.exists():
            return []
        found = [self.find(p.name) for p in self.root.iterdir() if (p / "template.json").exists()]
        return sorted((t for t in found if t is not None), key=lambda t: t.built_at)

    def ensure(self, bundle_dir: Path, public_key: Any, layout: Layout, cmdline: str) -> asyncio.Task[Template | None]:
        """Build the layout's template in the background unless it exists or is being built."""
        from podvisor.crx.bundle import load_signed_manifest

        bundle = load_signed_manifest(bundle_dir, public_key=public_key)
        key = layout.key(bundle)
        task = self._building.get(key)
        if task is None or task.done():
            task = asyncio.create_task(self._build_logged(bundle_dir, public_key, layout, cmdline), name=f"template-{key}")
            self._building[key] = task
        return task

    async def _build_logged(self, bundle_dir: Path, public_key: Any, layout: Layout, cmdline: str) -> Template | None:
        from podvisor.crx.bundle import BundleError, check_digests, load_signed_manifest, open_bundle_files

        bundle = load_signed_manifest(bundle_dir, public_key=public_key)
        try:
            open_bundle_files(bundle)
            await asyncio.to_thread(check_digests, bundle)
            return await self.build(bundle, layout, cmdline)
        except (BundleError, QemuError, OSError, TimeoutError, ConnectionError) as exc:
            log.warning("template for %s not built: %s", layout.describe(), exc)
            return None
        finally:
            bundle.close()

    async def build(self, bundle: Bundle, layout: Layout, cmdline: str) -> Template:
        """Boot, save and keep a template for ``layout`` (the bundle is verified and its files open)."""
        key = layout.key(bundle)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            existing = self.find(key)
            if existing is not None:
                return existing
            started = time.monotonic()
            self.root.mkdir(parents=True, exist_ok=True)
            os.chmod(self.root, 0o700)
            work = self.root / f"{key}-{int(time.time() * 1000)}"
            work.mkdir()
            try:
                template = await self._boot_and_save(work, key, bundle, layout, cmdline)
            except BaseException:
                shutil.rmtree(work, ignore_errors=True)
                raise
            meta = {"dir": work.name, "builtAt": template.built_at, "layout": layout.describe(),
                    "seconds": round(time.monotonic() - started, 3)}
            (self.root / key).mkdir(exist_ok=True)
            tmp = self.root / key / "template.json.tmp"
            tmp.write_text(json.dumps(meta))
            os.replace(tmp, self.root / key / "template.json")
            log.info("template %s built in %.1fs (%s)", key, time.monotonic() - started, layout.describe())
            self._prune()
            return template

    async def _boot_and_save(self, work: Path, key: str, bundle: Bundle, layout: Layout, cmdline: str) -> Template:
        disks = [DiskConfig(f"placeholder{i}", _placeholder(work / f"placeholder-{i}.img"), read_only)
                 for i, (_kind, read_only) in enumerate(layout.disks)]
        cfg = MachineConfig(
            name=f"template-{key}", vm_dir=work / "vm", vcpus=layout.vcpus, memory_mib=layout.memory_mib,
            kernel=bundle.fd_path("kernel"), initrd=bundle.fd_path("initramfs.cpio"), cmdline=cmdline,
            accel=layout.accel, tb_size_mib=self.tb_size_mib, disks=disks,
            nics=[NicConfig(f"eth{i}", placeholder_mac(i), "") for i in range(layout.nics)],
            memory_file=work / "ram", memory_shared=True)
        pid = await launch_qemu(cfg, pass_fds=list(bundle.fds.values()))
        qmp = QmpClient(cfg.qmp_socket)
        agent: AgentClient | None = None
        try:
            await qmp.connect()
            agent = await AgentClient.connect_unix(cfg.agent_socket, timeout_s=10.0)
            async with asyncio.timeout(120):
                await agent.hello(timeout_s=None)
            await agent.call("PrepareTemplate")
            await agent.close()
            agent = None
            await asyncio.sleep(0.05)  # let the guest see the host side go away before the save
            await qmp.execute("migrate-set-capabilities",
                              {"capabilities": [{"capability": "x-ignore-shared", "state": True}]})
            await qmp.execute("migrate", {"uri": f"exec:cat > {work / 'state'}"})
            await wait_migration(qmp)
            with contextlib.suppress(QemuError):
                await qmp.execute("quit", timeout_s=5.0)
        finally:
            if agent is not None:
                await agent.close()
            await qmp.close()
            kill_pid(pid)
        for d in disks:
            d.path.unlink(missing_ok=True)
        shutil.rmtree(work / "vm", ignore_errors=True)
        return Template(dir=work, key=key, layout=layout, built_at=time.time())

    def _prune(self) -> None:
        templates = self.list()
        for old in templates[:-MAX_TEMPLATES]:
            shutil.rmtree(old.dir, ignore_errors=True)
            shutil.rmtree(self.root / old.key, ignore_errors=True)
        # directories no template.json points at any more (superseded builds)
        live = {t.dir.name for t in self.list()} | {t.key for t in self.list()}
        for p in self.root.iterdir():
            if p.is_dir() and p.name not in live and not (p / "template.json").exists() and "-" in p.name:
                age = time.time() - p.stat().st_mtime
                if age > 3600:
                    shutil.rmtree(p, ignore_errors=True)


def _placeholder(path: Path) -> Path:
    """A sparse file with a huge capacity and no blocks: what a template's disk slots are made of."""
    with open(path, "wb") as f:
        f.truncate(PLACEHOLDER_BYTES)
    return path


def layout_for(vcpus: int, memory_mib: int, disks: Sequence[tuple[str, bool]], nics: int, accel: str) -> Layout:
    return Layout(vcpus=vcpus, memory_mib=memory_mib, disks=tuple(disks), nics=nics, accel=accel)
