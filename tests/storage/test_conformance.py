"""The storage contract, checked the same way against every engine (see conftest.ENGINES).

Nothing here assumes absolute revision numbers (etcd starts at 1, SQLite at 0): only that every
successful write adds exactly one, and that the revision a write returns is the one reads and
watches report.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from podvisor.storage import (
    ConflictError,
    EventType,
    KeyExistsError,
    KeyNotFoundError,
    RevisionCompactedError,
    Storage,
    StorageError,
    UnavailableError,
    WatchEvent,
)

from .conftest import Harness


async def take(store: Storage, prefix: str, from_revision: int, n: int, *, within: float = 10.0) -> list[WatchEvent]:
    """The first ``n`` events of a watch."""
    events: list[WatchEvent] = []
    watch = store.watch(prefix, from_revision=from_revision)

    async def run() -> None:
        async for ev in watch:
            events.append(ev)
            if len(events) == n:
                return

    try:
        await asyncio.wait_for(run(), within)
    finally:
        aclose = getattr(watch, "aclose", None)
        if aclose is not None:
            await aclose()
    return events


# -- get / create ---------------------------------------------------------------------------


async def test_create_then_get(store: Storage, harness: Harness) -> None:
    key = harness.key("core", "configmaps", "default", "c1")
    before = await store.current_revision()
    kv = await store.create(key, b'{"data":1}')
    assert kv.key == key and kv.value == b'{"data":1}'
    assert kv.mod_revision == kv.create_revision == before + 1
    assert await store.get(key) == kv
    assert await store.current_revision() == kv.mod_revision


async def test_get_missing_is_not_found(store: Storage, harness: Harness) -> None:
    with pytest.raises(KeyNotFoundError) as err:
        await store.get(harness.key("nope"))
    assert err.value.key == harness.key("nope")


async def test_create_existing_fails_and_costs_no_revision(store: Storage, harness: Harness) -> None:
    key = harness.key("a")
    kv = await store.create(key, b"1")
    with pytest.raises(KeyExistsError):
        await store.create(key, b"2")
    assert await store.current_revision() == kv.mod_revision
    assert (await store.get(key)).value == b"1"


async def test_values_are_opaque_bytes(store: Storage, harness: Harness) -> None:
    blob = bytes(range(256)) * 64 + "ünïcode ✓".encode()
    key = harness.key("core", "secrets", "ns", "bin")
    await store.create(key, blob)
    assert (await store.get(key)).value == blob
    empty = harness.key("core", "secrets", "ns", "empty")
    await store.create(empty, b"")
    assert (await store.get(empty)).value == b""


# -- update / delete ------------------------------------------------------------------------


async def test_update_compare_and_swap(store: Storage, harness: Harness) -> None:
    key = harness.key("k")
    v1 = await store.create(key, b"v1")
    v2 = await store.update(key, b"v2", expected_revision=v1.mod_revision)
    assert v2.mod_revision == v1.mod_revision + 1
    assert v2.create_revision == v1.create_revision
    assert await store.get(key) == v2

    with pytest.raises(ConflictError) as err:
        await store.update(key, b"stale", expected_revision=v1.mod_revision)
    assert err.value.current == v2  # callers retry from what is there now
    assert await store.current_revision() == v2.mod_revision
    assert (await store.get(key)).value == b"v2"


async def test_update_missing_is_not_found(store: Storage, harness: Harness) -> None:
    with pytest.raises(KeyNotFoundError):
        await store.update(harness.key("ghost"), b"x", expected_revision=1)


async def test_delete_unconditional_and_conditional(store: Storage, harness: Harness) -> None:
    a, b = harness.key("a"), harness.key("b")
    ka = await store.create(a, b"A")
    kb = await store.create(b, b"B")

    gone = await store.delete(a)
    assert gone.key == a and gone.value == b"A"
    assert gone.create_revision == ka.create_revision
    assert gone.mod_revision == kb.mod_revision + 1  # the deleting revision
    with pytest.raises(KeyNotFoundError):
        await store.get(a)
    with pytest.raises(KeyNotFoundError):
        await store.delete(a)

    with pytest.raises(ConflictError) as err:
        await store.delete(b, expected_revision=kb.mod_revision - 1)
    assert err.value.current == kb
    assert await store.get(b) == kb
    gone_b = await store.delete(b, expected_revision=kb.mod_revision)
    assert gone_b.mod_revision == gone.mod_revision + 1
    assert await store.current_revision() == gone_b.mod_revision


async def test_recreate_after_delete_has_new_create_revision(store: Storage, harness: Harness) -> None:
    key = harness.key("again")
    first = await store.create(key, b"1")
    await store.delete(key)
    second = await store.create(key, b"2")
    assert second.create_revision == second.mod_revision > first.create_revision
    assert await store.get(key) == second


async def test_every_write_adds_exactly_one_revision(store: Storage, harness: Harness) -> None:
    rev = await store.current_revision()
    seen = []
    key = harness.key("counter")
    kv = await store.create(key, b"0")
    seen.append(kv.mod_revision)
    for i in range(1, 6):
        kv = await store.update(key, str(i).encode(), expected_revision=kv.mod_revision)
        seen.append(kv.mod_revision)
    with pytest.raises(ConflictError):
        await store.update(key, b"x", expected_revision=1)
    with pytest.raises(KeyExistsError):
        await store.create(key, b"x")
    seen.append((await store.create(harness.key("other"), b"o")).mod_revision)
    seen.append((await store.delete(key)).mod_revision)
    assert seen == list(range(rev + 1, rev + 1 + len(seen)))
    assert await store.current_revision() == seen[-1]


# -- list -----------------------------------------------------------------------------------


async def test_list_prefix_in_key_order(store: Storage, harness: Harness) -> None:
    pods = harness.key("core", "pods", "")
    for name in ["ns1/b", "ns1/a", "ns2/c", "ns10/d"]:
        await store.create(pods + name, name.encode())
    # Keys that share a leading string but not the prefix must not leak in.
    await store.create(harness.key("core", "podsecurity", "x"), b"no")
    await store.create(harness.key("core", "pods"), b"no")

    result = await store.list(pods)
    assert [kv.key for kv in result.items] == [pods + n for n in ["ns1/a", "ns1/b", "ns10/d", "ns2/c"]]
    assert result.revision == await store.current_revision()
    assert result.more is False
    assert [kv.key for kv in (await store.list(pods + "ns1/")).items] == [pods + "ns1/a", pods + "ns1/b"]
    assert await store.count(pods) == 4
    assert await store.count(pods + "ns1/") == 2
    assert (await store.list(harness.key("nothing", ""))).items == []
    assert await store.count(harness.key("nothing", "")) == 0


async def test_list_pagination(store: Storage, harness: Harness) -> None:
    prefix = harness.key("cms", "")
    names = [f"{i:03d}" for i in range(11)]
    for n in names:
        await store.create(prefix + n, n.encode())
    first = await store.list(prefix, limit=4)
    assert [kv.key for kv in first.items] == [prefix + n for n in names[:4]]
    assert first.more is True
    # A write between pages must not show in later pages read at the first page's revision.
    await store.create(prefix + "005a", b"late")
    await store.delete(prefix + "006")
    got = [kv.key for kv in first.items]
    page = first
    while page.more:
        page = await store.list(prefix, start_after=page.items[-1].key, limit=4, revision=first.revision)
        assert page.revision == first.revision
        got += [kv.key for kv in page.items]
    assert got == [prefix + n for n in names]
    exact = await store.list(prefix, limit=len(names) + 1)
    assert exact.more is False and len(exact.items) == len(names)  # 11 originals + 005a - 006
    assert (await store.list(prefix, limit=len(names))).more is False
    after_last = await store.list(prefix, start_after=prefix + "999")
    assert after_last.items == [] and after_last.more is False


async def test_list_at_past_revision(store: Storage, harness: Harness) -> None:
    prefix = harness.key("hist", "")
    a1 = await store.create(prefix + "a", b"a1")
    b1 = await store.create(prefix + "b", b"b1")
    a2 = await store.update(prefix + "a", b"a2", expected_revision=a1.mod_revision)
    gone = await store.delete(prefix + "b")
    a3 = await store.create(prefix + "c", b"c1")

    def view(result: object) -> dict[str, bytes]:
        return {kv.key.removeprefix(prefix): kv.value for kv in result.items}  # type: ignore[attr-defined]

    assert view(await store.list(prefix, revision=a1.mod_revision)) == {"a": b"a1"}
    at_b1 = await store.list(prefix, revision=b1.mod_revision)
    assert view(at_b1) == {"a": b"a1", "b": b"b1"} and at_b1.revision == b1.mod_revision
    assert view(await store.list(prefix, revision=a2.mod_revision)) == {"a": b"a2", "b": b"b1"}
    assert view(await store.list(prefix, revision=gone.mod_revision)) == {"a": b"a2"}
    assert view(await store.list(prefix, revision=a3.mod_revision)) == {"a": b"a2", "c": b"c1"}
    old = await store.list(prefix, revision=a2.mod_revision)
    assert [(kv.create_revision, kv.mod_revision) for kv in old.items] == [
        (a1.create_revision, a2.mod_revision),
        (b1.create_revision, b1.mod_revision),
    ]
    page = await store.list(prefix, revision=a2.mod_revision, limit=1)
    assert view(page) == {"a": b"a2"} and page.more is True


async def test_list_at_future_revision_fails(store: Storage, harness: Harness) -> None:
    current = await store.current_revision()
    with pytest.raises(StorageError):
        await store.list(harness.key(""), revision=current + 1000)


# -- watch ----------------------------------------------------------------------------------


async def test_watch_replays_then_goes_live(store: Storage, harness: Harness) -> None:
    prefix = harness.key("w", "")
    start = await store.current_revision()
    v1 = await store.create(prefix + "x", b"1")
    v2 = await store.update(prefix + "x", b"2", expected_revision=v1.mod_revision)
    await store.create(harness.key("elsewhere"), b"not watched")

    got: list[WatchEvent] = []
    watch = store.watch(prefix, from_revision=start)
    it = aiter(watch)
    got.append(await asyncio.wait_for(anext(it), 10))
    got.append(await asyncio.wait_for(anext(it), 10))
    # Now live.
    v3 = await store.create(prefix + "y", b"3")
    gone = await store.delete(prefix + "x")
    got.append(await asyncio.wait_for(anext(it), 10))
    got.append(await asyncio.wait_for(anext(it), 10))
    await watch.aclose()  # type: ignore[attr-defined]

    created, updated, made_y, deleted = got
    assert created.type is EventType.PUT and created.prev is None and created.kv == v1
    assert created.revision == v1.mod_revision
    assert updated.type is EventType.PUT and updated.kv == v2 and updated.prev == v1
    assert made_y.kv == v3 and made_y.prev is None
    assert deleted.type is EventType.DELETE and deleted.revision == gone.mod_revision
    assert deleted.kv.key == prefix + "x" and deleted.kv.value == b"2"
    assert deleted.kv.mod_revision == gone.mod_revision
    assert deleted.prev == v2


async def test_watch_from_revision_skips_earlier_events(store: Storage, harness: Harness) -> None:
    prefix = harness.key("skip", "")
    await store.create(prefix + "a", b"a")
    mid = await store.create(prefix + "b", b"b")
    late = await store.create(prefix + "c", b"c")
    events = await take(store, prefix, mid.mod_revision, 1)
    assert [e.kv for e in events] == [late]


async def test_watch_from_current_sees_only_new_events(store: Storage, harness: Harness) -> None:
    prefix = harness.key("live", "")
    await store.create(prefix + "old", b"old")
    rev = await store.current_revision()

    async def write_later() -> None:
        await asyncio.sleep(0.05)
        await store.create(prefix + "new", b"new")

    writer = asyncio.create_task(write_later())
    events = await take(store, prefix, rev, 1)
    await writer
    assert [e.kv.key for e in events] == [prefix + "new"]


async def test_watch_survives_cancelled_next(store: Storage, harness: Harness) -> None:
    """The API layer waits for the next event with a timeout (to send bookmarks): a timed-out wait
    must not lose or repeat events."""
    prefix = harness.key("bm", "")
    rev = await store.current_revision()
    watch = store.watch(prefix, from_revision=rev)
    it = aiter(watch)
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(anext(it), 0.05)
    a = await store.create(prefix + "a", b"a")
    b = await store.create(prefix + "b", b"b")
    assert (await asyncio.wait_for(anext(it), 10)).kv == a
    assert (await asyncio.wait_for(anext(it), 10)).kv == b
    await watch.aclose()  # type: ignore[attr-defined]


async def test_compacted_revisions_are_refused(store: Storage, harness: Harness) -> None:
    prefix = harness.key("cmp", "")
    k = await store.create(prefix + "k", b"0")
    for i in range(1, 5):
        k = await store.update(prefix + "k", str(i).encode(), expected_revision=k.mod_revision)
    gone = await store.create(prefix + "gone", b"g")
    await store.delete(prefix + "gone")
    compact_at = k.mod_revision
    await harness.compact(store, compact_at)

    with pytest.raises(RevisionCompactedError):
        await store.list(prefix, revision=compact_at - 1)
    with pytest.raises(RevisionCompactedError):
        await take(store, prefix, compact_at - 2, 1)

    # At and after the compaction revision everything is still there.
    at = await store.list(prefix, revision=compact_at)
    assert [(kv.key, kv.value) for kv in at.items] == [(prefix + "k", b"4")]
    events = await take(store, prefix, compact_at, 2)
    assert [e.type for e in events] == [EventType.PUT, EventType.DELETE]
    assert events[0].kv == gone and events[1].prev == gone
    assert await store.get(prefix + "k") == k


async def test_many_concurrent_watchers_see_every_event_in_order(store: Storage, harness: Harness) -> None:
    prefix = harness.key("fan", "")
    rev = await store.current_revision()
    n_watchers, n_writes = 120, 40
    tasks = [asyncio.create_task(take(store, prefix, rev, n_writes, within=30)) for _ in range(n_watchers)]
    await asyncio.sleep(0.05)
    written = []
    for i in range(n_writes):
        written.append(await store.create(prefix + f"{i:03d}", b"%d" % i))
    results = await asyncio.gather(*tasks)
    for events in results:
        assert [e.kv for e in events] == written


async def test_concurrent_conflicting_writers_lose_nothing(store: Storage, harness: Harness) -> None:
    """Many writers increment one counter with read-modify-CAS retries: exactly one wins per
    revision, and every increment lands once."""
    key = harness.key("counter")
    start = await store.create(key, json.dumps({"n": 0, "by": []}).encode())
    writers, per_writer = 8, 10
    wins: list[int] = []

    async def writer(w: int) -> None:
        for _ in range(per_writer):
            while True:
                cur = await store.get(key)
                doc = json.loads(cur.value)
                doc["n"] += 1
                doc["by"].append(w)
                try:
                    kv = await store.update(key, json.dumps(doc).encode(), expected_revision=cur.mod_revision)
                except ConflictError as err:
                    assert err.current is not None and err.current.mod_revision > cur.mod_revision
                    continue
                wins.append(kv.mod_revision)
                break

    await asyncio.gather(*(writer(w) for w in range(writers)))
    total = writers * per_writer
    final = json.loads((await store.get(key)).value)
    assert final["n"] == total
    assert sorted(final["by"]) == sorted(w for w in range(writers) for _ in range(per_writer))
    assert sorted(wins) == list(range(start.mod_revision + 1, start.mod_revision + 1 + total))
    # The history tells the same story: each event's value follows its predecessor by one.
    events = await take(store, key, start.mod_revision, total)
    for n, ev in enumerate(events, start=1):
        assert json.loads(ev.kv.value)["n"] == n
        assert ev.prev is not None and json.loads(ev.prev.value)["n"] == n - 1


async def test_concurrent_creates_of_one_key_have_one_winner(store: Storage, harness: Harness) -> None:
    key = harness.key("race")
    rev = await store.current_revision()
    results = await asyncio.gather(*(store.create(key, b"%d" % i) for i in range(20)), return_exceptions=True)
    winners = [r for r in results if not isinstance(r, BaseException)]
    assert len(winners) == 1
    assert all(isinstance(r, KeyExistsError) for r in results if isinstance(r, BaseException))
    assert await store.current_revision() == rev + 1
    assert await store.get(key) == winners[0]


# -- durability -----------------------------------------------------------------------------


async def test_values_and_revision_survive_reopen(harness: Harness) -> None:
    store = await harness.open()
    prefix = harness.key("durable", "")
    await store.create(prefix + "a", b"A")
    b = await store.create(prefix + "b", b"B")
    b = await store.update(prefix + "b", b"B2", expected_revision=b.mod_revision)
    await store.create(prefix + "c", b"C")
    last = await store.delete(prefix + "c")
    await store.close()
    with pytest.raises(UnavailableError):
        await store.get(prefix + "a")

    again = await harness.open()
    assert await again.current_revision() == last.mod_revision
    assert (await again.get(prefix + "a")).value == b"A"
    assert await again.get(prefix + "b") == b
    with pytest.raises(KeyNotFoundError):
        await again.get(prefix + "c")
    nxt = await again.create(prefix + "d", b"D")
    assert nxt.mod_revision == last.mod_revision + 1
    assert [kv.key for kv in (await again.list(prefix)).items] == [prefix + "a", prefix + "b", prefix + "d"]


async def test_list_then_watch_rebuilds_state_under_concurrent_writes(store: Storage, harness: Harness) -> None:
    """The API layer's resourceVersion=0 watch: list (its revision R), then watch from R. Applying
    the events to the listed state must give exactly the final state: nothing missed, nothing
    applied twice."""
    prefix = harness.key("flow", "")
    for i in range(10):
        await store.create(prefix + f"{i:02d}", b"0")
    done = asyncio.Event()

    async def churn() -> None:
        for step in range(1, 61):
            key = prefix + f"{step % 12:02d}"
            try:
                cur = await store.get(key)
            except KeyNotFoundError:
                await store.create(key, b"%d" % step)
                continue
            if step % 9 == 0:
                await store.delete(key, expected_revision=cur.mod_revision)
            else:
                await store.update(key, b"%d" % step, expected_revision=cur.mod_revision)
            if step == 20:
                done.set()
        done.set()

    writer = asyncio.create_task(churn())
    await done.wait()
    listed = await store.list(prefix)
    state = {kv.key: kv for kv in listed.items}
    watch = store.watch(prefix, from_revision=listed.revision)
    await writer
    final_rev = await store.current_revision()
    last = listed.revision
    while last < final_rev:
        ev = await asyncio.wait_for(anext(aiter(watch)), 10)
        assert ev.revision > last
        last = ev.revision
        if ev.type is EventType.PUT:
            assert (ev.prev is None) == (ev.kv.key not in state)
            state[ev.kv.key] = ev.kv
        else:
            assert state.pop(ev.kv.key) == ev.prev
    await watch.aclose()  # type: ignore[attr-defined]
    final = await store.list(prefix)
    assert state == {kv.key: kv for kv in final.items}


async def test_list_start_after_past_the_prefix_is_empty(store: Storage, harness: Harness) -> None:
    await store.create(harness.key("p", "a"), b"a")
    await store.create(harness.key("q", "a"), b"q")
    page = await store.list(harness.key("p", ""), start_after=harness.key("pz"))
    assert page.items == [] and page.more is False
    page = await store.list(harness.key("p", ""), start_after=harness.key("a"))  # before the prefix
    assert [kv.key for kv in page.items] == [harness.key("p", "a")]
