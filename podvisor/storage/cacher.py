"""The watch cache: many watchers, one storage watch.

Every API watch (each kubectl ``-w``, each informer, each node agent watching its pods) would otherwise
hold its own storage watch. `WatchCache` wraps any `Storage`, keeps ONE watch on the engine, and
serves every watcher from an in-memory ring of recent events, so a hundred watchers cost one engine
watch and a fan-out of references.

Rules (the Kubernetes cacher's, in our words):

* Reads and writes pass straight through to the engine: the cache never answers a read, so a read
  is never stale. The API layer answers ``resourceVersion=0`` / unset watches by listing (through
  here) and then watching from the list's revision; that revision is always servable, because it is
  never older than the ring (a watch from a revision the cache has not seen yet simply waits).
* The ring keeps the newest ``capacity`` events. A watch from a revision older than the ring raises
  `RevisionCompactedError` on its first iteration (the API answers 410 Gone and the client relists).
* Watchers pull from the shared ring with their own cursor; nothing is copied per watcher. A watcher
  that falls so far behind that the ring overwrites events it has not read yet is terminated with
  `RevisionCompactedError` rather than buffered for: its client relists, as with a 410.
* A write wakes every watcher once. Besides ``async for``, a cursor can be drained without awaiting
  (`CacheWatcher.next_nowait`) and waited on with a timeout (`CacheWatcher.wait`), so a hundred
  watchers handle a burst of events in one scheduling round each instead of one per event.
* Optional index trigger: give ``indexer(key, value) -> {name: value}`` (`field_indexer` builds one,
  e.g. pods by ``spec.nodeName``) and ``watch(..., index=("spec.nodeName", "node-1"))`` skips events
  whose new and previous objects both have another value, so a node's agent sees its pods arrive and
  leave without the API layer decoding the whole cluster's traffic. The index only narrows, never
  hides: events the indexer says nothing about (no indexer, no such name, a value it could not
  parse) are delivered, and the API layer still applies its full field selector.
* History at start: if the engine offers ``compacted_revision()``, the ring starts up to
  ``capacity`` revisions back (filled from the engine's history), so clients resuming a watch after
  an API server restart need not relist.
* Bookmarks: `progress_revision` is the newest revision the cache has seen, and each watcher's
  `CacheWatcher.progress_revision()` is the revision through which it has seen everything relevant,
  the value a BOOKMARK event may carry.

If the engine watch breaks (the engine compacted past the cache, or is briefly unavailable) the cache
restarts it from the engine's current revision; watchers that had not reached that revision get
`RevisionCompactedError`, exactly as if the ring had moved past them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from podvisor.storage.interface import (
    EventType,
    KeyValue,
    ListResult,
    RevisionCompactedError,
    Storage,
    UnavailableError,
    WatchEvent,
)

__all__ = ["WatchCache", "CacheWatcher", "Indexer", "field_indexer", "DEFAULT_CAPACITY"]

log = logging.getLogger(__name__)

Indexer = Callable[[str, bytes], dict[str, str]]
DEFAULT_CAPACITY = 10_000
_RETRY_DELAY = 0.2
_ALARM_SLACK = 0.001  # a watcher's armed timer is kept if it is this close to the wanted time
_PRUNE_MIN = 256  # finished waits listed before the list is swept


class _Entry:
    __slots__ = ("event", "key", "revision", "index", "prev_index")

    def __init__(self, event: WatchEvent, index: dict[str, str] | None, prev_index: dict[str, str] | None) -> None:
        self.event = event
        self.key = event.kv.key
        self.revision = event.revision
        self.index = index
        self.prev_index = prev_index


class CacheWatcher:
    """One watcher's cursor over the ring. Cancellation-safe: a cancelled ``__anext__`` loses no
    event, so ``asyncio.wait_for(watcher.__anext__(), bookmark_interval)`` is fine."""

    def __init__(
        self, cache: WatchCache, prefix: str, from_revision: int, index: tuple[str, str] | None
    ) -> None:
        self._cache = cache
        self._prefix = prefix
        self._last = from_revision
        self._index = index
        self._next = -1  # ring sequence number of the next entry to look at; -1 = not started
        self._done = False
        self._waiter: asyncio.Future[bool] | None = None
        self._alarm: asyncio.TimerHandle | None = None
        self._alarm_when = 0.0

    def __aiter__(self) -> CacheWatcher:
        return self

    def progress_revision(self) -> int:
        """Every event relevant to this watcher up to this revision has been returned: the
        resourceVersion a BOOKMARK sent now may carry."""
        cache = self._cache
        if self._next >= cache._head_seq:
            return max(self._last, cache._head_revision)
        return self._last

    async def __anext__(self) -> WatchEvent:
        while True:
            event = self.next_nowait()
            if event is not None:
                return event
            await self._cache._changed.wait()

    def next_nowait(self) -> WatchEvent | None:
        """The next event if the ring already holds one for this watcher, else None; never waits.
        Ends (`StopAsyncIteration`) and fails exactly as ``__anext__`` does. A consumer that drains
        with this after each wake-up handles a burst of events in one step instead of one await
        (and one scheduling round) per event."""
        if self._done:
            raise StopAsyncIteration
        cache = self._cache
        if cache._engine_gone:
            self._done = True
            raise UnavailableError(self._prefix, "the storage engine closed under the watch cache")
        if self._next < 0:
            if self._last < cache._start_revision:
                self._done = True
                raise RevisionCompactedError(self._prefix, self._last, cache._start_revision)
            self._next = cache._seek(self._last)
        low = cache._low_seq()
        if self._next < low:
            if self._last < cache._start_revision:
                self._done = True
                raise RevisionCompactedError(self._prefix, self._last, cache._start_revision)
            self._next = low
        ring, cap, head = cache._ring, cache._capacity, cache._head_seq
        prefix, index, last = self._prefix, self._index, self._last
        nxt = self._next
        while nxt < head:
            entry = ring[nxt % cap]
            nxt += 1
            assert entry is not None
            if entry.revision <= last or not entry.key.startswith(prefix):
                continue
            if index is not None and not _index_matches(entry, index):
                continue
            self._next = nxt
            self._last = entry.revision
            return entry.event
        self._next = nxt
        if cache._closed:
            self._done = True
            raise StopAsyncIteration
        return None

    async def wait(self, within: float | None = None) -> bool:
        """Until the ring may hold something new for this watcher (True) or ``within`` seconds pass
        (False); follow with `next_nowait`, which may still find nothing (the news was for other
        watchers). Cheaper than timing out ``__anext__``: one future per wait, and the timer is
        re-armed only when the wanted wake-up time moves (a watch's deadline and bookmark times
        rarely do), so a busy watch does not churn timers."""
        cache = self._cache
        if self._done or cache._closed:
            return True
        if within is not None and within <= 0:
            return False
        loop = cache._loop
        waiter: asyncio.Future[bool] = loop.create_future()
        cache._add_waiter(waiter)
        self._waiter = waiter
        if within is not None:
            when = loop.time() + within
            if self._alarm is None or abs(self._alarm_when - when) > _ALARM_SLACK:
                if self._alarm is not None:
                    self._alarm.cancel()
                self._alarm = loop.call_at(when, self._ring_alarm)
                self._alarm_when = when
        return await waiter

    def _ring_alarm(self) -> None:
        self._alarm = None
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(False)

    async def aclose(self) -> None:
        self._done = True
        if self._alarm is not None:
            self._alarm.cancel()
            self._alarm = None


def _index_matches(entry: _Entry, index: tuple[str, str]) -> bool:
    """The index may only narrow, never hide: an entry the indexer said nothing about (no indexer,
    indexer failed, or no such name) is delivered, and the API layer's own filter decides."""
    name, value = index
    known = False
    for values in (entry.index, entry.prev_index):
        if values is None:
            continue
        found = values.get(name)
        if found == value:
            return True
        known = known or found is not None
    return not known


