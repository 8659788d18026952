"""`podvisor bench vm`: how long from "create this VM" to a container's first output, and what a VM costs.

Ours: an in-process hostd on a scratch data dir; ``POST /vms`` (powerOn) with a busybox image disk and a
hostd-made ephemeral disk, then through the agent relay CreateContainer + StartContainer of
``echo``, until the first log line arrives. Twice per run: cold (kernel boot) and templated (restored
from the layout's template, built once before the timed runs). Split into hostd's boot record (bundle
verify, QEMU start, kernel boot or restore, init, agent ready, sandbox setup) and container start; RSS
beyond guest RAM is read from QEMU's smaps while the container runs.

Baseline, in the same run and interleaved with ours so machine load hits both alike: a bare
``qemu-system-x86_64`` microvm booting the same kernel, with the same command line, memory and TCG
translation cache size, into the bundle's probe initramfs, whose /init prints one line - timed from
spawn to that line.

The machine is shared, so wall-clock times wander by a tenth either way; the CPU time QEMU spent up to
the same points (all its threads) is printed alongside as the steadier measure of the work done.

ratio = median(templated) / median(bare) - the path every pod after the first of its layout takes;
ratio_cold = median(cold) / median(bare). Goals: templated at most 0.5x, cold within 1.3x, host memory
beyond guest RAM under 32 MiB.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from podvisor.bench.report import print_table

__all__ = ["HELP", "add_arguments", "run"]

HELP = "VM create -> container first output, against a bare QEMU boot of the same kernel (ratio)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", type=int, default=5, help="pod VMs (and bare boots) to time (default 5)")
    parser.add_argument("--memory-mib", type=int, default=256, help="guest memory of every VM (default 256)")
    parser.add_argument("--crx-dir", type=Path, default=None, help="CRX home (default: as `podvisor crx build`)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    return asyncio.run(_run(args))


def _qemu_cpu_ms(pid: int) -> float:
    """CPU time (ms) all of a process's threads have used so far; NaN if it is gone."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return float("nan")
    return total / 1e6


async def _bare_boot(bundle_dir: Path, cmdline: str, memory_mib: int, accel: str, tb_size_mib: int) -> tuple[float, float]:
    """(seconds, QEMU CPU ms) from spawning a bare QEMU to its /init's line."""
    from podvisor.crx.accel import PROBE_MARKER
    from podvisor.crx.qemu import QEMU_BINARY

    argv = [QEMU_BINARY, "-machine", "microvm,acpi=on,x-option-roms=off", "-accel",
            f"tcg,tb-size={tb_size_mib}" if accel == "tcg" else "kvm", "-cpu", "max" if accel == "tcg" else "host",
            "-m", f"{memory_mib}M", "-smp", "1", "-nodefaults", "-no-user-config", "-display", "none",
            "-no-reboot", "-serial", "stdio", "-kernel", str(bundle_dir / "kernel"),
            "-initrd", str(bundle_dir / "probe.cpio"), "-append", cmdline]
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    took = cpu = float("nan")
    try:
        async with asyncio.timeout(60):
            assert proc.stdout is not None
            async for line in proc.stdout:
                if PROBE_MARKER in line:
                    took = time.monotonic() - started
                    cpu = _qemu_cpu_ms(proc.pid)
                    break
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
    return took, cpu


async def _pod_vm(client: Any, name: str, image: Path, memory_mib: int, mode: str) -> dict[str, Any]:
    started = time.monotonic()
    vm = await client.create_vm({
        "id": name, "vcpus": 1, "memoryMiB": memory_mib,
        "disks": [{"id": "img0", "kind": "image", "path": str(image)},
                  {"id": "ephemeral", "kind": "ephemeral", "sizeBytes": 256 << 20}],
    }, power_on=True, start_mode=mode)
    powered = time.monotonic()
    agent = await client.agent(name)
    try:
        await agent.create_container({"containerId": "c1", "image": "img0", "args": ["echo", "ready"],
                                      "logPath": "logs/c1/0.log"})
        log = await agent.read_log(container_id="c1", follow=True)
        await agent.start_container("c1")
        async for _fd, _data in log:
            break
        first_output = time.monotonic()
        info = await client.get_vm(name)
        cpu = _qemu_cpu_ms(int(info.get("qemuPid") or 0)) if info.get("qemuPid") else float("nan")
        memory = info.get("hostMemory", {})
    finally:
        await agent.close()
    return {"total": first_output - started, "powerOn": powered - started, "container": first_output - powered,
            "boot": vm.get("boot", {}), "memory": memory, "startMode": vm.get("startMode", "cold"), "cpuMs": cpu}


