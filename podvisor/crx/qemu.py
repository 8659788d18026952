"""One QEMU ``microvm`` process per pod VM: its command line, its launch, and its QMP socket.

The machine has nothing but what a pod needs: no BIOS option ROMs, no PCI, no USB, no display, no
default devices. Devices are virtio-mmio: one virtio-blk per disk (serial = the disk's id, which is how
the guest finds it), one virtio-net per NIC on a tap, one virtio-serial port for the agent (a unix
socket on the host), the serial console appended to a file. TCG gets a small translation cache
(``tb-size``, `DEFAULT_TB_MIB`), or every VM's RSS grows by QEMU's default of a gigabyte's worth of code
cache. The cache is all touched once a guest has run a little (a kernel boot alone translates ~33 MiB
of host code), so its size is host memory per VM: at 14 MiB QEMU's private memory beyond guest RAM stays
near 31 MiB (the other ~17 MiB: QEMU's heap, the vCPU's TLB, the 2 MiB ACPI ROM block, relocated library
data). The price is paid by cold boots: a full cache is flushed and the hot kernel code retranslated,
about every 150 ms while the pod is being set up (measured: ~89 MiB translated to the first container's
output at 14 MiB, ~67 MiB at 24 MiB, ~0.2 s apart). ``PODVISOR_TCG_TB_MIB`` trades the other way.

QEMU is started with ``-daemonize``: it is not our child, it outlives hostd, and hostd finds it again
through its pidfile and QMP socket. Launch returns once QEMU has loaded the kernel and is running.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "QemuError",
    "DiskConfig",
    "NicConfig",
    "MachineConfig",
    "qemu_argv",
    "launch_qemu",
    "QmpClient",
    "pid_alive",
    "read_pidfile",
    "kill_pid",
    "open_unix",
    "QEMU_BINARY",
    "DEFAULT_TB_MIB",
]

QEMU_BINARY = "qemu-system-x86_64"
DEFAULT_TB_MIB = 14


class QemuError(RuntimeError):
    """QEMU refused to start or its monitor failed."""


@dataclass(frozen=True)
class DiskConfig:
    id: str              # also the virtio serial the guest sees (max 20 characters)
    path: Path
    read_only: bool = False
    format: str = "raw"


@dataclass(frozen=True)
class NicConfig:
    id: str
    mac: str
    tap: str             # empty: an unconnected hub port (a template's placeholder NIC)


@dataclass
class MachineConfig:
    name: str
    vm_dir: Path
    vcpus: int
    memory_mib: int
    kernel: str
    initrd: str
    cmdline: str
    accel: str = "tcg"               # "tcg" or "kvm"
    tb_size_mib: int = DEFAULT_TB_MIB
    disks: Sequence[DiskConfig] = field(default_factory=tuple)
    nics: Sequence[NicConfig] = field(default_factory=tuple)
    incoming: str | None = None      # restore from a saved state ("exec:cat FILE")
    paused: bool = False             # -S: vCPUs wait for QMP "cont" (the bundle is verified meanwhile)
    memory_file: Path | None = None  # guest RAM backed by this file (templates)
    memory_shared: bool = False      # MAP_SHARED (a template being made) or private copy-on-write (a clone)

    @property
    def qmp_socket(self) -> Path:
        return self.vm_dir / "qmp.sock"

    @property
    def agent_socket(self) -> Path:
        return self.vm_dir / "agent.sock"

    @property
    def pidfile(self) -> Path:
        return self.vm_dir / "qemu.pid"

    @property
    def console_log(self) -> Path:
        return self.vm_dir / "console.log"


def qemu_argv(cfg: MachineConfig, *, daemonize: bool = True) -> list[str]:
    accel = f"tcg,tb-size={cfg.tb_size_mib}" if cfg.accel == "tcg" else "kvm"
    machine = "microvm,acpi=on,x-option-roms=off,isa-serial=on,rtc=on"
    memory: list[str] = []
    if cfg.memory_file is not None:
        machine += ",memory-backend=pv-ram"
        memory = ["-object", f"memory-backend-file,id=pv-ram,size={cfg.memory_mib}M,mem-path={cfg.memory_file},"
                             f"share={'on' if cfg.memory_shared else 'off'}"]
    argv = [
        QEMU_BINARY,
        "-name", f"{cfg.name},process=pv-{cfg.name}"[:120],
        "-machine", machine,
        *memory,
        "-accel", accel,
        "-cpu", "host" if cfg.accel == "kvm" else "max",
        "-smp", str(cfg.vcpus),
        "-m", f"{cfg.memory_mib}M",
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-kernel", cfg.kernel,
        "-initrd", cfg.initrd,
        "-append", cfg.cmdline,
        "-chardev", f"file,id=console,path={cfg.console_log},append=on",
        "-serial", "chardev:console",
        # relative to QEMU's working directory (the VM's): unix socket paths are limited to 107 bytes
        "-qmp", f"unix:{cfg.qmp_socket.name},server=on,wait=off",
        "-chardev", f"socket,id=agent,path={cfg.agent_socket.name},server=on,wait=off",
        "-device", "virtio-serial-device,max_ports=2",
        "-device", "virtserialport,chardev=agent,name=org.podvisor.agent",
    ]
    for d in cfg.disks:
        opts = f"id=drive-{d.id},file={d.path},format={d.format},if=none,cache=unsafe,discard=unmap"
        if d.read_only:
            opts += ",readonly=on"
        argv += ["-drive", opts, "-device", f"virtio-blk-device,drive=drive-{d.id},serial={d.id}"]
    for i, n in enumerate(cfg.nics):
        backend = f"tap,id=net-{n.id},ifname={n.tap},script=no,downscript=no" if n.tap else f"hubport,id=net-{n.id},hubid={i}"
        argv += ["-netdev", backend, "-device", f"virtio-net-device,netdev=net-{n.id},mac={n.mac}"]
    if cfg.incoming:
        argv += ["-incoming", cfg.incoming]
    if cfg.paused:
        argv.append("-S")
    argv += ["-pidfile", str(cfg.pidfile)]
    if daemonize:
        argv.append("-daemonize")
    return argv


def read_pidfile(path: Path) -> int | None:
    try:
        return int(path.read_text().strip() or "0") or None
    except (FileNotFoundError, ValueError):
        return None


def pid_alive(pid: int | None, *, expect: str = "qemu") -> bool:
    """Is ``pid`` a live (not zombie) process whose command line mentions ``expect``?"""
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        state = stat[stat.rindex(b")") + 2:stat.rindex(b")") + 3]
        if state in (b"Z", b"X"):
            return False
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return expect.encode() in f.read()
    except (FileNotFoundError, ProcessLookupError, ValueError):
        return False


async def launch_qemu(cfg: MachineConfig, *, pass_fds: Sequence[int] = (), netns: str | None = None) -> int:
    """Start QEMU daemonized; return its pid once it runs. Raises `QemuError` with QEMU's own message."""
    cfg.vm_dir.mkdir(parents=True, exist_ok=True)
    for p in (cfg.qmp_socket, cfg.agent_socket, cfg.pidfile):
        p.unlink(missing_ok=True)
    argv = qemu_argv(cfg)
    if netns:
        ns_path = netns if netns.startswith("/") else f"/run/netns/{netns}"
        argv = ["nsenter", f"--net={ns_path}", "--", *argv]
    err_path = cfg.vm_dir / "qemu.err"
    with err_path.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=err,
            pass_fds=tuple(pass_fds), start_new_session=True, cwd=cfg.vm_dir)
        rc = await proc.wait()
    message = err_path.read_text(errors="replace").strip()
    if rc != 0:
        raise QemuError(f"QEMU failed to start (exit {rc}): {message[-800:] or 'no message'}")
    pid = read_pidfile(cfg.pidfile)
    if not pid_alive(pid):
        raise QemuError(f"QEMU exited right after starting: {message[-800:] or 'no message'}")
    assert pid is not None
    return pid


