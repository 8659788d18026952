"""One pass of a pod's convergence: compare what the pod asks for with what runs, and act once.

The pass is level-triggered and idempotent, run by the pod's worker whenever anything may have
changed (the pod, a container exit, a probe verdict, a timer): admit → images → volumes planned →
network → sandbox → volumes written → init containers in order → app containers → status. Each
step either finds its work done or does it; a step that cannot finish (an image pull failing, a
missing ConfigMap, a crash-loop back-off) records why the containers wait and returns the delay
after which the pass should run again. Nothing here sleeps.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from podvisor.images.errors import ImageError
from podvisor.images.service import pulled_message
from podvisor.spherelet.admission import REFUSED_REASON, host_access_violations, refusal_message
from podvisor.spherelet.backoff import CRASH_LOOP_BACK_OFF, format_delay
from podvisor.spherelet.containers import attempts, build_spec, hosts_file, image_disk_id
from podvisor.spherelet.context import NodeContext
from podvisor.spherelet.envvars import ConfigError, container_env, service_env
from podvisor.spherelet.handlers import run_handler
from podvisor.spherelet.podstate import PodState
from podvisor.spherelet.probes import ContainerProbes
from podvisor.spherelet.runtime import (
    ContainerInfo,
    ImageDisk,
    RuntimeFailure,
    SandboxNotFound,
    SandboxSpec,
    StartFailure,
)
from podvisor.spherelet.sizing import vm_size
from podvisor.spherelet.status import is_sidecar, rfc3339
from podvisor.spherelet.volumes import MountError, VolumePlan, atomic_ops, plan_volume, volume_dir

__all__ = ["PodSync", "sandbox_id_for", "pod_hostname", "image_holder"]

log = logging.getLogger("podvisor.spherelet.sync")



def image_holder(node_name: str, pod_uid: str) -> str:
    """The lease holder name of a pod's images: ``<node>.pod.<uid>`` (one image cache may serve several
    nodes on one machine, so the node is part of it)."""
    return f"{node_name}.pod.{pod_uid}"
_RETRY = 2.0


def _md(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    return pod.get("metadata") or {}


def sandbox_id_for(pod: Mapping[str, Any], attempt: int) -> str:
    """``pod-<ns>-<name>-<uid6>[-<attempt>]``, [a-z0-9-] and at most 63 characters."""
    md = _md(pod)
    uid = str(md.get("uid", "")).replace("-", "")[:6]
    base = f"pod-{md.get('namespace', 'default')}-{md.get('name', '')}"
    base = "".join(ch if ch.isalnum() or ch == "-" else "-" for ch in base.lower())
    suffix = f"-{uid}" + (f"-{attempt}" if attempt else "")
    return base[: 63 - len(suffix)].rstrip("-") + suffix


def pod_hostname(pod: Mapping[str, Any]) -> str:
    spec = pod.get("spec") or {}
    return str(spec.get("hostname") or _md(pod).get("name") or "pod")[:63]


def _parse_ts(text: str) -> float:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


class PodSync:
    """The sync pass for one pod; state lives in ``st`` so that passes build on each other."""

    def __init__(self, ctx: NodeContext, st: PodState, *, wake: Any) -> None:
        self.ctx, self.st = ctx, st
        self.wake = wake          # a callable that asks the worker for another pass

    def event(self, pod: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        self.ctx.recorder.emit(dict(pod), type=type_, reason=reason, message=message, kind="Pod")

    # ---- the pass --------------------------------------------------------------------------------

    async def run(self, pod: Mapping[str, Any]) -> float | None:
        """Converge once; returns the delay before the next pass is needed (None: only on events)."""
        ctx, st = self.ctx, self.st
        spec = pod.get("spec") or {}
        now = ctx.clock.now()
        if not st.start_time:
            st.start_time = str((pod.get("status") or {}).get("startTime") or rfc3339(now))
        violations = host_access_violations(pod)
        if violations:
            st.terminal = ("Failed", REFUSED_REASON, refusal_message(violations))
            self.event(pod, "Warning", REFUSED_REASON, st.terminal[2])
            return None
        deadline = spec.get("activeDeadlineSeconds")
        if isinstance(deadline, int) and deadline > 0:
            left = _parse_ts(st.start_time) + deadline - now
            if left <= 0:
                st.terminal = ("Failed", "DeadlineExceeded", "Pod was active on the node longer than the specified deadline")
                self.event(pod, "Normal", "DeadlineExceeded", st.terminal[2])
                return None
        if ctx.network_required and ctx.network is None:
            return _RETRY
        delays: list[float] = []
        if not await self._ensure_images(pod, delays):
            return min(delays, default=_RETRY)
        plans = await self._plan_volumes(pod)
        if plans is None:
            return _RETRY * 5
        if not await self._ensure_sandbox(pod):
            return _RETRY
        assert st.sandbox is not None
        try:
            await self._apply_volumes(pod, plans)
            st.containers = await ctx.runtime.list_containers(st.sandbox.id)
        except SandboxNotFound:
            # the VM is gone or off: the next pass replaces it (a new attempt, the old one destroyed)
            st.sandbox = replace(st.sandbox, state="stopped")
            return 0.0
        delay = await self._sync_containers(pod, delays)
        if isinstance(deadline, int) and deadline > 0:
            delays.append(max(0.0, _parse_ts(st.start_time) + deadline - ctx.clock.now()))
        if delay is not None:
            delays.append(delay)
        return min(delays, default=None)

    # ---- images ------------------------------------------------------------------------------------

    async def _ensure_images(self, pod: Mapping[str, Any], delays: list[float]) -> bool:
        ctx, st = self.ctx, self.st
        spec = pod.get("spec") or {}
        wanted: dict[str, tuple[str, list[str]]] = {}
        for c in list(spec.get("initContainers") or []) + list(spec.get("containers") or []):
            ref = str(c.get("image", ""))
            policy = str(c.get("imagePullPolicy") or "IfNotPresent")
            wanted.setdefault(ref, (policy, []))[1].append(str(c.get("name")))
        missing = {ref: v for ref, v in wanted.items() if ref not in st.images}
        if not missing:
            return True
        credentials = await ctx.sources.pull_keychain(pod)
        uid = st.uid
        quiet = st.sandbox is not None   # an adopted pod: its images are on the machine, nothing to tell
        assert ctx.pull_backoff is not None
        backoff = ctx.pull_backoff

        async def pull(ref: str, policy: str, names: list[str]) -> None:
            key = f"{uid}/{ref}"
            if backoff.in_backoff(key):
                for n in names:
                    st.waiting[n] = ("ImagePullBackOff", f'Back-off pulling image "{ref}"')
                self.event(pod, "Normal", "BackOff", f'Back-off pulling image "{ref}"')
                delays.append(backoff.remaining(key))
                return
            lookup = getattr(ctx.images, "lookup", None)   # a cache check, so a present image is not "pulled"
            present = policy == "IfNotPresent" and lookup is not None and lookup(ref) is not None
            if policy != "Never" and not quiet and not present:
                self.event(pod, "Normal", "Pulling", f'Pulling image "{ref}"')
            try:
                image = await ctx.images.ensure_image(ref, pull_policy=policy, credentials=credentials)
            except ImageError as exc:
                delay = backoff.failed(key)
                for n in names:
                    st.waiting[n] = (exc.reason, str(exc))
                self.event(pod, "Warning", "Failed", f'Failed to pull image "{ref}": {exc}')
                self.event(pod, "Warning", "Failed", f"Error: {exc.reason}")
                delays.append(delay)
                return
            backoff.succeeded(key)
            st.images[ref] = image
            if image.digest not in st.leased:
                ctx.images.mark_in_use(image.digest, image_holder(ctx.node_name, uid))
                st.leased.add(image.digest)
            for n in names:
                if st.waiting.get(n, ("",))[0] in ("ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull",
                                                   "InvalidImageName"):
                    st.waiting.pop(n, None)
            if (policy != "Never" or image.pulled) and not quiet:
                self.event(pod, "Normal", "Pulled", pulled_message(image, ref))

        await asyncio.gather(*(pull(ref, p, names) for ref, (p, names) in missing.items()))
        return all(ref in st.images for ref in wanted)

    # ---- volumes -----------------------------------------------------------------------------------

    async def _plan_volumes(self, pod: Mapping[str, Any]) -> list[VolumePlan] | None:
        ctx = self.ctx
        plans = []
        for v in (pod.get("spec") or {}).get("volumes") or []:
            try:
                plan = await plan_volume(pod, v, sources=ctx.sources, tokens=ctx.sources.token,
                                         pod_ip=self.st.pod_ip, host_ip=ctx.host_ip, allocatable=ctx.allocatable)
            except MountError as exc:
                self.event(pod, "Warning", "FailedMount",
                           f'MountVolume.SetUp failed for volume "{v.get("name", "")}" : {exc}')
                for c in list((pod.get("spec") or {}).get("containers") or []):
                    self.st.waiting.setdefault(str(c.get("name")), ("ContainerCreating", ""))
                return None
            for w in plan.warnings:
                self.event(pod, "Warning", "FailedMount", f'volume "{plan.name}": {w}')
            plans.append(plan)
        for n, (reason, _) in list(self.st.waiting.items()):
            if reason == "ContainerCreating":
                del self.st.waiting[n]
        return plans

    async def _apply_volumes(self, pod: Mapping[str, Any], plans: list[VolumePlan]) -> None:
        ctx, st = self.ctx, self.st
        assert st.sandbox is not None
        sid = st.sandbox.id
        for plan in plans:
            if plan.name not in st.volume_sources:
                if plan.medium == "Memory" or not plan.projected:
                    source = await ctx.runtime.prepare_volume(sid, plan.name, medium=plan.medium,
                                                              size_limit_bytes=plan.size_limit)
                else:
                    source = volume_dir(plan.name)
                st.volume_sources[plan.name] = source
            if plan.files is None:
                continue
            base = st.volume_sources[plan.name]
            prev = st.volume_payloads.get(plan.name)
            ops, version = atomic_ops(base, plan.files, previous=prev[1] if prev else None,
                                      previous_version=prev[0] if prev else "")
            if prev is not None and prev[0] == version:
                continue
            await ctx.runtime.write_files(sid, ops)
            st.volume_payloads[plan.name] = (version, list(plan.files))

    # ---- sandbox -----------------------------------------------------------------------------------

    async def _ensure_sandbox(self, pod: Mapping[str, Any]) -> bool:
        ctx, st = self.ctx, self.st
        if st.sandbox is not None and st.sandbox.state == "ready":
            if not st.pod_ip and ctx.network is not None:
                iface = await ctx.network.pod_interface(st.uid)
                st.pod_ip = iface.pod_ip if iface is not None else ""
            return True
        if st.sandbox is not None:
            self.event(pod, "Normal", "SandboxChanged", "Pod sandbox changed, it will be killed and re-created.")
            try:
                await ctx.runtime.destroy_sandbox(st.sandbox.id)
            except RuntimeFailure as exc:
                log.warning("destroy sandbox %s: %s", st.sandbox.id, exc)
                return False
            st.sandbox = None
            st.sandbox_attempt += 1
            st.volume_sources.clear()
            st.volume_payloads.clear()
        tap = net = None
        if ctx.network is not None:
            try:
                iface = await ctx.network.attach_pod(st.uid)
            except Exception as exc:  # IPAM exhausted, namespace gone: the pod waits and is retried
                self.event(pod, "Warning", "FailedCreatePodSandBox", f"Failed to create pod sandbox: network: {exc}")
                return False
            tap, net, st.pod_ip = iface.tap, iface.guest, iface.pod_ip
        size = vm_size(dict(pod), host_cpus=ctx.host_cpus)
        disks = {}
        for image in st.images.values():
            disks[image.digest] = ImageDisk(id=image_disk_id(image.digest), path=image.disk_path, fs_type=image.fs_type,
                                            digest=image.digest)
        md = _md(pod)
        hostname = pod_hostname(pod)
        spec = SandboxSpec(
            id=sandbox_id_for(pod, st.sandbox_attempt), pod_uid=st.uid, pod_namespace=str(md.get("namespace", "")),
            pod_name=str(md.get("name", "")), attempt=st.sandbox_attempt, hostname=hostname, vcpus=size.vcpus,
            memory_mib=size.memory_mib, ephemeral_bytes=size.ephemeral_bytes, images=tuple(disks.values()),
            tap=tap, network=net, hosts_file=hosts_file(pod, hostname=hostname, pod_ip=st.pod_ip),
            labels={"podvisor.io/pod-uid": st.uid, "podvisor.io/pod-namespace": str(md.get("namespace", "")),
                    "podvisor.io/pod-name": str(md.get("name", ""))})
        try:
            st.sandbox = await ctx.runtime.create_sandbox(spec)
        except RuntimeFailure as exc:
            self.event(pod, "Warning", "FailedCreatePodSandBox", f"Failed to create pod sandbox: {exc}")
            return False
        st.stopped = False
        if st.sandbox.ip and not st.pod_ip:
            st.pod_ip = st.sandbox.ip
        return True

    # ---- containers --------------------------------------------------------------------------------

    async def _sync_containers(self, pod: Mapping[str, Any], delays: list[float]) -> float | None:
        st = self.st
        spec = pod.get("spec") or {}
        policy = str(spec.get("restartPolicy") or "Always")
        inits = list(spec.get("initContainers") or [])
        apps = list(spec.get("containers") or [])
        self._sync_probes(pod)
        apps_started = any(attempts(st.containers, str(c.get("name"))) for c in apps)
        if not apps_started:
            for c in inits:
                name = str(c.get("name"))
                at = attempts(st.containers, name)
                if is_sidecar(c):
                    await self._keep_running(pod, c, at, "Always", delays)
                    now_at = attempts(st.containers, name)
                    probes = self.st.probes.get(now_at[-1][1].id) if now_at else None
                    if not now_at or now_at[-1][1].state != "running" or (probes is not None and not probes.started):
                        return None
                    continue
                if not at:
                    await self._start(pod, c, 0)
                    return None
                n, cur = at[-1]
                if cur.state in ("running", "created"):
                    if cur.state == "created":
                        await self._start(pod, c, n + 1)
                    return None
                if cur.exit_code == 0 and cur.reason != "StartError":
                    continue
                if policy == "Never":
                    return None
                await self._restart(pod, c, n, cur, delays)
                return None
        for c in inits:
            if is_sidecar(c):
                await self._keep_running(pod, c, attempts(st.containers, str(c.get("name"))), "Always", delays)
        for c in apps:
            await self._keep_running(pod, c, attempts(st.containers, str(c.get("name"))), policy, delays)
        return None

    async def _keep_running(self, pod: Mapping[str, Any], c: Mapping[str, Any],
                            at: list[tuple[int, ContainerInfo]], policy: str, delays: list[float]) -> None:
        if not at:
            await self._start(pod, c, 0)
            return
        n, cur = at[-1]
        if cur.state == "created":
            await self._start(pod, c, n + 1)
            return
        if cur.state == "running":
            probes = self.st.probes.get(cur.id)
            if probes is not None and probes.failed:
                name = str(c.get("name"))
                what = "liveness" if probes.failed == "liveness" else "startup"
                self.event(pod, "Normal", "Killing", f"Container {name} failed {what} probe, will be restarted")
                await self._kill_now(cur.id)
            return
        failed = cur.exit_code != 0 or cur.reason == "StartError"
        if policy == "Always" or (policy == "OnFailure" and failed):
            await self._restart(pod, c, n, cur, delays)

    async def _restart(self, pod: Mapping[str, Any], c: Mapping[str, Any], n: int, cur: ContainerInfo,
                       delays: list[float]) -> None:
        ctx = self.ctx
        assert ctx.crash_backoff is not None
        name = str(c.get("name"))
        key = (self.st.uid, name)
        finished = cur.finished_at or ctx.clock.now()
        left = ctx.crash_backoff.remaining(key, finished)
        if left > 0:
            md = _md(pod)
            delay = ctx.crash_backoff.delay(key)
            self.st.waiting[name] = (CRASH_LOOP_BACK_OFF, f"back-off {format_delay(delay)} restarting failed "
                                     f"container={name} pod={md.get('name')}_{md.get('namespace')}({self.st.uid})")
            self.event(pod, "Warning", "BackOff",
                       f"Back-off restarting failed container {name} in pod {md.get('name')}_{md.get('namespace')}"
                       f"({self.st.uid})")
            delays.append(left)
            return
        ctx.crash_backoff.restarted(key, finished)
        await self._start(pod, c, n + 1)

    async def _kill_now(self, container_id: str) -> None:
        assert self.st.sandbox is not None
        try:
            await self.ctx.runtime.signal_container(self.st.sandbox.id, container_id, 9)
        except RuntimeFailure as exc:
            log.info("kill %s: %s", container_id, exc)
        probes = self.st.probes.pop(container_id, None)
        if probes is not None:
            await probes.stop()

    async def _start(self, pod: Mapping[str, Any], c: Mapping[str, Any], attempt: int) -> bool:
        ctx, st = self.ctx, self.st
        assert st.sandbox is not None
        sid = st.sandbox.id
        name = str(c.get("name"))
        ref = str(c.get("image", ""))
        image = st.images[ref]
        md = _md(pod)
        try:
            services = []
            if (pod.get("spec") or {}).get("enableServiceLinks", True) is not False:
                services = service_env(await ctx.sources.services(str(md.get("namespace") or "default")))
            env, invalid = await container_env(pod, c, sources=ctx.sources, pod_ip=st.pod_ip, host_ip=ctx.host_ip,
                                               allocatable=ctx.allocatable, services=services)
            if invalid:
                self.event(pod, "Warning", "InvalidEnvironmentVariableNames",
                           f"Keys [{', '.join(invalid)}] from the EnvFrom were skipped since they are considered "
                           f"invalid environment variable names.")
            cspec = build_spec(pod, c, attempt=attempt, image_id=image_disk_id(image.digest), image_config=image.config,
                               env=env, volume_sources=st.volume_sources, hostname=pod_hostname(pod))
        except ConfigError as exc:
            st.waiting[name] = ("CreateContainerConfigError", str(exc))
            self.event(pod, "Warning", "Failed", f"Error: {exc}")
            return False
        old = attempts(st.containers, name)
        for _, info in old[:-1]:
            try:
                await ctx.runtime.remove_container(sid, info.id)
            except RuntimeFailure as exc:
                log.debug("remove %s: %s", info.id, exc)
        try:
            await ctx.runtime.create_container(sid, cspec)
        except RuntimeFailure as exc:
            st.waiting[name] = ("CreateContainerError", str(exc))
            self.event(pod, "Warning", "Failed", f"Error: {exc}")
            return False
        st.waiting.pop(name, None)
        self.event(pod, "Normal", "Created", f"Created container: {name}")
        try:
            await ctx.runtime.start_container(sid, cspec.id)
        except StartFailure as exc:
            self.event(pod, "Warning", "Failed", f'Error: failed to start container "{name}": {exc}')
            return False
        except RuntimeFailure as exc:
            st.waiting[name] = ("RunContainerError", str(exc))
            self.event(pod, "Warning", "Failed", f"Error: {exc}")
            return False
        self.event(pod, "Normal", "Started", f"Started container {name}")
        st.containers = await ctx.runtime.list_containers(sid)
        self._sync_probes(pod)
        post = (c.get("lifecycle") or {}).get("postStart")
        if isinstance(post, Mapping):
            result = await run_handler(ctx.runtime, sid, cspec.id, c, post, timeout_s=30.0, pod_ip=st.pod_ip)
            if not result.ok:
                self.event(pod, "Warning", "FailedPostStartHook",
                           f"PostStartHook failed: {result.message}".strip())
                await self._kill_now(cspec.id)
        return True

    # ---- probes ------------------------------------------------------------------------------------

    def _sync_probes(self, pod: Mapping[str, Any]) -> None:
        """One `ContainerProbes` per running container attempt; stop those of attempts that ended."""
        ctx, st = self.ctx, self.st
        if st.sandbox is None:
            return
        spec = pod.get("spec") or {}
        by_name = {str(c.get("name")): c for c in list(spec.get("initContainers") or []) + list(spec.get("containers") or [])}
        running = {i.id: i for i in st.containers if i.state == "running"}
        for cid in [cid for cid in st.probes if cid not in running]:
            probes = st.probes.pop(cid)
            asyncio.ensure_future(probes.stop())
        for cid, info in running.items():
            if cid in st.probes or info.name not in by_name:
                continue
            c = by_name[info.name]
            started_mono = ctx.clock.monotonic() - max(0.0, ctx.clock.now() - (info.started_at or ctx.clock.now()))

            def on_failure(probe_type: str, message: str, _pod: Mapping[str, Any] = pod) -> None:
                self.event(_pod, "Warning", "Unhealthy", message)

            probes = ContainerProbes(runtime=ctx.runtime, clock=ctx.clock, sandbox_id=st.sandbox.id, container_id=cid,
                                     container=c, started_monotonic=started_mono, pod_ip=st.pod_ip,
                                     on_change=self.wake, on_failure=on_failure)
            st.probes[cid] = probes
            probes.start()
