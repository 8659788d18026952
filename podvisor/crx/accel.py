"""KVM or TCG, and the machine facts a TCG guest needs.

`probe_accel` boots the bundle's probe initramfs once under KVM with a short timeout: KVM is used only
if the guest prints its marker. On the hosts Podvisor was built on (/dev/kvm backed by nested PVM)
a stock kernel hangs or QEMU aborts, so the answer there is TCG. The result is cached per bundle and
QEMU version; ``PODVISOR_ACCEL=tcg|kvm`` overrides it.

Under TCG the guest's TSC ticks at the host's rate and the guest kernel's own calibration against the
PIT sometimes fails under emulation (it then hangs early in boot), so `tcg_kernel_args` passes
``tsc_early_khz`` measured on the host.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from functools import cache
from pathlib import Path

from podvisor.crx.bundle import Bundle, crx_home
from podvisor.crx.qemu import QEMU_BINARY

__all__ = ["probe_accel", "host_tsc_khz", "tcg_kernel_args", "qemu_version", "PROBE_MARKER"]

PROBE_MARKER = b"PODVISOR-PROBE-OK"


@cache
def qemu_version() -> str:
    try:
        out = subprocess.run([QEMU_BINARY, "--version"], capture_output=True, text=True, check=False).stdout
    except FileNotFoundError:
        return ""
    return out.splitlines()[0] if out else ""


@cache
def host_tsc_khz() -> int:
    """The host TSC frequency in kHz (0 if unknown)."""
    tool = crx_home() / "tools" / "pv-tscfreq"
    if tool.exists():
        with contextlib.suppress(OSError, ValueError, subprocess.SubprocessError):
            out = subprocess.run([str(tool)], capture_output=True, text=True, timeout=5, check=False).stdout
            value = int(float(out.strip()))
            if value > 100_000:
                return value
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                return int(float(line.split(":")[1]) * 1000)
    return 0


def tcg_kernel_args() -> str:
    khz = host_tsc_khz()
    return f"tsc_early_khz={khz}" if khz else ""


async def _boot_probe(bundle: Bundle, accel: str, timeout_s: float) -> bool:
    argv = [QEMU_BINARY, "-machine", "microvm,acpi=on,x-option-roms=off", "-accel", accel,
            "-cpu", "host" if accel == "kvm" else "max", "-m", "128M", "-smp", "1", "-nodefaults",
            "-no-user-config", "-display", "none", "-no-reboot", "-serial", "stdio",
            "-kernel", str(bundle.path("kernel")), "-initrd", str(bundle.path("probe.cpio")),
            "-append", bundle.cmdline]
    proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    found = False
    try:
        async with asyncio.timeout(timeout_s):
            assert proc.stdout is not None
            async for line in proc.stdout:
                if PROBE_MARKER in line:
                    found = True
                    break
    except TimeoutError:
        pass
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
    return found


async def probe_accel(bundle: Bundle, *, cache_file: Path | None = None, timeout_s: float = 4.0) -> str:
    """"kvm" if a KVM guest boots the bundle's kernel to its init within ``timeout_s``, else "tcg"."""
    forced = os.environ.get("PODVISOR_ACCEL", "").strip().lower()
    if forced in ("kvm", "tcg"):
        return forced
    if not os.access("/dev/kvm", os.R_OK | os.W_OK) or shutil.which(QEMU_BINARY) is None:
        return "tcg"
    key = f"{bundle.manifest['files']['kernel']['sha256']}|{qemu_version()}"
    cached = _read_cache(cache_file, key)
    if cached:
        return cached
    accel = "kvm" if await _boot_probe(bundle, "kvm", timeout_s) else "tcg"
    if cache_file is not None:
        _write_cache(cache_file, key, accel)
    return accel


def _read_cache(cache_file: Path | None, key: str) -> str | None:
    if cache_file is None:
        return None
    with contextlib.suppress(OSError, ValueError, KeyError):
        cached = json.loads(cache_file.read_text())
        if cached.get("key") == key and cached.get("accel") in ("kvm", "tcg"):
            return str(cached["accel"])
    return None


def _write_cache(cache_file: Path, key: str, accel: str) -> None:
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=cache_file.parent, delete=False) as f:
        json.dump({"key": key, "accel": accel, "probedAt": time.time()}, f)
    os.replace(f.name, cache_file)
