"""`podvisor bench pods`: N pods created at once through the API, timed from create to Running and Ready.

What a user waits for is the time between ``kubectl apply`` and a Running pod, so that is what is timed:
the bench creates N pods concurrently in a scratch namespace of the running server (found through the
kubeconfig, as kubectl finds it), follows them with one watch and stamps each pod's first Running and
first Ready with the client's monotonic clock. Kubernetes' own timestamps are whole seconds, too coarse
for a split of a few seconds, so the split is built from finer marks of the same run, all on the wall
clock of this machine:

- the pod's events: their names carry the nanoseconds at which they were recorded (client-go's
  ``<object>.<hex UnixNano>``, which our recorder follows) — Scheduled, Pulling, Pulled, Created, Started;
- hostd's record of the pod's VM when the data dir is at hand (``createdAt``/``startedAt`` and its boot
  phases: QEMU start, kernel boot or template restore, init, agent ready, sandbox setup).

The split is contiguous, so its parts add up to create→Running: schedule (create → Scheduled), image
(Scheduled → Pulled: the node sees the binding and has the image), VM boot (Pulled → VM ready; without
hostd, → Created), container start (→ Started) and status report (Started → Running seen by the watch).

Baseline, in the same run and between the rounds so machine load hits both alike: the bare
``qemu-system-x86_64`` boot of `podvisor bench vm` (same kernel, command line and guest memory, to the
probe initramfs' first line). ``ratio = p99(create→Running) / median(bare boot)``; the goal is at most
1.5 at N=1. Pods per minute is N over (first create → last Running), summed over rounds. A warm-up pod
runs first (not counted) so the image is cached and hostd's VM template for the pod layout exists, as on
a host that has run pods before.
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
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from podvisor.bench.report import Progress, print_table
from podvisor.client import APIClient, APIStatusError, Gone, NotFound, Res, load_kubeconfig

__all__ = ["HELP", "add_arguments", "run", "PodTimes"]

HELP = "N pods created at once: create -> Running/Ready p50/p99 split into phases, against a bare VM boot (ratio)"

PODS = Res("", "v1", "pods", kind="Pod")
EVENTS = Res("", "v1", "events", kind="Event")
NODES = Res("", "v1", "nodes", namespaced=False, kind="Node")
NAMESPACES = Res("", "v1", "namespaces", namespaced=False, kind="Namespace")
CONFIGMAPS = Res("", "v1", "configmaps", kind="ConfigMap")

GOAL_RATIO = 1.5
ROUND_LABEL = "podvisor.io/bench-round"
BOOT_PHASES = (("verifyMs", "bundle verify (parallel to QEMU start)"), ("qemuStartMs", "QEMU start"), ("kernelBootMs", "kernel boot"),
               ("restoreMs", "restore from template"), ("initMs", "init"), ("agentReadyMs", "agent ready"),
               ("sandboxSetupMs", "sandbox setup"))
SEGMENTS = (("schedule", "schedule (create -> Scheduled)"), ("image", "image (Scheduled -> Pulled)"),
            ("vm_boot", "VM boot (Pulled -> VM ready)"), ("container_start", "container start (VM ready -> Started)"),
            ("status_report", "status report (Started -> Running seen)"))
_FAILING = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull", "CrashLoopBackOff",
                      "CreateContainerError", "CreateContainerConfigError", "RunContainerError"})


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kubeconfig", type=Path, default=None, help="default: $KUBECONFIG, else the data dir's")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="the server's data dir (default: the kubeconfig's directory if it is one); gives hostd's "
                        "boot record and the registry credential")
    p.add_argument("-n", "--n", type=int, default=1, help="pods created at once per round (default 1)")
    p.add_argument("--repeat", type=int, default=1, help="rounds; pods are deleted after each (default 1)")
    p.add_argument("--warmup", type=int, default=1, help="pods run (and not counted) before the rounds (default 1)")
    p.add_argument("--bare-runs", type=int, default=3, help="bare VM boots for the baseline (default 3)")
    p.add_argument("--image", default="", help="image of the pods (default: busybox-static pushed to the embedded registry)")
    p.add_argument("--readiness-probe", action="store_true", help="give each pod an exec readiness probe (period 1s)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds a round may take to be Ready (default 300)")
    p.add_argument("--crx-dir", type=Path, default=None, help="CRX home (default: as `podvisor crx build`)")


@dataclass
class PodTimes:
    """One pod's marks: client monotonic stamps, and wall-clock marks from events and hostd."""

    name: str
    uid: str = ""
    node: str = ""
    create_wall: float = 0.0
    create_mono: float = 0.0
    running_mono: float | None = None
    ready_mono: float | None = None
    events: dict[str, float] = field(default_factory=dict)     # reason -> first wall time
    vm_created: float | None = None
    vm_ready: float | None = None
    boot_ms: dict[str, float] = field(default_factory=dict)
    start_mode: str = ""
    memory_mib: int = 0

    def wall(self, mono: float | None) -> float | None:
        return None if mono is None else self.create_wall + (mono - self.create_mono)

    @property
    def to_running(self) -> float | None:
        return None if self.running_mono is None else self.running_mono - self.create_mono

    @property
    def to_ready(self) -> float | None:
        return None if self.ready_mono is None else self.ready_mono - self.create_mono

    def segments(self) -> dict[str, float | None]:
        """Seconds per contiguous phase (None where a mark is missing), plus sub-phases."""
        ev = self.events
        vm_ready = self.vm_ready if self.vm_ready is not None else ev.get("Created")
        marks = [self.create_wall, ev.get("Scheduled"), ev.get("Pulled"), vm_ready, ev.get("Started"),
                 self.wall(self.running_mono)]
        out: dict[str, float | None] = {}
        for (key, _), a, b in zip(SEGMENTS, marks, marks[1:], strict=False):
            out[key] = None if a is None or b is None else max(0.0, b - a)
        out["pull"] = _diff(ev.get("Pulling"), ev.get("Pulled"))
        out["to_hostd"] = _diff(ev.get("Pulled"), self.vm_created)
        out["running_to_ready"] = _diff(self.running_mono, self.ready_mono)
        return out


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else max(0.0, b - a)


