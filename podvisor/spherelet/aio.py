"""Two asyncio idioms the spherelet uses everywhere, written once so cancellation is never lost.

Awaiting a task we have just cancelled inside ``suppress(CancelledError)`` has a trap: if *our own*
task is cancelled at that moment, its CancelledError is swallowed too, and the caller's ``stop()``
waits forever. `cancel_and_wait` gathers the children with ``return_exceptions`` instead: their
cancellation becomes a value, ours still propagates.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from podvisor.spherelet.clock import Clock

__all__ = ["cancel_and_wait", "wait_event_or_timeout"]


async def cancel_and_wait(tasks: Iterable[asyncio.Future[Any]]) -> None:
    """Cancel ``tasks`` and wait until they are done (their errors are dropped; ours are not)."""
    pending = [t for t in tasks if not t.done()]
    for t in pending:
        t.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)


async def wait_event_or_timeout(event: asyncio.Event, clock: Clock, delay: float | None) -> bool:
    """Wait until ``event`` is set or ``delay`` seconds of ``clock`` have passed; True if the event came."""
    if event.is_set():
        return True
    waiter: asyncio.Future[Any] = asyncio.ensure_future(event.wait())
    tasks: list[asyncio.Future[Any]] = [waiter]
    if delay is not None:
        tasks.append(asyncio.ensure_future(clock.sleep(delay)))
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        await cancel_and_wait(tasks)
    return event.is_set()
