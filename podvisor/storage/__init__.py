"""Podvisor's storage: one `Storage` protocol, two engines (SQLite embedded, etcd v3), and a watch
cache in front of either. `open_storage` turns a configuration string into a ready store, so the
rest of the control plane never names an engine.
"""

from __future__ import annotations

from pathlib import Path

from podvisor.storage.cacher import CacheWatcher, Indexer, WatchCache, field_indexer
from podvisor.storage.interface import (
    ConflictError,
    EventType,
    KeyExistsError,
    KeyNotFoundError,
    KeyValue,
    ListResult,
    RevisionCompactedError,
    Storage,
    StorageError,
    UnavailableError,
    WatchEvent,
)
from podvisor.storage.sqlite import DEFAULT_KEEP_REVISIONS, SQLiteStorage

__all__ = [
    "KeyValue",
    "ListResult",
    "EventType",
    "WatchEvent",
    "Storage",
    "StorageError",
    "KeyNotFoundError",
    "KeyExistsError",
    "ConflictError",
    "RevisionCompactedError",
    "UnavailableError",
    "SQLiteStorage",
    "WatchCache",
    "CacheWatcher",
    "Indexer",
    "field_indexer",
    "open_storage",
    "open_engine",
]


async def open_engine(url_or_path: str, *, keep_revisions: int | None = DEFAULT_KEEP_REVISIONS) -> Storage:
    """The bare engine named by ``url_or_path``:

    * ``sqlite:///abs/path/db.sqlite``, ``sqlite://relative.sqlite`` or a plain path: `SQLiteStorage`
      (``keep_revisions`` bounds its history);
    * ``etcd://host:port[,host:port...]``: `EtcdStorage` against etcd's v3 JSON gateway over HTTP
      (history is etcd's own: compact it with etcd's settings).
    """
    if url_or_path.startswith("etcd://"):
        from podvisor.storage.etcd import EtcdStorage  # aiohttp is only needed for etcd

        hosts = url_or_path.removeprefix("etcd://").strip("/")
        endpoints = [f"http://{h}" for h in hosts.split(",") if h]
        if not endpoints:
            raise ValueError(f"no etcd endpoint in {url_or_path!r}")
        return await EtcdStorage.open(endpoints)
    if url_or_path.startswith("sqlite://"):
        path = url_or_path.removeprefix("sqlite://")
    elif "://" in url_or_path:
        raise ValueError(f"unknown storage URL scheme in {url_or_path!r} (sqlite:// or etcd://)")
    else:
        path = url_or_path
    if not path:
        raise ValueError(f"no database path in {url_or_path!r}")
    return await SQLiteStorage.open(Path(path), keep_revisions=keep_revisions)


async def open_storage(
    url_or_path: str,
    *,
    watch_cache: bool = True,
    keep_revisions: int | None = DEFAULT_KEEP_REVISIONS,
    cache_capacity: int | None = None,
    indexer: Indexer | None = None,
) -> Storage:
    """The store the API server uses: the engine named by ``url_or_path`` (see `open_engine`),
    wrapped in a `WatchCache` unless ``watch_cache`` is false. Closing it closes the engine."""
    engine = await open_engine(url_or_path, keep_revisions=keep_revisions)
    if not watch_cache:
        return engine
    try:
        if cache_capacity is None:
            return await WatchCache.open(engine, indexer=indexer)
        return await WatchCache.open(engine, capacity=cache_capacity, indexer=indexer)
    except BaseException:
        await engine.close()
        raise
