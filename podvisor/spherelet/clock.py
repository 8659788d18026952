"""Time for the spherelet, injectable: wall time (timestamps in status), monotonic time (probe
schedules) and sleeping. Tests pass a clock whose sleeps end when the test advances it, so back-off,
probe periods and resync are tested without waiting."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

__all__ = ["Clock", "RealClock"]


class Clock(Protocol):
    def now(self) -> float: ...          # seconds since the epoch

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class RealClock:
    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))