def field_indexer(resource_prefix: str, *paths: str) -> Indexer:
    """An indexer for JSON values under ``resource_prefix``: each dotted ``path`` (e.g.
    ``spec.nodeName``) becomes an index entry, "" when the object lacks it. Keys elsewhere get no
    index entries (their events are never filtered out by an index)."""
    split = [(path, path.split(".")) for path in paths]

    def index(key: str, value: bytes) -> dict[str, str]:
        if not key.startswith(resource_prefix):
            return {}
        doc: Any = json.loads(value)
        out: dict[str, str] = {}
        for path, parts in split:
            node = doc
            for part in parts:
                node = node.get(part) if isinstance(node, dict) else None
            out[path] = node if isinstance(node, str) else ""
        return out

    return index


class WatchCache:
    """A `Storage` that serves watches from memory. Create with `WatchCache.open`."""

    def __init__(
        self,
        storage: Storage,
        *,
        prefix: str = "",
        capacity: int = DEFAULT_CAPACITY,
        indexer: Indexer | None = None,
    ) -> None:
        """Prefer `open`; a cache built directly serves nothing until `start` is awaited."""
        if capacity < 1:
            raise ValueError("capacity must be positive")
        self._storage = storage
        self._prefix = prefix
        self._capacity = capacity
        self._indexer = indexer
        self._ring: list[_Entry | None] = [None] * capacity
        self._head_seq = 0  # sequence number the next entry gets
        self._reset_seq = 0  # entries before this were dropped by a restart
        self._start_revision = 0  # every event after this revision (under prefix) is in the ring
        self._head_revision = 0  # newest revision seen
        self._changed = asyncio.Event()
        self._waiters: list[asyncio.Future[bool]] = []  # `CacheWatcher.wait` calls
        self._prune_at = _PRUNE_MIN
        self._wake_scheduled = False
        self._closed = False
        self._engine_gone = False
        self._task: asyncio.Task[None] | None = None
        self._loop = asyncio.get_running_loop()

    @classmethod
    async def open(
        cls,
        storage: Storage,
        *,
        prefix: str = "",
        capacity: int = DEFAULT_CAPACITY,
        indexer: Indexer | None = None,
    ) -> WatchCache:
        """Start caching events of keys under ``prefix`` (all keys by default, which also keeps
        `progress_revision` moving on every write) from the engine's current revision on."""
        cache = cls(storage, prefix=prefix, capacity=capacity, indexer=indexer)
        await cache.start()
        return cache

    async def start(self) -> None:
        """Open the engine watch (idempotent; `open` does it)."""
        if self._task is not None:
            return
        current = await self._storage.current_revision()
        start = current
        oldest = getattr(self._storage, "compacted_revision", None)
        if oldest is not None:
            # The engine tells how far back it keeps history: start the ring up to `capacity`
            # revisions back, so clients resuming a watch after a restart need not relist.
            start = max(current - self._capacity, await oldest(), 0)
        self._start_revision = self._head_revision = start
        self._task = asyncio.create_task(self._feed(start), name="watch-cache-feed")

    # -- pass-through ---------------------------------------------------------------------

    async def get(self, key: str) -> KeyValue:
        return await self._storage.get(key)

    async def list(
        self, prefix: str, *, start_after: str | None = None, limit: int = 0, revision: int = 0
    ) -> ListResult:
        return await self._storage.list(prefix, start_after=start_after, limit=limit, revision=revision)

    async def create(self, key: str, value: bytes) -> KeyValue:
        return await self._storage.create(key, value)

    async def update(self, key: str, value: bytes, *, expected_revision: int) -> KeyValue:
        return await self._storage.update(key, value, expected_revision=expected_revision)

    async def delete(self, key: str, *, expected_revision: int = 0) -> KeyValue:
        return await self._storage.delete(key, expected_revision=expected_revision)

    async def current_revision(self) -> int:
        return await self._storage.current_revision()

    async def count(self, prefix: str) -> int:
        return await self._storage.count(prefix)

    # -- watches --------------------------------------------------------------------------

    def watch(
        self, prefix: str, *, from_revision: int, index: tuple[str, str] | None = None
    ) -> CacheWatcher:
        """Events under ``prefix`` after ``from_revision`` (which must be within the cache's
        prefix). ``index=(name, value)`` drops events whose new and previous objects the indexer
        gave another value for ``name`` (see the module notes)."""
        if not prefix.startswith(self._prefix):
            raise ValueError(f"watch prefix {prefix!r} is outside the cached prefix {self._prefix!r}")
        return CacheWatcher(self, prefix, from_revision, index)

    def progress_revision(self) -> int:
        """The newest revision the cache has seen (for BOOKMARK events)."""
        return self._head_revision

    def oldest_revision(self) -> int:
        """Watches from this revision or newer are served; older ones are compacted."""
        return self._start_revision

    @property
    def storage(self) -> Storage:
        """The engine behind the cache."""
        return self._storage

    async def compact(self, revision: int) -> None:
        """Compact the engine (if it can) and forget ring events at or before ``revision``.

        Waits (up to a few seconds) for the ring to reach ``revision`` first: an engine may attach
        an event's previous value only when it sends it (etcd does), so compacting events still in
        flight would break the cache's own watch."""
        await self._wait_for(revision, within=5.0)
        compact = getattr(self._storage, "compact", None)
        if compact is not None:
            await compact(revision)
        low = self._low_seq()
        while low < self._head_seq:
            entry = self._ring[low % self._capacity]
            assert entry is not None
            if entry.revision > revision:
                break
            low += 1
        self._reset_seq = low
        self._start_revision = max(self._start_revision, revision)
        self._schedule_wake()

    async def close(self) -> None:
        """Stop the engine watch, end every watcher, and close the engine."""
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._wake()
        await self._storage.close()

    # -- internals ------------------------------------------------------------------------

    async def _wait_for(self, revision: int, *, within: float) -> None:
        """Until the ring has seen ``revision`` (or the timeout passes, or the cache closes)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                while self._head_revision < revision and not self._closed:
                    await self._changed.wait()

    def _add_waiter(self, waiter: asyncio.Future[bool]) -> None:
        waiters = self._waiters
        if len(waiters) >= self._prune_at:
            # waits that timed out or were cancelled stay listed until the next wake-up; in a quiet
            # cache that may be long, so drop them now and then
            waiters[:] = [w for w in waiters if not w.done()]
            self._prune_at = max(_PRUNE_MIN, 2 * len(waiters))
        waiters.append(waiter)

    def _low_seq(self) -> int:
        return max(self._head_seq - self._capacity, self._reset_seq)

    def _seek(self, revision: int) -> int:
        """Sequence number of the first ring entry with a revision above ``revision``."""
        lo, hi = self._low_seq(), self._head_seq
        ring, cap = self._ring, self._capacity
        while lo < hi:
            mid = (lo + hi) // 2
            entry = ring[mid % cap]
            assert entry is not None
            if entry.revision <= revision:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def _append(self, event: WatchEvent) -> None:
        index = prev_index = None
        if self._indexer is not None:
            index = self._index_of(event.kv)
            if event.prev is not None:
                prev_index = index if event.type is EventType.DELETE else self._index_of(event.prev)
        seq = self._head_seq
        slot = seq % self._capacity
        if seq - self._capacity >= self._reset_seq:
            evicted = self._ring[slot]
            assert evicted is not None
            self._start_revision = evicted.revision
        self._ring[slot] = _Entry(event, index, prev_index)
        self._head_seq = seq + 1
        self._head_revision = event.revision
        self._schedule_wake()

    def _index_of(self, kv: KeyValue) -> dict[str, str] | None:
        assert self._indexer is not None
        try:
            return self._indexer(kv.key, kv.value)
        except Exception:  # a bad value must not stop the cache; the key is just unindexed
            log.exception("watch cache indexer failed on %s", kv.key)
            return None

    def _schedule_wake(self) -> None:
        if not self._wake_scheduled:
            self._wake_scheduled = True
            self._loop.call_soon(self._wake)

    def _wake(self) -> None:
        self._wake_scheduled = False
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(True)

    def _restart(self, revision: int) -> None:
        """Drop the ring: the engine watch restarts at ``revision``."""
        self._reset_seq = self._head_seq
        self._start_revision = max(revision, self._start_revision)
        self._head_revision = max(revision, self._head_revision)
        self._schedule_wake()

    async def _feed(self, start: int) -> None:
        revision = start
        while not self._closed:
            watch: AsyncIterator[WatchEvent] = self._storage.watch(self._prefix, from_revision=revision)
            try:
                async for event in watch:
                    self._append(event)
                    revision = event.revision
                # The engine closed under us: end every watcher.
                self._engine_gone = True
                self._closed = True
                self._wake()
                return
            except RevisionCompactedError:
                log.warning("watch cache fell behind the engine at %d; restarting", revision)
                try:
                    current = await self._storage.current_revision()
                except Exception:
                    await asyncio.sleep(_RETRY_DELAY)
                    continue
                self._restart(current)
                revision = current
            except Exception as exc:  # resume from the last event seen: nothing is lost
                log.warning("watch cache lost the engine watch: %s; retrying", exc)
                await asyncio.sleep(_RETRY_DELAY)
            finally:
                aclose: Any = getattr(watch, "aclose", None)
                if aclose is not None:
                    with contextlib.suppress(Exception):
                        await aclose()
