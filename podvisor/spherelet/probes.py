"""Startup, liveness and readiness probes with Kubernetes' timing, one set per running container.

`ProbeTracker` is the pure part: consecutive successes and failures against ``successThreshold``
and ``failureThreshold``, starting from kube's initial results (readiness: not ready; liveness: alive;
startup: unknown). `ContainerProbes` runs the probes of one container *attempt* as tasks:

* the first run is ``initialDelaySeconds`` after the container started, then every ``periodSeconds``;
  each run has ``timeoutSeconds``;
* while a startup probe has not succeeded, liveness and readiness do not run and the container is
  neither started nor ready; once it succeeds it never runs again for this attempt;
* a liveness (or startup) result turning to failure asks the pod worker to kill the container, which is
  then restarted by the pod's restartPolicy; the probes of that attempt end there;
* a container without a readiness probe is ready once started.

Every failed run emits an ``Unhealthy`` warning (the event recorder folds repeats into one with a
count), and every change of the started/ready/alive verdict wakes the pod worker. All timing goes
through the injected `Clock`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from podvisor.spherelet.aio import cancel_and_wait
from podvisor.spherelet.clock import Clock
from podvisor.spherelet.handlers import HandlerResult, run_handler
from podvisor.spherelet.runtime import Runtime

__all__ = ["ProbeSpec", "ProbeTracker", "ContainerProbes", "PROBE_TYPES"]

log = logging.getLogger("podvisor.spherelet.probes")

PROBE_TYPES = ("startup", "liveness", "readiness")


@dataclass(frozen=True)
class ProbeSpec:
    handler: Mapping[str, Any]
    initial_delay: float = 0.0
    period: float = 10.0
    timeout: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = 3

    @classmethod
    def from_k8s(cls, probe: Mapping[str, Any], probe_type: str) -> ProbeSpec:
        def num(key: str, default: int, minimum: int) -> int:
            raw = probe.get(key)
            try:
                v = int(raw) if raw is not None else default
            except (TypeError, ValueError):
                v = default
            return max(minimum, v)

        success = num("successThreshold", 1, 1)
        if probe_type != "readiness":
            success = 1  # liveness and startup must have 1 (the API server says so too)
        return cls(handler=probe, initial_delay=num("initialDelaySeconds", 0, 0), period=num("periodSeconds", 10, 1),
                   timeout=num("timeoutSeconds", 1, 1), success_threshold=success,
                   failure_threshold=num("failureThreshold", 3, 1))


class ProbeTracker:
    """Consecutive results against the thresholds. ``result`` is True, False or None (unknown)."""

    def __init__(self, spec: ProbeSpec, probe_type: str) -> None:
        self.spec, self.probe_type = spec, probe_type
        self.result: bool | None = {"readiness": False, "liveness": True, "startup": None}[probe_type]
        self.successes = 0
        self.failures = 0

    def record(self, ok: bool) -> bool:
        """Count one run; returns True when the verdict changed."""
        if ok:
            self.successes += 1
            self.failures = 0
            if self.successes >= self.spec.success_threshold and self.result is not True:
                self.result = True
                return True
        else:
            self.failures += 1
            self.successes = 0
            if self.failures >= self.spec.failure_threshold and self.result is not False:
                self.result = False
                return True
        return False


class ContainerProbes:
    """The probes of one container attempt. Read ``started``, ``ready`` and ``failed`` (the probe
    type whose failure asks for a restart, or "")."""

    def __init__(self, *, runtime: Runtime, clock: Clock, sandbox_id: str, container_id: str,
                 container: Mapping[str, Any], started_monotonic: float, pod_ip: str = "",
                 on_change: Callable[[], None], on_failure: Callable[[str, str], None]) -> None:
        self.runtime, self.clock = runtime, clock
        self.sandbox_id, self.container_id, self.container = sandbox_id, container_id, container
        self.started_monotonic = started_monotonic
        self.pod_ip = pod_ip
        self.on_change, self.on_failure = on_change, on_failure
        self.trackers: dict[str, ProbeTracker] = {}
        for t in PROBE_TYPES:
            probe = container.get(f"{t}Probe")
            if isinstance(probe, Mapping):
                self.trackers[t] = ProbeTracker(ProbeSpec.from_k8s(probe, t), t)
        self._startup_done = asyncio.Event()
        if "startup" not in self.trackers:
            self._startup_done.set()
        self._tasks: list[asyncio.Task[None]] = []
        self.failed = ""

    @property
    def started(self) -> bool:
        return self._startup_done.is_set()

    @property
    def ready(self) -> bool:
        if not self.started or self.failed:
            return False
        r = self.trackers.get("readiness")
        return True if r is None else bool(r.result)

    def start(self) -> None:
        for t in self.trackers:
            self._tasks.append(asyncio.create_task(self._loop(t), name=f"probe-{t}-{self.container_id}"))

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        await cancel_and_wait(tasks)

    async def _loop(self, probe_type: str) -> None:
        tracker = self.trackers[probe_type]
        spec = tracker.spec
        if probe_type != "startup":
            await self._startup_done.wait()
        first = self.started_monotonic + spec.initial_delay
        wait = first - self.clock.monotonic()
        if wait > 0:
            await self.clock.sleep(wait)
        while not self.failed:
            result = await self._run_once(spec)
            if not result.ok:
                name = probe_type.capitalize()
                self.on_failure(probe_type, f"{name} probe failed: {result.message.strip()}" if result.message.strip()
                                else f"{name} probe failed")
            changed = tracker.record(result.ok)
            if changed:
                if probe_type == "startup" and tracker.result:
                    self._startup_done.set()
                    self.on_change()
                    return
                if probe_type in ("liveness", "startup") and tracker.result is False:
                    self.failed = probe_type
                    self.on_change()
                    return
                self.on_change()
            await self.clock.sleep(spec.period)

    async def _run_once(self, spec: ProbeSpec) -> HandlerResult:
        try:
            return await asyncio.wait_for(
                run_handler(self.runtime, self.sandbox_id, self.container_id, self.container, spec.handler,
                            timeout_s=spec.timeout, pod_ip=self.pod_ip),
                timeout=spec.timeout + 5.0)
        except TimeoutError:
            return HandlerResult(False, "probe timed out")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a probe bug must not kill the loop
            log.warning("probe of %s failed unexpectedly: %r", self.container_id, exc)
            return HandlerResult(False, str(exc))