def _pct(values: list[float], q: float) -> float:
    xs = sorted(values)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def _parse_time(text: str) -> float | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except (ValueError, AttributeError):
        return None


def event_time(ev: dict[str, Any]) -> float | None:
    """When an event was recorded, as finely as it says: ``eventTime`` (microseconds), else the
    nanoseconds in its name when they agree with ``firstTimestamp``, else ``firstTimestamp`` (seconds)."""
    if ev.get("eventTime"):
        t = _parse_time(str(ev["eventTime"]))
        if t is not None:
            return t
    first = _parse_time(str(ev.get("firstTimestamp") or (ev.get("metadata") or {}).get("creationTimestamp") or ""))
    suffix = str((ev.get("metadata") or {}).get("name", "")).rpartition(".")[2]
    with contextlib.suppress(ValueError):
        t = int(suffix, 16) / 1e9
        if first is None or -2.0 <= t - first <= 2.0:
            return t
    return first


# ---- the run ------------------------------------------------------------------------------------------


@dataclass
class _Env:
    api: APIClient
    namespace: str
    image: str
    probe: bool
    timeout: float
    hostd: Any = None          # a HostdClient of the local host, or None


def _kubeconfig_path(args: argparse.Namespace) -> Path:
    if args.kubeconfig is not None:
        return Path(args.kubeconfig)
    if os.environ.get("KUBECONFIG"):
        return Path(os.environ["KUBECONFIG"].split(os.pathsep)[0])
    from podvisor.paths import default_data_dir

    return (args.data_dir or default_data_dir()) / "kubeconfig"


def _data_dir(args: argparse.Namespace, kubeconfig: Path) -> Path | None:
    if args.data_dir is not None:
        return Path(args.data_dir)
    return kubeconfig.parent if (kubeconfig.parent / "status.json").exists() else None


