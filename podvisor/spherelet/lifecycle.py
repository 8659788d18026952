"""Stopping a pod: graceful termination of its containers, then the VM, the disk, the address.

Kubelet's order, in our words: every running container gets its ``preStop`` hook, then SIGTERM, and
the whole pod shares one grace period (``deletionGracePeriodSeconds`` of a pod being deleted,
``terminationGracePeriodSeconds`` otherwise); what still runs when it ends gets SIGKILL. The grace
can only shrink while we wait: a second ``kubectl delete --grace-period=1`` or a forced delete
(the object is gone) cuts it short. App containers stop first, sidecars after them.

Then `finish_pod` gives everything back. A pod that merely finished (Succeeded/Failed, still in the
API) keeps its VM's disk so ``kubectl logs`` still works; the VM is powered off, the address and
the image leases are released. A deleted pod loses its VM and disk as well, and the worker then
removes the API object (grace 0, uid precondition) — the API server keeps a bound pod until its
node agent says it is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Mapping
from typing import Any

from podvisor.spherelet.aio import wait_event_or_timeout
from podvisor.spherelet.context import NodeContext
from podvisor.spherelet.handlers import run_handler
from podvisor.spherelet.podstate import PodState
from podvisor.spherelet.podsync import image_holder
from podvisor.spherelet.runtime import ContainerInfo, RuntimeFailure, SandboxNotFound
from podvisor.spherelet.status import is_sidecar

__all__ = ["grace_period", "terminate_pod", "finish_pod", "DEFAULT_GRACE"]

log = logging.getLogger("podvisor.spherelet.lifecycle")

DEFAULT_GRACE = 30
_KILL_WAIT = 10.0
_POLL = 0.5


def grace_period(pod: Mapping[str, Any] | None, last: Mapping[str, Any]) -> float:
    """Seconds the containers get. A pod already removed from the API (forced delete) gets none."""
    if pod is None:
        return 0.0
    md, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    if md.get("deletionTimestamp") and md.get("deletionGracePeriodSeconds") is not None:
        return max(0.0, float(md["deletionGracePeriodSeconds"]))
    g = spec.get("terminationGracePeriodSeconds")
    return float(g) if isinstance(g, int) and g >= 0 else float(DEFAULT_GRACE)


async def _wait_exited(ctx: NodeContext, st: PodState, cid: str, deadline: Callable[[], float],
                       changed: asyncio.Event) -> bool:
    """Wait until container ``cid`` has exited or the (shrinkable) deadline passes."""
    assert st.sandbox is not None
    while True:
        try:
            infos = await ctx.runtime.list_containers(st.sandbox.id)
        except SandboxNotFound:
            return True
        info = next((i for i in infos if i.id == cid), None)
        if info is None or info.state == "exited":
            return True
        left = deadline() - ctx.clock.monotonic()
        if left <= 0:
            return False
        changed.clear()
        await wait_event_or_timeout(changed, ctx.clock, min(left, _POLL))


async def _stop_container(ctx: NodeContext, st: PodState, pod: Mapping[str, Any], c: Mapping[str, Any],
                          info: ContainerInfo, deadline: Callable[[], float], changed: asyncio.Event) -> None:
    assert st.sandbox is not None
    sid = st.sandbox.id
    name = str(c.get("name"))
    ctx.recorder.emit(dict(pod), type="Normal", reason="Killing", message=f"Stopping container {name}", kind="Pod")
    pre = (c.get("lifecycle") or {}).get("preStop")
    left = deadline() - ctx.clock.monotonic()
    if isinstance(pre, Mapping) and left > 0:
        try:
            result = await asyncio.wait_for(
                run_handler(ctx.runtime, sid, info.id, c, pre, timeout_s=left, pod_ip=st.pod_ip), timeout=left)
            if not result.ok:
                ctx.recorder.emit(dict(pod), type="Warning", reason="FailedPreStopHook",
                                  message=f"PreStopHook failed: {result.message}".strip(), kind="Pod")
        except TimeoutError:
            ctx.recorder.emit(dict(pod), type="Warning", reason="FailedPreStopHook",
                              message=f"PreStopHook for container {name} did not finish in the grace period", kind="Pod")
    if deadline() - ctx.clock.monotonic() > 0:
        with contextlib.suppress(RuntimeFailure):
            await ctx.runtime.signal_container(sid, info.id, signal.SIGTERM)
        if await _wait_exited(ctx, st, info.id, deadline, changed):
            return
    with contextlib.suppress(RuntimeFailure):
        await ctx.runtime.signal_container(sid, info.id, signal.SIGKILL)
    kill_deadline = ctx.clock.monotonic() + _KILL_WAIT
    await _wait_exited(ctx, st, info.id, lambda: kill_deadline, changed)


async def terminate_pod(ctx: NodeContext, st: PodState, pod: Mapping[str, Any], *, grace: Callable[[], float],
                        changed: asyncio.Event) -> None:
    """Stop every running container within the grace period (``grace()`` is re-read: it may shrink)."""
    for probes in list(st.probes.values()):
        await probes.stop()
    st.probes.clear()
    if st.sandbox is None:
        return
    try:
        infos = await ctx.runtime.list_containers(st.sandbox.id)
    except SandboxNotFound:
        st.sandbox = None
        return
    except RuntimeFailure as exc:
        log.warning("pod %s: cannot list containers to stop them: %s", st.uid, exc)
        return
    started = ctx.clock.monotonic()
    limit = [started + grace()]

    def deadline() -> float:
        limit[0] = min(limit[0], started + grace())
        return limit[0]

    spec = pod.get("spec") or {}
    by_name = {str(c.get("name")): c for c in list(spec.get("initContainers") or []) + list(spec.get("containers") or [])}
    running = [i for i in infos if i.state == "running"]
    apps = [i for i in running if not is_sidecar(by_name.get(i.name, {}))]
    sidecars = [i for i in running if is_sidecar(by_name.get(i.name, {}))]
    for group in (apps, sidecars):
        if group:
            await asyncio.gather(*(_stop_container(ctx, st, pod, by_name.get(i.name, {"name": i.name}), i, deadline,
                                                   changed) for i in group))
    for info in infos:
        if info.state == "created":
            with contextlib.suppress(RuntimeFailure):
                await ctx.runtime.remove_container(st.sandbox.id, info.id)
    with contextlib.suppress(RuntimeFailure):
        st.containers = await ctx.runtime.list_containers(st.sandbox.id)


async def finish_pod(ctx: NodeContext, st: PodState, *, destroy: bool) -> None:
    """Power the VM off (``destroy``: remove it with its disk), release the address and the images."""
    if st.sandbox is not None:
        if destroy:
            await ctx.runtime.destroy_sandbox(st.sandbox.id)
            st.sandbox = None
        elif not st.stopped:
            try:
                await ctx.runtime.stop_sandbox(st.sandbox.id, timeout_s=ctx.stop_timeout)
            except SandboxNotFound:
                st.sandbox = None
        st.stopped = True
    if not st.released:
        if ctx.network is not None:
            await ctx.network.detach_pod(st.uid)
        for digest in sorted(st.leased):
            ctx.images.release(digest, image_holder(ctx.node_name, st.uid))
        st.leased.clear()
        st.released = True
    if destroy and ctx.crash_backoff is not None:
        ctx.crash_backoff.forget_pod(st.uid)
