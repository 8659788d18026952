"""Waiting for the cluster to converge, the one way every test does it: poll a check until it is truthy."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any


async def eventually(what: str, check: Callable[[], Awaitable[Any]], within: float = 20.0, *,
                     interval: float = 0.05) -> Any:
    """The first truthy result of ``check``; AssertionError naming ``what`` and the last result after ``within`` s."""
    deadline = time.monotonic() + within
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")
