"""The scheduling queue: which pod to try next, and when to try again a pod that fit nowhere.

Three places a pod can be, as in kube-scheduler:
- *active*: waiting for a scheduling attempt (a client-go style work queue: one attempt per pod at a
  time, a pod changed during its attempt is tried once more);
- *back-off*: failed recently; it waits ``initial_backoff * 2^(failures-1)`` seconds (capped at
  ``max_backoff``) since its last attempt before becoming active again, so a hopeless pod cannot spin;
- *unschedulable*: failed and parked until something that could change the answer happens — a host
  added or changed, a placed pod gone (and, for pods with affinity, a placed pod added), the pod
  itself edited — or, as a safety net, ``unschedulable_timeout`` seconds have passed. Moving out of
  here goes through back-off.

The clock is injectable so back-off arithmetic is testable without sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from podvisor.client import WorkQueue

__all__ = ["SchedulingQueue", "Parked"]


@dataclass(frozen=True)
class Parked:
    since: float
    fingerprint: str
    affinity: bool  # pod (anti-)affinity was involved: placed pods coming and going matter


class SchedulingQueue:
    def __init__(self, *, initial_backoff: float = 1.0, max_backoff: float = 10.0,
                 unschedulable_timeout: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.active: WorkQueue[str] = WorkQueue(base_delay=initial_backoff, max_delay=max_backoff)
        self.initial_backoff, self.max_backoff = initial_backoff, max_backoff
        self.unschedulable_timeout = unschedulable_timeout
        self._clock = clock
        self._parked: dict[str, Parked] = {}
        self._failures: dict[str, int] = {}
        self._last_failure: dict[str, float] = {}

    # the active queue
    def add(self, key: str) -> None:
        self.active.add(key)

    async def get(self) -> str:
        return await self.active.get()

    def done(self, key: str) -> None:
        self.active.done(key)

    def retry_after_error(self, key: str) -> None:
        """An API error (not a verdict on the pod): retry with the work queue's own back-off."""
        self.active.add_rate_limited(key)

    # failures
    def park(self, key: str, fingerprint: str, *, affinity: bool) -> None:
        now = self._clock()
        self._failures[key] = self._failures.get(key, 0) + 1
        self._last_failure[key] = now
        self._parked[key] = Parked(now, fingerprint, affinity)

    def parked(self, key: str) -> Parked | None:
        return self._parked.get(key)

    def backoff(self, key: str) -> float:
        n = self._failures.get(key, 0)
        return 0.0 if n == 0 else min(self.max_backoff, self.initial_backoff * 2 ** (n - 1))

    def backoff_remaining(self, key: str) -> float:
        if key not in self._last_failure:
            return 0.0
        return max(0.0, self._last_failure[key] + self.backoff(key) - self._clock())

    def activate(self, key: str) -> None:
        """Out of the unschedulable set, into active once its back-off has run out."""
        if self._parked.pop(key, None) is None:
            return
        delay = self.backoff_remaining(key)
        if delay > 0:
            self.active.add_after(key, delay)
        else:
            self.active.add(key)

    def move_all(self, *, only_affinity: bool = False) -> int:
        keys = [k for k, p in self._parked.items() if p.affinity or not only_affinity]
        for k in keys:
            self.activate(k)
        return len(keys)

    def flush_stale(self) -> int:
        now = self._clock()
        keys = [k for k, p in self._parked.items() if now - p.since >= self.unschedulable_timeout]
        for k in keys:
            self.activate(k)
        return len(keys)

    def forget(self, key: str) -> None:
        """The pod was placed or is gone: drop its history."""
        self._parked.pop(key, None)
        self._failures.pop(key, None)
        self._last_failure.pop(key, None)
        self.active.forget(key)

    def __len__(self) -> int:
        return len(self.active)

    @property
    def unschedulable_count(self) -> int:
        return len(self._parked)

    def shutdown(self) -> None:
        self.active.shutdown()
