"""etcd-only behaviour: reaching it by URL, and finding its compaction point (etcd does not say)."""

from __future__ import annotations

from podvisor.storage import WatchCache, open_storage
from podvisor.storage.etcd import EtcdStorage

from .conftest import EtcdServer


async def test_open_storage_etcd_url(etcd_server: EtcdServer) -> None:
    store = await open_storage("etcd://" + etcd_server.url.removeprefix("http://"))
    assert isinstance(store, WatchCache) and isinstance(store.storage, EtcdStorage)
    kv = await store.create("/etcd-url/k", b"v")
    assert await store.get("/etcd-url/k") == kv
    await store.delete("/etcd-url/k")
    await store.close()


async def test_compacted_revision_is_found(etcd_server: EtcdServer) -> None:
    store = await EtcdStorage.open([etcd_server.url])
    try:
        kv = await store.create("/etcd-cmp/k", b"0")
        for i in range(3):
            kv = await store.update("/etcd-cmp/k", b"%d" % i, expected_revision=kv.mod_revision)
        await store.compact(kv.mod_revision - 1)
        assert await store.compacted_revision() == kv.mod_revision - 1
    finally:
        await store.close()
