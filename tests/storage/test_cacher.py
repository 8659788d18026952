"""What the watch cache adds on top of an engine: one engine watch for all watchers, a bounded ring
(slow watchers are cut off, not buffered for), index triggers, and progress for bookmarks."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from podvisor.storage import (
    EventType,
    RevisionCompactedError,
    SQLiteStorage,
    WatchCache,
    WatchEvent,
    field_indexer,
    open_storage,
)
from podvisor.storage._sqlite_watch import SQLiteWatch

PODS = "/registry/core/pods/"


class CountingSQLite(SQLiteStorage):
    """The real engine, counting the watches opened on it."""

    watches = 0

    def watch(self, prefix: str, *, from_revision: int) -> SQLiteWatch:
        type(self).watches += 1
        return super().watch(prefix, from_revision=from_revision)


def pod(node: str = "") -> bytes:
    return json.dumps({"spec": {"nodeName": node}}).encode()


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[SQLiteStorage]:
    store = await SQLiteStorage.open(tmp_path / "cache.sqlite")
    yield store
    await store.close()


async def collect(watch: AsyncIterator[WatchEvent], n: int) -> list[WatchEvent]:
    out = []
    async for ev in watch:
        out.append(ev)
        if len(out) == n:
            break
    return out


async def test_hundreds_of_watchers_share_one_engine_watch(tmp_path: Path) -> None:
    CountingSQLite.watches = 0
    engine = await CountingSQLite.open(tmp_path / "count.sqlite")
    cache = await WatchCache.open(engine)
    try:
        rev = await cache.current_revision()
        watchers = [cache.watch(f"/registry/ns{i % 10}/", from_revision=rev) for i in range(150)]
        tasks = [asyncio.create_task(collect(w, 3)) for w in watchers]
        for ns in range(10):
            for j in range(3):
                await cache.create(f"/registry/ns{ns}/o{j}", b"{}")
        results = await asyncio.wait_for(asyncio.gather(*tasks), 10)
        for i, events in enumerate(results):
            assert [e.kv.key for e in events] == [f"/registry/ns{i % 10}/o{j}" for j in range(3)]
        assert CountingSQLite.watches == 1
    finally:
        await cache.close()


async def test_slow_watcher_is_cut_off_and_fast_ones_are_not(engine: SQLiteStorage) -> None:
    cache = await WatchCache.open(engine, capacity=16)
    rev = await cache.current_revision()
    slow = cache.watch("/k/", from_revision=rev)
    fast = cache.watch("/k/", from_revision=rev)
    fast_events: list[WatchEvent] = []

    async def keep_up() -> None:
        async for ev in fast:
            fast_events.append(ev)
            if len(fast_events) == 40:
                return

    reader = asyncio.create_task(keep_up())
    first = await cache.create("/k/first", b"1")
    assert (await anext(slow)).kv == first
    for i in range(39):
        await cache.create(f"/k/{i}", b"x")
        await asyncio.sleep(0)  # the fast reader keeps pace
    await asyncio.wait_for(reader, 10)
    assert len(fast_events) == 40
    with pytest.raises(RevisionCompactedError):
        await anext(slow)
    with pytest.raises(StopAsyncIteration):
        await anext(slow)  # terminated for good
    await cache.close()


async def test_watch_older_than_the_ring_is_compacted(engine: SQLiteStorage) -> None:
    for i in range(30):
        await engine.create(f"/old/{i}", b"x")
    cache = await WatchCache.open(engine, capacity=10)
    current = await cache.current_revision()
    assert cache.oldest_revision() == current - 10  # prefilled from the engine's history
    events = await collect(cache.watch("/old/", from_revision=current - 10), 10)
    assert [e.revision for e in events] == list(range(current - 9, current + 1))
    with pytest.raises(RevisionCompactedError) as err:
        await anext(cache.watch("/old/", from_revision=current - 11))
    assert err.value.oldest == current - 10
    await cache.close()


async def test_index_trigger_delivers_a_nodes_pods_only(engine: SQLiteStorage) -> None:
    cache = await WatchCache.open(engine, indexer=field_indexer(PODS, "spec.nodeName"))
    rev = await cache.current_revision()
    node_a = cache.watch(PODS, from_revision=rev, index=("spec.nodeName", "node-a"))
    await cache.create(PODS + "ns/on-b", pod("node-b"))
    pending = await cache.create(PODS + "ns/p1", pod(""))
    bound = await cache.update(PODS + "ns/p1", pod("node-a"), expected_revision=pending.mod_revision)
    await cache.create("/registry/core/configmaps/ns/c", b"{}")
    mine = await cache.create(PODS + "ns/p2", pod("node-a"))
    gone = await cache.delete(PODS + "ns/p1")
    events = await asyncio.wait_for(collect(node_a, 3), 10)
    assert [(e.type, e.kv.key, e.revision) for e in events] == [
        (EventType.PUT, PODS + "ns/p1", bound.mod_revision),  # arrives by binding
        (EventType.PUT, PODS + "ns/p2", mine.mod_revision),
        (EventType.DELETE, PODS + "ns/p1", gone.mod_revision),
    ]
    await cache.close()


async def test_index_never_hides_what_it_cannot_judge(engine: SQLiteStorage) -> None:
    """No indexer, or objects the indexer does not index: the index does not filter them."""
    plain = await WatchCache.open(engine)
    rev = await plain.current_revision()
    watch = plain.watch(PODS, from_revision=rev, index=("spec.nodeName", "node-a"))
    kv = await plain.create(PODS + "ns/x", pod("node-b"))
    assert (await asyncio.wait_for(anext(watch), 10)).kv == kv
    await plain.close()


async def test_progress_revision_for_bookmarks(engine: SQLiteStorage) -> None:
    cache = await WatchCache.open(engine)
    rev = await cache.current_revision()
    watcher = cache.watch("/quiet/", from_revision=rev)
    for i in range(5):
        await cache.create(f"/busy/{i}", b"x")
    current = await cache.current_revision()
    for _ in range(100):
        if cache.progress_revision() == current:
            break
        await asyncio.sleep(0.01)
    assert cache.progress_revision() == current
    # The quiet watcher has seen everything relevant up to the head once it has looked.
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(anext(watcher), 0.05)
    assert watcher.progress_revision() == current
    mine = await cache.create("/quiet/a", b"x")
    await cache.create("/busy/late", b"x")
    assert (await asyncio.wait_for(anext(watcher), 10)).kv == mine
    assert watcher.progress_revision() >= mine.mod_revision
    await cache.close()


async def test_open_storage_urls(tmp_path: Path) -> None:
    for url in (f"sqlite://{tmp_path}/a.sqlite", str(tmp_path / "b.sqlite")):
        store = await open_storage(url)
        assert isinstance(store, WatchCache)
        kv = await store.create("/x", b"1")
        assert (await store.get("/x")) == kv
        await store.close()
    bare = await open_storage(f"sqlite://{tmp_path}/a.sqlite", watch_cache=False)
    assert isinstance(bare, SQLiteStorage) and (await bare.get("/x")).value == b"1"
    await bare.close()
    with pytest.raises(ValueError):
        await open_storage("mysql://nope")
