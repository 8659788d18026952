"""Watches on the SQLite engine: live events from the writer, history from the database.

A watch subscribes first, then replays history from SQLite in pages, then serves the live events
the writer hands to the event loop after each commit, skipping those it already replayed (so nothing
falls in the gap between the two). Each subscriber buffers a bounded number of live events; one that
overflows drops its buffer and catches up from the history again, so a slow reader costs history
reads, never unbounded memory. The iterator changes state only after an await completes, so a
cancelled ``__anext__`` (e.g. under ``asyncio.wait_for``) loses nothing.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Protocol, TypeVar

from podvisor.storage.interface import WatchEvent

__all__ = ["Subscriber", "SQLiteWatch", "REPLAY_PAGE", "SUBSCRIBER_BUFFER"]

REPLAY_PAGE = 1_000  # events per history read while a watch catches up
SUBSCRIBER_BUFFER = 10_000  # live events buffered per watch before it falls back to history

_T = TypeVar("_T")


class _Source(Protocol):
    """What a watch needs from the engine."""

    _closed: bool

    def _subscribe(self, prefix: str) -> Subscriber: ...

    def _unsubscribe(self, sub: Subscriber) -> None: ...

    async def _read(self, fn: Callable[..., _T], *args: Any) -> _T: ...

    def _read_events(self, prefix: str, after: int, limit: int) -> list[WatchEvent]: ...


class _Overflow(Exception):
    """A subscriber's buffer filled up: its watch must catch up from history."""


class _Closed(Exception):
    """The store closed under a subscriber."""


class Subscriber:
    """Live events for one watch, buffered on the event loop."""

    __slots__ = ("prefix", "overflowed", "closed", "_queue", "_wake", "__weakref__")

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.overflowed = False
        self.closed = False
        self._queue: deque[WatchEvent] = deque()
        self._wake = asyncio.Event()

    def offer(self, events: Iterable[WatchEvent]) -> None:
        if self.overflowed or self.closed:
            return
        added = False
        for ev in events:
            if ev.kv.key.startswith(self.prefix):
                if len(self._queue) >= SUBSCRIBER_BUFFER:
                    self.overflowed = True
                    self._queue.clear()
                    break
                self._queue.append(ev)
                added = True
        if added or self.overflowed:
            self._wake.set()

    def close(self) -> None:
        self.closed = True
        self._wake.set()

    async def get(self) -> WatchEvent:
        while not self._queue:
            if self.overflowed:
                raise _Overflow
            if self.closed:
                raise _Closed
            self._wake.clear()
            await self._wake.wait()
        return self._queue.popleft()


class SQLiteWatch:
    """The iterator `SQLiteStorage.watch` returns."""

    def __init__(self, store: _Source, prefix: str, from_revision: int) -> None:
        self._store = store
        self._prefix = prefix
        self._last = from_revision
        self._pending: deque[WatchEvent] = deque()
        self._sub: Subscriber | None = None
        self._replaying = False
        self._done = False

    def __aiter__(self) -> SQLiteWatch:
        return self

    async def __anext__(self) -> WatchEvent:
        while True:
            if self._pending:
                ev = self._pending.popleft()
                self._last = ev.revision
                return ev
            store = self._store
            if self._done or store._closed:
                self._finish()
                raise StopAsyncIteration
            if self._sub is None:
                self._sub = store._subscribe(self._prefix)
                self._replaying = True
            if self._replaying:
                try:
                    page = await store._read(store._read_events, self._prefix, self._last, REPLAY_PAGE)
                except asyncio.CancelledError:
                    raise
                except BaseException:
                    self._finish()
                    raise
                self._pending.extend(page)
                self._replaying = len(page) >= REPLAY_PAGE
                continue
            try:
                ev = await self._sub.get()
            except _Overflow:
                store._unsubscribe(self._sub)
                self._sub = None
                continue
            except _Closed:
                self._finish()
                raise StopAsyncIteration from None
            if ev.revision > self._last:
                self._last = ev.revision
                return ev

    def _finish(self) -> None:
        self._done = True
        self._pending.clear()
        if self._sub is not None:
            self._store._unsubscribe(self._sub)
            self._sub = None

    async def aclose(self) -> None:
        self._finish()
