"""Pod workers: one task per pod UID, kubelet's pod_workers shape.

Each worker keeps only the *latest* desired state of its pod (updates replace each other; nothing
is queued) and walks an explicit state machine::

    syncing ──(deleted, forced away, or finished: Succeeded/Failed)──▶ terminating
    terminating ──(every container stopped within the grace period)──▶ terminated
    terminated ──(the pod is deleted or gone from the API)──▶ cleaned up (VM, disk, address, API object)

A finished pod that is not deleted rests in *terminated* with its VM powered off and its disk kept
(logs stay readable) until it is deleted. In *syncing* the worker runs `PodSync` passes whenever it
is woken — a pod update, a container exit reported by the runtime, a probe verdict — and at the
latest after the delay the last pass asked for (or the resync period). The status is written only
when it changed: a merge patch against what the API holds.

`PodWorkers` routes informer events and runtime events to workers by UID, starts workers for
sandboxes found at start-up whose pods exist (adoption), and cleans up those no pod owns.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Mapping
from typing import Any

from podvisor.client.errors import APIStatusError
from podvisor.spherelet.aio import cancel_and_wait, wait_event_or_timeout
from podvisor.spherelet.context import NodeContext
from podvisor.spherelet.lifecycle import finish_pod, grace_period, terminate_pod
from podvisor.spherelet.podstate import PodState
from podvisor.spherelet.podsync import PodSync
from podvisor.spherelet.runtime import RuntimeEvent, RuntimeFailure, Sandbox
from podvisor.spherelet.status import TERMINAL_PHASES, merge_patch

__all__ = ["Stage", "PodWorker", "PodWorkers"]

log = logging.getLogger("podvisor.spherelet.worker")


class Stage(enum.Enum):
    SYNCING = "syncing"
    TERMINATING = "terminating"
    TERMINATED = "terminated"
    DONE = "done"


def _deleting(pod: Mapping[str, Any] | None) -> bool:
    return pod is None or bool((pod.get("metadata") or {}).get("deletionTimestamp"))


class PodWorker:
    def __init__(self, ctx: NodeContext, uid: str, pod: dict[str, Any] | None, *,
                 sandbox: Sandbox | None = None) -> None:
        self.ctx, self.uid = ctx, uid
        self.pod = pod
        self.last_pod: dict[str, Any] = pod or {}
        self.stage = Stage.SYNCING
        self.state = PodState(uid=uid, sandbox=sandbox, sandbox_attempt=sandbox.attempt if sandbox else 0)
        self.wake = asyncio.Event()
        self.changed = asyncio.Event()        # for waits inside termination
        self.sync = PodSync(ctx, self.state, wake=self.poke)
        self.task: asyncio.Task[None] | None = None
        self.failures = 0
        self.observed = False                 # containers seen by this worker (a status can be written)
        if sandbox is not None and sandbox.ip:
            self.state.pod_ip = sandbox.ip

    # ---- inputs ------------------------------------------------------------------------------------

    def update(self, pod: dict[str, Any] | None) -> None:
        """The latest desired state (None: the pod is gone from the API)."""
        self.pod = pod
        if pod is not None:
            self.last_pod = pod
        self.poke()

    def poke(self) -> None:
        self.wake.set()
        self.changed.set()

    def start(self) -> None:
        if self.task is None:
            self.task = asyncio.create_task(self.run(), name=f"pod-worker-{self.uid}")

    async def stop(self) -> None:
        """Stop working (the spherelet stops; the pod's VM keeps running)."""
        if self.task is not None:
            await cancel_and_wait([self.task])
            self.task = None
        for probes in list(self.state.probes.values()):
            await probes.stop()
        self.state.probes.clear()

    # ---- the loop ------------------------------------------------------------------------------------

    def _terminal(self) -> bool:
        status = self.state.last_status or ((self.pod or {}).get("status") or {})
        return self.state.terminal is not None or status.get("phase") in TERMINAL_PHASES

    async def run(self) -> None:
        while self.stage is not Stage.DONE:
            self.wake.clear()
            delay: float | None = self.ctx.resync_seconds
            try:
                delay = await self._step()
                self.failures = 0
            except asyncio.CancelledError:
                raise
            except (RuntimeFailure, APIStatusError, OSError, TimeoutError) as exc:
                self.failures += 1
                delay = min(30.0, 0.5 * 2 ** min(self.failures, 6))
                log.warning("pod %s (%s): %s; retrying in %.1fs", self._label(), self.stage.value, exc, delay)
            except Exception:
                self.failures += 1
                delay = min(30.0, 0.5 * 2 ** min(self.failures, 6))
                log.exception("pod %s (%s): unexpected error; retrying in %.1fs", self._label(), self.stage.value, delay)
            if self.stage is Stage.DONE:
                break
            if delay is not None and delay <= 0:
                continue
            await self._idle(delay)
        if self.ctx.on_pod_done is not None:
            await self.ctx.on_pod_done(self.uid)

    async def _idle(self, delay: float | None) -> None:
        if self.wake.is_set():
            return
        if self.stage is Stage.SYNCING:  # a running pod is looked at again at least every resync period
            delay = self.ctx.resync_seconds if delay is None else min(delay, self.ctx.resync_seconds)
        await wait_event_or_timeout(self.wake, self.ctx.clock, delay)

    def _label(self) -> str:
        md = self.last_pod.get("metadata") or {}
        return f"{md.get('namespace', '?')}/{md.get('name', '?')}"

    async def _step(self) -> float | None:
        st = self.state
        if self.stage is Stage.SYNCING:
            pod = self.pod
            if _deleting(pod) or self._terminal():
                self.stage = Stage.TERMINATING
                return 0.0
            assert pod is not None
            delay = await self.sync.run(pod)
            self.observed = True
            await self.write_status()
            if self._terminal():
                self.stage = Stage.TERMINATING
                return 0.0
            return delay
        if self.stage is Stage.TERMINATING:
            pod = self.pod or self.last_pod
            await terminate_pod(self.ctx, st, pod, grace=lambda: grace_period(self.pod, self.last_pod),
                                changed=self.changed)
            st.final = _deleting(self.pod)
            if st.containers:
                self.observed = True
            self.stage = Stage.TERMINATED
            return 0.0
        # TERMINATED
        if _deleting(self.pod):
            await finish_pod(self.ctx, st, destroy=True)
            if self.pod is not None:
                await self.write_status()
                await self.ctx.api.delete_pod(self.pod)
            self.stage = Stage.DONE
            return None
        await finish_pod(self.ctx, st, destroy=False)
        await self.write_status()
        return None

    async def write_status(self) -> None:
        pod = self.pod
        if pod is None:
            return
        if not self.observed and (pod.get("status") or {}).get("phase") in TERMINAL_PHASES:
            return  # a finished pod adopted after a restart: its recorded status stays as it is
        st = self.state
        sandbox_ready = st.sandbox is not None and st.sandbox.state == "ready"
        status = st.build_status(pod, now=self.ctx.clock.now(), host_ip=self.ctx.host_ip, sandbox_ready=sandbox_ready)
        if status == st.last_status:
            return
        current = pod.get("status") or {}
        patch = merge_patch(current, status)
        if patch:
            answer = await self.ctx.api.patch_status(pod, {"status": patch})
            if answer is None:
                return
            # later passes compare against what the API now holds
            self.pod = {**pod, "status": answer.get("status") or status,
                        "metadata": {**(pod.get("metadata") or {}),
                                     "resourceVersion": (answer.get("metadata") or {}).get("resourceVersion")}}
        st.last_status = status


class PodWorkers:
    """Every pod of this node, one worker each."""

    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        self.workers: dict[str, PodWorker] = {}
        self._by_sandbox: dict[str, str] = {}
        self._unsubscribe = ctx.runtime.subscribe(self._runtime_event)
        ctx.on_pod_done = self._done

    def _runtime_event(self, ev: RuntimeEvent) -> None:
        for worker in self.workers.values():
            sb = worker.state.sandbox
            if sb is not None and sb.id == ev.sandbox_id:
                if ev.kind == "sandbox-gone":
                    worker.state.sandbox = Sandbox(**{**sb.__dict__, "state": "stopped"})
                worker.poke()
                return

    async def _done(self, uid: str) -> None:
        self.workers.pop(uid, None)

    def pod_update(self, pod: dict[str, Any]) -> None:
        uid = str((pod.get("metadata") or {}).get("uid", ""))
        if not uid:
            return
        worker = self.workers.get(uid)
        if worker is None:
            worker = PodWorker(self.ctx, uid, pod)
            self.workers[uid] = worker
            worker.start()
        else:
            worker.update(pod)

    def pod_deleted(self, pod: Mapping[str, Any]) -> None:
        uid = str((pod.get("metadata") or {}).get("uid", ""))
        worker = self.workers.get(uid)
        if worker is not None:
            worker.update(None)

    def adopt(self, pods: list[dict[str, Any]], sandboxes: list[Sandbox]) -> list[Sandbox]:
        """At start-up: workers for ``pods``, each given its sandbox if one exists. Returns the sandboxes
        no pod owns (the caller destroys them); older sandbox attempts of a pod are returned too."""
        by_uid: dict[str, list[Sandbox]] = {}
        for sb in sandboxes:
            by_uid.setdefault(sb.pod_uid, []).append(sb)
        orphans: list[Sandbox] = []
        for pod in pods:
            uid = str((pod.get("metadata") or {}).get("uid", ""))
            owned = sorted(by_uid.pop(uid, []), key=lambda s: s.attempt)
            current = owned[-1] if owned else None
            orphans += owned[:-1]
            if uid in self.workers:
                continue
            worker = PodWorker(self.ctx, uid, pod, sandbox=current)
            self.workers[uid] = worker
            worker.start()
        for rest in by_uid.values():
            orphans += rest
        return orphans

    def running_uids(self) -> list[str]:
        return list(self.workers)

    async def stop(self) -> None:
        self._unsubscribe()
        workers = list(self.workers.values())
        await asyncio.gather(*(w.stop() for w in workers), return_exceptions=True)

    def resync(self) -> None:
        for w in self.workers.values():
            w.poke()