class QmpClient:
    """A minimal async QMP client: one command at a time, events kept, ``closed`` set when QEMU goes.

    A reader task owns the socket, so a VM's exit is noticed (the socket closes) even while no command
    is in flight: hostd watches ``closed`` instead of waiting on a process it did not spawn.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._reply: asyncio.Future[dict[str, Any]] | None = None
        self._greeting: asyncio.Future[dict[str, Any]] | None = None
        self.events: list[dict[str, Any]] = []
        self.closed = asyncio.Event()

    async def connect(self, *, timeout_s: float = 5.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            try:
                reader, self._writer = await open_unix(self.path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if loop.time() > deadline:
                    raise QemuError(f"QMP socket {self.path} did not come up") from None
                await asyncio.sleep(0.005)
        self._greeting = loop.create_future()
        self._reader_task = asyncio.create_task(self._read_loop(reader), name=f"qmp-{self.path.parent.name}")
        await asyncio.wait_for(self._greeting, timeout_s)
        await self.execute("qmp_capabilities")

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                try:
                    msg: dict[str, Any] = json.loads(line)
                except ValueError:
                    continue
                if "QMP" in msg and self._greeting is not None and not self._greeting.done():
                    self._greeting.set_result(msg)
                elif "event" in msg:
                    self.events.append(msg)
                    del self.events[:-64]
                elif self._reply is not None and not self._reply.done():
                    self._reply.set_result(msg)
        except (ConnectionError, OSError):
            pass
        finally:
            self.closed.set()
            for fut in (self._reply, self._greeting):
                if fut is not None and not fut.done():
                    fut.set_exception(QemuError("QMP connection closed"))

    async def execute(self, command: str, arguments: dict[str, Any] | None = None, *, timeout_s: float = 30.0) -> Any:
        if self._writer is None or self.closed.is_set():
            raise QemuError("QMP is not connected")
        async with self._lock:
            req: dict[str, Any] = {"execute": command}
            if arguments:
                req["arguments"] = arguments
            self._reply = asyncio.get_running_loop().create_future()
            self._writer.write(json.dumps(req).encode() + b"\n")
            await self._writer.drain()
            reply = await asyncio.wait_for(self._reply, timeout_s)
        if "error" in reply:
            raise QemuError(f"QMP {command}: {reply['error'].get('desc', reply['error'])}")
        return reply.get("return")

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader_task
        self._writer = None


async def open_unix(path: Path, *, limit: int = 1 << 22) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to a unix socket whose path may be longer than sun_path allows (through /proc/self/fd)."""
    if len(os.fsencode(str(path))) < 100:
        return await asyncio.open_unix_connection(str(path), limit=limit)
    dir_fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return await asyncio.open_unix_connection(f"/proc/self/fd/{dir_fd}/{path.name}", limit=limit)
    finally:
        os.close(dir_fd)


def kill_pid(pid: int | None, sig: int = signal.SIGKILL) -> None:
    if pid:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