def _pod_body(name: str, image: str, round_id: str, probe: bool) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "c", "image": image, "command": ["sleep", "3600"],
                                 "imagePullPolicy": "IfNotPresent"}
    if probe:
        container["readinessProbe"] = {"exec": {"command": ["true"]}, "periodSeconds": 1}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {ROUND_LABEL: round_id}},
            "spec": {"containers": [container], "terminationGracePeriodSeconds": 2}}


def _check_failing(obj: dict[str, Any]) -> str:
    status = obj.get("status") or {}
    if status.get("phase") in ("Failed", "Succeeded"):
        return f"phase {status['phase']} ({status.get('reason', '')}: {status.get('message', '')})"
    for cs in status.get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in _FAILING:
            return f"container {cs.get('name')}: {waiting['reason']}: {waiting.get('message', '')}"
    return ""


def _is_ready(obj: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (obj.get("status") or {}).get("conditions") or [])


async def _follow(env: _Env, selector: str, pods: dict[str, PodTimes], done: asyncio.Event,
                  failures: list[str], progress: Progress | None) -> None:
    """Stamp first Running and first Ready of every pod from one watch (relisting when it ends)."""

    def observe(obj: dict[str, Any]) -> None:
        md = obj.get("metadata") or {}
        pt = pods.get(str(md.get("name", "")))
        if pt is None:
            return
        now = time.monotonic()
        pt.uid = str(md.get("uid", "")) or pt.uid
        pt.node = str((obj.get("spec") or {}).get("nodeName") or pt.node)
        if pt.running_mono is None and (obj.get("status") or {}).get("phase") == "Running":
            pt.running_mono = now
        if pt.ready_mono is None and _is_ready(obj):
            pt.ready_mono = now
            if progress is not None:
                progress.advance()
        why = _check_failing(obj)
        if why:
            failures.append(f"pod {pt.name}: {why}")
        if failures or all(p.ready_mono is not None for p in pods.values()):
            done.set()

    rv = ""
    while not done.is_set():
        if not rv:
            items, rv = await env.api.list_all(PODS, env.namespace, label_selector=selector)
            for item in items:
                observe(item)
        try:
            async for ev in env.api.watch(PODS, env.namespace, resource_version=rv, label_selector=selector,
                                          timeout_seconds=int(env.timeout) + 30):
                obj = ev.get("object") or {}
                if ev.get("type") == "ERROR":
                    rv = ""
                    break
                rv = str((obj.get("metadata") or {}).get("resourceVersion") or rv)
                if ev.get("type") in ("ADDED", "MODIFIED"):
                    observe(obj)
                if done.is_set():
                    return
        except Gone:
            rv = ""


async def _collect_events(env: _Env, pods: dict[str, PodTimes]) -> None:
    """Every pod's first time per event reason; waits (a little) for the Started events, which the
    node agent records in the background."""
    by_uid = {p.uid: p for p in pods.values()}
    deadline = time.monotonic() + 10
    while True:
        items, _ = await env.api.list_all(EVENTS, env.namespace)
        for ev in items:
            pt = by_uid.get(str((ev.get("involvedObject") or {}).get("uid", "")))
            t = event_time(ev)
            if pt is None or t is None:
                continue
            reason = str(ev.get("reason", ""))
            if reason not in pt.events or t < pt.events[reason]:
                pt.events[reason] = t
        if all("Started" in p.events for p in pods.values()) or time.monotonic() > deadline:
            return
        await asyncio.sleep(0.25)


async def _collect_vms(env: _Env, pods: dict[str, PodTimes]) -> None:
    if env.hostd is None:
        return
    by_uid = {p.uid: p for p in pods.values()}
    try:
        vms = await env.hostd.list_vms()
    except Exception:   # hostd's detail is a bonus: the split falls back to the events
        return
    for vm in vms:
        pt = by_uid.get(str((vm.get("labels") or {}).get("podvisor.io/pod-uid", "")))
        if pt is None:
            continue
        pt.vm_created = float(vm["createdAt"]) if vm.get("createdAt") else None
        pt.vm_ready = float(vm["startedAt"]) if vm.get("startedAt") else None
        pt.boot_ms = {k: float(v) for k, v in (vm.get("boot") or {}).items() if isinstance(v, int | float)}
        pt.start_mode = str(vm.get("startMode") or "")
        pt.memory_mib = int(vm.get("memoryMiB") or 0)


