"""The API server's shortcuts give what the long ways give: JSON lists passed through from storage,
request bodies decoded without rebuilding, watch-cache cursors drained without waiting."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from podvisor.apiserver.negotiation import decode
from podvisor.apiserver.registry import ResourceRegistry, bootstrap, build_registry
from podvisor.apiserver.rest import ListOptions, RequestOptions, UserInfo
from podvisor.schema.bodies import OBJECT_MEDIA_TYPES, PATCH_MEDIA_TYPES, decode_body
from podvisor.storage.cacher import WatchCache
from podvisor.storage.interface import RevisionCompactedError
from podvisor.storage.sqlite import SQLiteStorage


def opts() -> RequestOptions:
    return RequestOptions(user=UserInfo(name="alice"), field_manager="test")


@pytest.fixture
async def storage(tmp_path: Any) -> AsyncIterator[SQLiteStorage]:
    st = await SQLiteStorage.open(tmp_path / "state.db", keep_revisions=None)
    yield st
    await st.close()


@pytest.fixture
async def registry(storage: SQLiteStorage) -> ResourceRegistry:
    reg = await build_registry(storage, bookmark_interval=0.1)
    await bootstrap(reg)
    return reg


async def test_json_list_is_the_list(registry: ResourceRegistry) -> None:
    cms = registry.store("", "configmaps")
    # the layouts clients send: kind first (kubectl), apiVersion first, neither (left to the server),
    # metadata not first, a "resourceVersion" key in the data, and empty metadata apart from the name
    bodies: list[dict[str, Any]] = [
        {"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "a", "labels": {"x": "1"}}, "data": {"k": "é"}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "b"}, "data": {"k": "v"}},
        {"metadata": {"name": "c"}, "data": {"k": "v"}},
        {"data": {"k": "v"}, "metadata": {"name": "d"}},
        {"metadata": {"name": "e"}, "data": {"resourceVersion": "1"}},
    ]
    for body in bodies:
        await cms.create("default", body, opts())
    await cms.update("default", "b", {**bodies[1], "data": {"k": "w"}}, opts())

    for list_opts in (ListOptions(), ListOptions(limit=2)):
        whole = await cms.list("default", list_opts)
        encoded = await cms.list_json("default", list_opts)
        assert encoded is not None
        assert json.loads(encoded) == whole
        assert b'"metadata":{"resourceVersion":' in encoded  # stored bytes passed through, version spliced in
    everywhere = await cms.list("", ListOptions())
    assert json.loads(await cms.list_json("", ListOptions()) or b"") == everywhere
    assert len(everywhere["items"]) >= len(bodies)


async def test_json_list_declines_what_needs_decoding(registry: ResourceRegistry) -> None:
    cms = registry.store("", "configmaps")
    assert await cms.list_json("default", ListOptions(label_selector="x=1")) is None
    assert await cms.list_json("", ListOptions(field_selector="metadata.name=a")) is None
    events = registry.store("events.k8s.io", "events")  # stored as core events, converted on the way out
    assert await events.list_json("default", ListOptions()) is None


async def test_watch_through_the_watch_cache(storage: SQLiteStorage) -> None:
    # as `podvisor up` serves: the registry on a WatchCache, whose cursors the watch drains
    cache = await WatchCache.open(storage)
    try:
        reg = await build_registry(cache, bookmark_interval=0.1)
        await bootstrap(reg)
        cms = reg.store("", "configmaps")
        first = await cms.create("default", {"metadata": {"name": "a"}, "data": {"k": "0"}}, opts())
        rv = first.body["metadata"]["resourceVersion"]
        it = cms.watch("default", ListOptions(resource_version=rv, allow_bookmarks=True, timeout_seconds=5))
        pending = asyncio.ensure_future(anext(it))
        await asyncio.sleep(0.01)
        for i in range(1, 6):  # a burst, read in one go
            await cms.update("default", "a", {"metadata": {"name": "a"}, "data": {"k": str(i)}}, opts())
        events = [await pending] + [await anext(it) for _ in range(4)]
        assert [e["type"] for e in events] == ["MODIFIED"] * 5
        assert [e["object"]["data"]["k"] for e in events] == ["1", "2", "3", "4", "5"]
        last = int(events[-1]["object"]["metadata"]["resourceVersion"])
        await cms.create("kube-system", {"metadata": {"name": "b"}}, opts())  # another namespace: not ours
        tick = await asyncio.wait_for(anext(it), 5)  # idle: a bookmark at the cache's newest revision
        assert tick["type"] == "BOOKMARK"
        assert int(tick["object"]["metadata"]["resourceVersion"]) > last
        await it.aclose()  # type: ignore[attr-defined]

        short = cms.watch("default", ListOptions(resource_version=str(last), timeout_seconds=1))
        async with asyncio.timeout(5):
            assert [e async for e in short] == []  # ends by its timeout, cleanly
    finally:
        await cache.close()


def test_decode_matches_the_full_decoder() -> None:
    bodies = [b'{"a":1,"b":{"c":[1,{"d":null}]}}', b'{"a":1,"a":2}', b'[{"a":{"b":1,"b":2}}]', b'{"a":NaN}',
              b"", b"{", b"\xff{}", b'{"x":"\\u00e9"}', '{"x":"é"}'.encode(), b'{"a":1} x', b"null",
              "\ufeff{}".encode()]
    for media in ("application/json", "application/json; charset=utf-8", "application/merge-patch+json",
                  "application/yaml"):
        for accepted in (OBJECT_MEDIA_TYPES, PATCH_MEDIA_TYPES):
            for body in bodies:
                assert _outcome(decode, body, media, accepted) == _outcome(decode_body, body, media, accepted)


def _outcome(fn: Any, body: bytes, media: str, accepted: tuple[str, ...]) -> Any:
    try:
        d = fn(body, media, accepted=accepted)
    except Exception as exc:
        return type(exc).__name__, str(exc)
    return d.obj, d.media_type, d.duplicates, d.strict_errors


async def test_cache_cursor_drains_without_waiting_and_waits_with_a_timeout(storage: SQLiteStorage) -> None:
    cache = await WatchCache.open(storage, capacity=4)
    try:
        start = await cache.current_revision()
        watcher = cache.watch("/a/", from_revision=start)
        assert watcher.next_nowait() is None
        assert await watcher.wait(0.01) is False  # nothing came
        waiting = asyncio.ensure_future(watcher.wait(5))
        for i in range(3):
            await cache.create(f"/a/{i}", b"1")
        await cache.create("/b/x", b"1")
        assert await waiting is True
        await asyncio.sleep(0.05)  # let the engine's events reach the ring
        got = []
        while (ev := watcher.next_nowait()) is not None:
            got.append(ev.kv.key)
        assert got == ["/a/0", "/a/1", "/a/2"]  # in order, others' keys skipped

        late = cache.watch("/a/", from_revision=start)
        for i in range(3, 6):
            await cache.create(f"/a/{i}", b"1")
        await asyncio.sleep(0.05)
        with pytest.raises(RevisionCompactedError):  # the ring moved past it, as __anext__ says
            late.next_nowait()
    finally:
        await cache.close()
    with pytest.raises(StopAsyncIteration):  # after what the ring still held for it
        while watcher.next_nowait() is not None:
            pass
    assert await watcher.wait(5) is True  # a closed cache never keeps a watcher waiting
