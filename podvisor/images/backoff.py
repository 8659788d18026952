"""Image pull back-off as the kubelet keeps it: per (pod, image), 10 s doubling to 5 min.

After a failed pull the node agent reports ``ErrImagePull``; while the back-off runs, tries are not
made and the container waits with reason ``ImagePullBackOff``. A success forgets the key. The clock
is injected so tests need not sleep.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["PullBackOff", "ERR_IMAGE_PULL", "IMAGE_PULL_BACKOFF"]

ERR_IMAGE_PULL = "ErrImagePull"
IMAGE_PULL_BACKOFF = "ImagePullBackOff"


@dataclass
class _Entry:
    delay: float
    until: float


class PullBackOff:
    def __init__(self, *, initial: float = 10.0, maximum: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.initial, self.maximum, self.clock = initial, maximum, clock
        self._entries: dict[str, _Entry] = {}

    def in_backoff(self, key: str) -> bool:
        entry = self._entries.get(key)
        return entry is not None and self.clock() < entry.until

    def remaining(self, key: str) -> float:
        entry = self._entries.get(key)
        return max(0.0, entry.until - self.clock()) if entry else 0.0

    def failed(self, key: str) -> float:
        """Record a failure; returns the delay before the next try."""
        entry = self._entries.get(key)
        delay = self.initial if entry is None else min(entry.delay * 2, self.maximum)
        self._entries[key] = _Entry(delay, self.clock() + delay)
        return delay

    def succeeded(self, key: str) -> None:
        self._entries.pop(key, None)

    def reason(self, key: str) -> str:
        """What a waiting container shows: back-off while it runs, the pull error otherwise."""
        return IMAGE_PULL_BACKOFF if self.in_backoff(key) else ERR_IMAGE_PULL