async def _delete_all(env: _Env, selector: str, *, within: float = 180.0) -> None:
    """Delete the round's pods gracefully and wait until they are gone (VMs destroyed by then)."""
    items, _ = await env.api.list_all(PODS, env.namespace, label_selector=selector)
    for item in items:
        with contextlib.suppress(NotFound):
            await env.api.delete(PODS, item["metadata"]["name"], env.namespace)
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        items, _ = await env.api.list_all(PODS, env.namespace, label_selector=selector)
        if not items:
            return
        await asyncio.sleep(0.3)
    raise RuntimeError(f"pods {[i['metadata']['name'] for i in items]} still there {within:.0f}s after delete")


async def _round(env: _Env, n: int, tag: str, progress: Progress | None) -> list[PodTimes]:
    round_id = f"{tag}-{uuid.uuid4().hex[:6]}"
    selector = f"{ROUND_LABEL}={round_id}"
    pods = {f"{round_id}-{i}": PodTimes(f"{round_id}-{i}") for i in range(n)}
    done = asyncio.Event()
    failures: list[str] = []
    follower = asyncio.create_task(_follow(env, selector, pods, done, failures, progress))

    async def create(pt: PodTimes) -> None:
        pt.create_wall, pt.create_mono = time.time(), time.monotonic()
        made = await env.api.create(PODS, _pod_body(pt.name, env.image, round_id, env.probe), env.namespace)
        pt.uid = str(made["metadata"]["uid"])

    try:
        await asyncio.gather(*(create(pt) for pt in pods.values()))
        waiter = asyncio.create_task(done.wait())
        await asyncio.wait({waiter, follower}, timeout=env.timeout, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if follower.done() and follower.exception() is not None:
            raise RuntimeError(f"watching the pods failed: {follower.exception()}")
        if failures:
            raise RuntimeError("; ".join(failures[:4]))
        late = [p.name for p in pods.values() if p.ready_mono is None]
        if late:
            raise RuntimeError(f"{len(late)} pod(s) not Ready after {env.timeout:.0f}s: {', '.join(late[:4])}"
                               f"{await _warnings(env)}")
        await _collect_events(env, pods)
        await _collect_vms(env, pods)
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await follower
        await _delete_all(env, selector)
    return list(pods.values())


async def _warnings(env: _Env) -> str:
    with contextlib.suppress(Exception):
        items, _ = await env.api.list_all(EVENTS, env.namespace)
        lines = sorted({f"{e.get('reason')}: {e.get('message')}" for e in items if e.get("type") == "Warning"})
        if lines:
            return "; warnings: " + " | ".join(lines[:3])
    return ""


async def _wait_template(env: _Env, pod: PodTimes, *, within: float = 120.0) -> bool:
    """After the warm-up pod: if its VM booted cold, wait until hostd has built a template of its size
    (hostd builds one in the background after a layout's first cold boot; a build running during a
    round would skew it, and the rounds would boot cold)."""
    if env.hostd is None or not pod.memory_mib:
        return False
    if pod.start_mode == "template":
        return True
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            for t in await env.hostd.list_templates():
                if (int((t.get("layout") or {}).get("memoryMiB", 0)) == pod.memory_mib
                        and float(t.get("builtAt") or 0) >= pod.create_wall):
                    return True
        await asyncio.sleep(0.5)
    return False


# ---- image and baseline --------------------------------------------------------------------------------


async def _registry_address(api: APIClient, data_dir: Path | None) -> str:
    import yaml

    with contextlib.suppress(NotFound):
        cm = await api.get(CONFIGMAPS, "local-registry-hosting", "kube-public")
        host = (yaml.safe_load((cm.get("data") or {}).get("localRegistryHosting.v1", "")) or {}).get("host")
        if host:
            return str(host)
    if data_dir is not None:
        from podvisor.images.local import local_registry_address

        return local_registry_address(data_dir) or ""
    return ""


async def _push_busybox(api: APIClient, data_dir: Path | None) -> str:
    """Push a one-layer busybox-static image to the embedded registry; its reference."""
    from podvisor.images.local import docker_config_keychain, local_keychain
    from podvisor.images.push import push_image
    from podvisor.images.reference import parse_reference
    from podvisor.images.sources import ImageSettings, load_source

    registry = await _registry_address(api, data_dir)
    busybox = shutil.which("busybox")
    if not registry or not busybox:
        raise SystemExit("podvisor bench pods: no embedded registry or no busybox on this machine; give --image")
    target = parse_reference(f"{registry}/default/pv-bench-busybox:1")
    keychain = docker_config_keychain()
    if data_dir is not None:
        keychain = local_keychain(data_dir).merged(keychain)

    def build(scratch: Path) -> Any:
        root = scratch / "rootfs"
        (root / "bin").mkdir(parents=True)
        (root / "tmp").mkdir(mode=0o1777)
        shutil.copy2(busybox, root / "bin" / "busybox")
        for applet in ("sh", "sleep", "true"):
            (root / "bin" / applet).symlink_to("busybox")
        (scratch / "work").mkdir()
        return load_source(root, scratch / "work", ImageSettings(cmd=["/bin/sh"]))

    with tempfile.TemporaryDirectory(prefix="pv-bench-pods-") as scratch:
        image = await asyncio.to_thread(build, Path(scratch))
        await push_image(image, target, credential=keychain.get(target.registry))
    return str(target)


async def _baseline(args: argparse.Namespace, accel: str) -> Any:
    """A function that times one bare boot (the `bench vm` baseline) for a given guest memory:
    (seconds, QEMU CPU ms), with the translation cache size hostd gives pod VMs."""
    from podvisor.bench.vm import _bare_boot  # the same measurement as `podvisor bench vm`
    from podvisor.crx.accel import tcg_kernel_args
    from podvisor.crx.bundle import BundleError, crx_home, load_public_key, verify_bundle
    from podvisor.crx.qemu import DEFAULT_TB_MIB

    crx_dir = args.crx_dir or crx_home()
    try:
        bundle = verify_bundle(crx_dir / "bundle", public_key=load_public_key(crx_dir / "keys"))
    except BundleError as exc:
        raise SystemExit(f"podvisor bench pods: {exc}") from exc
    cmdline = bundle.cmdline + (" " + tcg_kernel_args() if accel == "tcg" else "")
    tb_size = int(os.environ.get("PODVISOR_TCG_TB_MIB", "") or DEFAULT_TB_MIB)   # as hostd sizes it

    async def boot(memory_mib: int) -> tuple[float, float]:
        took, cpu_ms = await _bare_boot(bundle.dir, cmdline, memory_mib, accel, tb_size)
        return float(took), float(cpu_ms)

    return boot


async def _open_hostd(data_dir: Path | None) -> Any:
    if data_dir is None:
        return None
    try:
        from podvisor.hostd.client import HostdClient

        client = HostdClient.from_data_dir(data_dir)
        await client.host()
        return client
    except Exception:  # not this machine's data dir, or not allowed to read hostd's secret
        return None


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    from podvisor.spherelet.sizing import DEFAULT_MEMORY_MIB

    kubeconfig = _kubeconfig_path(args)
    data_dir = _data_dir(args, kubeconfig)
    n, repeat = max(1, args.n), max(1, args.repeat)
    namespace = f"pv-bench-{uuid.uuid4().hex[:6]}"
    async with APIClient(load_kubeconfig(kubeconfig, user_agent="podvisor-bench")) as api:
        image = args.image or await _push_busybox(api, data_dir)
        await api.create(NAMESPACES, {"metadata": {"name": namespace}})
        env = _Env(api, namespace, image, args.readiness_probe, args.timeout, await _open_hostd(data_dir))
        bare: list[tuple[float, float]] = []
        rounds: list[list[PodTimes]] = []
        warm: list[PodTimes] = []
        try:
            for _ in range(60):   # the namespace's default ServiceAccount comes from a controller
                with contextlib.suppress(NotFound):
                    await api.get(Res("", "v1", "serviceaccounts"), "default", namespace)
                    break
                await asyncio.sleep(0.2)
            if args.warmup > 0:
                print(f"warm-up: {args.warmup} pod(s), not counted", flush=True)
                warm = await _round(env, args.warmup, "warmup", None)
                await _wait_template(env, warm[0])
            node = (await api.get(NODES, warm[0].node) if warm and warm[0].node
                    else ((await api.list(NODES)).get("items") or [{}])[0])
            accel = str(((node.get("metadata") or {}).get("annotations") or {}).get("podvisor.io/accel") or "tcg")
            cpus = str(((node.get("status") or {}).get("capacity") or {}).get("cpu", os.cpu_count()))
            memory_mib = (warm[0].memory_mib if warm and warm[0].memory_mib else DEFAULT_MEMORY_MIB)
            boot = await _baseline(args, accel)
            await boot(memory_mib)      # warm-up: page cache, QEMU binary
            progress = Progress("bench pods", n * repeat)
            for r in range(repeat):
                if r < args.bare_runs:
                    bare.append(await boot(memory_mib))
                rounds.append(await _round(env, n, f"r{r}", progress))
            while len(bare) < max(1, args.bare_runs):
                bare.append(await boot(memory_mib))
        except (RuntimeError, APIStatusError) as exc:
            raise SystemExit(f"podvisor bench pods: {exc}") from exc
        finally:
            with contextlib.suppress(Exception):
                await api.delete(NAMESPACES, namespace)
            if env.hostd is not None:
                await env.hostd.close()
    return _report(args, n=n, rounds=rounds, warm=warm, bare_runs=bare, accel=accel, cpus=cpus, memory_mib=memory_mib,
                   hostd=env.hostd is not None)


def run(args: argparse.Namespace) -> dict[str, Any]:
    return asyncio.run(_run(args))


# ---- the report -----------------------------------------------------------------------------------------


def _stats(values: Sequence[float | None]) -> dict[str, float]:
    xs = [v for v in values if v is not None and v == v]
    if not xs:
        return {}
    return {"p50_ms": round(statistics.median(xs) * 1000, 1), "p99_ms": round(_pct(xs, 0.99) * 1000, 1)}


def _report(args: argparse.Namespace, *, n: int, rounds: list[list[PodTimes]], warm: list[PodTimes],
            bare_runs: list[tuple[float, float]], accel: str, cpus: str, memory_mib: int, hostd: bool) -> dict[str, Any]:
    pods = [p for r in rounds for p in r]
    running = [p.to_running for p in pods if p.to_running is not None]
    ready = [p.to_ready for p in pods if p.to_ready is not None]
    bare = [b for b, _ in bare_runs if b == b]
    bare_cpu = [c for _, c in bare_runs if c == c]
    bare_s = statistics.median(bare) if bare else float("nan")
    run_p99 = _pct(running, 0.99)
    segs = [p.segments() for p in pods]
    phases = {key: _stats([s[key] for s in segs]) for key, _ in SEGMENTS}
    for key in ("pull", "to_hostd", "running_to_ready"):
        phases[key] = _stats([s[key] for s in segs])
    boot = {key: _stats([p.boot_ms[key] / 1000 if key in p.boot_ms else None for p in pods]) for key, _ in BOOT_PHASES}
    spans = []
    for r in rounds:
        ends = [p.wall(p.running_mono) for p in r]
        spans.append(max(e for e in ends if e is not None) - min(p.create_wall for p in r))
    per_min = [len(r) / s * 60 if s > 0 else 0.0 for r, s in zip(rounds, spans, strict=True)]
    sustained = len(pods) / sum(spans) * 60 if sum(spans) > 0 else 0.0
    def row(label: str, st: dict[str, float]) -> tuple[Any, ...]:
        return (label, st.get("p50_ms", ""), st.get("p99_ms", ""))

    rows: list[tuple[Any, ...]] = [("bare QEMU boot to /init (baseline, median)", bare_s * 1000, ""),
                                   row("create -> Running", _stats(running)),
                                   row("create -> Ready", _stats(ready))]
    for key, label in SEGMENTS:
        if not hostd:   # without hostd's record the VM is ready when the node agent creates the container
            label = label.replace("-> VM ready", "-> Created").replace("(VM ready ->", "(Created ->")
        rows.append(row("  " + label, phases[key]))
        if key == "image" and phases["pull"]:
            rows.append(row("    of which pull (Pulling -> Pulled)", phases["pull"]))
        if key == "vm_boot" and hostd:
            rows.append(row("    network, VM request (Pulled -> VM created)", phases["to_hostd"]))
            rows += [row(f"    hostd: {label_}", boot[k]) for k, label_ in BOOT_PHASES if boot[k]]
    rows.append(row("Running -> Ready", phases["running_to_ready"]))
    print_table(f"bench pods: {n} pod(s) at once x {len(rounds)} round(s), {accel}, {cpus} host CPUs, "
                f"{memory_mib} MiB guests (ms)", ("measure", "p50", "p99"), rows)
    print_table("rounds", ("round", "pods", "first create -> last Running s", "pods/min", "VM start"),
                [(i, len(r), s, m, ", ".join(f"{k} {v}" for k, v in sorted(_modes(r).items())))
                 for i, (r, s, m) in enumerate(zip(rounds, spans, per_min, strict=True))])
    ratio = run_p99 / bare_s if bare_s > 0 else float("nan")
    print(f"goal: p99 create->Running {run_p99:.2f}s = {ratio:.2f}x the bare boot {bare_s:.2f}s "
          f"(goal <= {GOAL_RATIO}x at N=1{'' if n == 1 else f'; this run is N={n}'}); "
          f"{sustained:.1f} pods/min on {cpus} CPUs")
    if not hostd:
        print("note: hostd not reachable (give --data-dir as root): VM boot ends at the Created event, "
              "with no boot record")
    result: dict[str, Any] = {
        "ratio": round(ratio, 4),
        "ratio_meaning": "p99 pod create->Running / median bare QEMU boot of the same kernel to /init (goal <= 1.5 at N=1)",
        "n": n, "rounds": len(rounds), "pods": len(pods), "accel": accel, "host_cpus": cpus, "memory_mib": memory_mib,
        "bare_boot_s": round(bare_s, 4), "bare_boots_s": [round(b, 4) for b in bare],
        "bare_boot_qemu_cpu_ms": round(statistics.median(bare_cpu), 1) if bare_cpu else None,
        "running_p50_s": round(statistics.median(running), 4), "running_p99_s": round(run_p99, 4),
        "ready_p50_s": round(statistics.median(ready), 4), "ready_p99_s": round(_pct(ready, 0.99), 4),
        "phases_ms": phases, "hostd_boot_ms": {k: v for k, v in boot.items() if v},
        "pods_per_minute": round(sustained, 2), "pods_per_minute_rounds": [round(m, 2) for m in per_min],
        "round_seconds": [round(s, 4) for s in spans], "vm_start_modes": _modes(pods), "goal_ratio": GOAL_RATIO,
        "goal_met": bool(n == 1 and ratio <= GOAL_RATIO), "hostd_detail": hostd,
        "readiness_probe": bool(args.readiness_probe),
    }
    if warm:
        result["warmup"] = {"pods": len(warm), "running_s": round(max(p.to_running or 0.0 for p in warm), 4),
                            "vm_start_modes": _modes(warm)}
    return result


def _modes(pods: list[PodTimes]) -> dict[str, int]:
    out: dict[str, int] = {}
    for p in pods:
        out[p.start_mode or "unknown"] = out.get(p.start_mode or "unknown", 0) + 1
    return out