def _median(values: list[float]) -> float:
    clean = [v for v in values if v == v]
    return statistics.median(clean) if clean else float("nan")


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    from podvisor.crx.accel import tcg_kernel_args
    from podvisor.crx.bundle import BundleError, crx_home, load_public_key, verify_bundle
    from podvisor.disks import make_busybox_image
    from podvisor.hostd.client import HostdClient
    from podvisor.hostd.component import HostdComponent

    crx_dir = args.crx_dir or crx_home()
    try:
        bundle = verify_bundle(crx_dir / "bundle", public_key=load_public_key(crx_dir / "keys"))
    except BundleError as exc:
        raise SystemExit(f"podvisor bench vm: {exc}") from exc
    runs = max(1, args.runs)
    scratch = Path(tempfile.mkdtemp(prefix="pv-bench-vm-"))
    hostd = HostdComponent(scratch / "data", host_name="bench", crx_dir=crx_dir)
    bare: list[float] = []
    bare_cpu: list[float] = []
    cold: list[dict[str, Any]] = []
    warm: list[dict[str, Any]] = []
    try:
        image = await make_busybox_image(scratch / "busybox.img")
        await hostd.start()
        accel = await hostd.runtime.accel()
        tb_size = hostd.runtime.ctx.tb_size_mib
        cmdline = bundle.cmdline + (" " + tcg_kernel_args() if accel == "tcg" else "")
        async with HostdClient.from_data_dir(scratch / "data") as client:
            # one warm-up of each (page cache, QEMU binary), the template, then interleaved timed runs
            await _bare_boot(bundle.dir, cmdline, args.memory_mib, accel, tb_size)
            await _pod_vm(client, "warmup", image, args.memory_mib, "cold")
            await client.destroy_vm("warmup")
            await client.build_template({"vcpus": 1, "memoryMiB": args.memory_mib, "nics": 0,
                                         "disks": [{"kind": "image", "readOnly": True},
                                                   {"kind": "ephemeral", "readOnly": False}]})
            for i in range(runs):
                took, cpu = await _bare_boot(bundle.dir, cmdline, args.memory_mib, accel, tb_size)
                bare.append(took)
                bare_cpu.append(cpu)
                cold.append(await _pod_vm(client, f"cold-{i}", image, args.memory_mib, "cold"))
                await client.destroy_vm(f"cold-{i}")
                warm.append(await _pod_vm(client, f"warm-{i}", image, args.memory_mib, "template"))
                await client.destroy_vm(f"warm-{i}")
    finally:
        with contextlib.suppress(Exception):
            await hostd.stop()
        shutil.rmtree(scratch, ignore_errors=True)

    bare_s = _median(bare)
    cold_s = _median([r["total"] for r in cold])
    warm_s = _median([r["total"] for r in warm])

    def phase(runs_: list[dict[str, Any]], key: str) -> float:
        return _median([float(r["boot"].get(key, float("nan"))) for r in runs_])

    def col(key: str) -> tuple[float, float]:
        return phase(cold, key), phase(warm, key)

    def api(runs_: list[dict[str, Any]]) -> float:
        return _median([(r["powerOn"] * 1000 - float(r["boot"].get("totalMs", 0))) for r in runs_])

    def memory(runs_: list[dict[str, Any]], key: str) -> float:
        return _median([r["memory"].get(key, float("nan")) / 2**20 for r in runs_])

    bare_cpu_ms = _median(bare_cpu)
    cold_cpu_ms = _median([float(r["cpuMs"]) for r in cold])
    warm_cpu_ms = _median([float(r["cpuMs"]) for r in warm])
    rows: list[tuple[Any, ...]] = [
        ("bare QEMU boot to /init (baseline)", bare_s * 1000, "", ""),
        ("pod VM: create -> first output", cold_s * 1000, warm_s * 1000, ""),
        ("  ratio to the bare boot", cold_s / bare_s, warm_s / bare_s, ""),
        ("QEMU CPU time: bare boot to /init", bare_cpu_ms, "", ""),
        ("  pod VM to first output (ratio)", cold_cpu_ms / bare_cpu_ms, warm_cpu_ms / bare_cpu_ms, ""),
    ]
    for label, key in (("  bundle verify (parallel to QEMU start)", "verifyMs"), ("  QEMU start", "qemuStartMs"),
                       ("  kernel boot", "kernelBootMs"), ("  restore from template", "restoreMs"),
                       ("  init (modules, mounts)", "initMs"), ("  agent ready (handshake)", "agentReadyMs"),
                       ("  sandbox setup (disks, NICs)", "sandboxSetupMs")):
        c, w = col(key)
        rows.append((label, c, w, ""))
    rows.append(("  API, disks, relay", api(cold), api(warm), ""))
    rows.append(("  container start -> first output", _median([r["container"] * 1000 for r in cold]),
                 _median([r["container"] * 1000 for r in warm]), ""))
    rows = [tuple("" if isinstance(c, float) and c != c else c for c in row) for row in rows]
    tcg = f", tb-size {tb_size} MiB" if accel == "tcg" else ""
    print_table(f"bench vm: {runs} run(s) each, {accel}{tcg}, {args.memory_mib} MiB guest (ms)",
                ("phase", "cold", "templated", ""), rows)
    print_table("host memory per VM beyond guest RAM (MiB)", ("measure", "cold", "templated"), [
        ("RSS beyond the guest RAM mapping", memory(cold, "beyondGuestBytes"), memory(warm, "beyondGuestBytes")),
        ("  of which anonymous (private to this VM)", memory(cold, "anonymousBeyondGuestBytes"),
         memory(warm, "anonymousBeyondGuestBytes")),
    ])
    return {
        "ratio": warm_s / bare_s,
        "ratio_meaning": "templated pod VM create->container first output / bare QEMU boot of the same kernel to /init",
        "ratio_cold": cold_s / bare_s,
        "cpu_ratio_cold": cold_cpu_ms / bare_cpu_ms,
        "cpu_ratio": warm_cpu_ms / bare_cpu_ms,
        "qemu_cpu_ms": {"bare": bare_cpu_ms, "cold": cold_cpu_ms, "templated": warm_cpu_ms},
        "bare_boot_s": bare_s,
        "pod_vm_templated_s": warm_s,
        "pod_vm_cold_s": cold_s,
        "phases_ms": {"cold": {k: phase(cold, k) for k in ("verifyMs", "qemuStartMs", "kernelBootMs", "initMs",
                                                            "agentReadyMs", "sandboxSetupMs")}
                      | {"containerStartMs": _median([r["container"] * 1000 for r in cold])},
                      "templated": {k: phase(warm, k) for k in ("verifyMs", "qemuStartMs", "restoreMs",
                                                                 "agentReadyMs", "sandboxSetupMs")}
                      | {"containerStartMs": _median([r["container"] * 1000 for r in warm])}},
        "rss_beyond_guest_mib": {"cold": memory(cold, "beyondGuestBytes"), "templated": memory(warm, "beyondGuestBytes")},
        "anon_beyond_guest_mib": {"cold": memory(cold, "anonymousBeyondGuestBytes"),
                                  "templated": memory(warm, "anonymousBeyondGuestBytes")},
        "accel": accel,
        "tb_size_mib": tb_size if accel == "tcg" else None,
        "runs": runs,
    }
