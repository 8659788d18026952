"""CrashLoopBackOff: how long a container that keeps exiting waits before its next restart.

Kubelet's rule, in our words: the first restart is immediate; each further restart waits, counted
from when the container last finished, 10 s, then 20 s, 40 s ... up to 5 minutes. A container whose
previous restart is more than ``reset_after`` (10 minutes) ago starts again from 10 s — it ran long
enough to count as healthy. While the wait runs the container shows ``waiting`` with reason
``CrashLoopBackOff`` and the message ``back-off 20s restarting failed container=...``.

Keys are (pod UID, container name); the clock is injected (wall seconds, like container timestamps).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["CrashBackOff", "CRASH_LOOP_BACK_OFF", "format_delay"]

CRASH_LOOP_BACK_OFF = "CrashLoopBackOff"


@dataclass
class _Entry:
    delay: float
    last: float      # finish time of the container when it was last restarted


class CrashBackOff:
    def __init__(self, *, initial: float = 10.0, maximum: float = 300.0, reset_after: float = 600.0,
                 clock: Callable[[], float]) -> None:
        self.initial, self.maximum, self.reset_after = initial, maximum, reset_after
        self.clock = clock
        self._entries: dict[tuple[str, str], _Entry] = {}

    def remaining(self, key: tuple[str, str], finished_at: float) -> float:
        """Seconds left before the container that finished at ``finished_at`` may restart (0: now)."""
        entry = self._entries.get(key)
        if entry is None or finished_at - entry.last > self.reset_after:
            return 0.0
        return max(0.0, entry.delay - (self.clock() - finished_at))

    def delay(self, key: tuple[str, str]) -> float:
        entry = self._entries.get(key)
        return entry.delay if entry else 0.0

    def restarted(self, key: tuple[str, str], finished_at: float) -> float:
        """Record a restart of the container that finished at ``finished_at``; returns the wait that the
        *next* restart will need."""
        entry = self._entries.get(key)
        if entry is None or finished_at - entry.last > self.reset_after:
            delay = self.initial
        else:
            delay = min(entry.delay * 2, self.maximum)
        self._entries[key] = _Entry(delay, finished_at)
        return delay

    def forget_pod(self, pod_uid: str) -> None:
        for key in [k for k in self._entries if k[0] == pod_uid]:
            del self._entries[key]


def format_delay(seconds: float) -> str:
    """Go's duration style as kubelet prints it: 10s, 1m20s, 5m0s."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    return f"{s // 60}m{s % 60}s"
