"""The storage baseline the benchmark prints: it runs every verb and every watcher sees every event."""

from __future__ import annotations

from pathlib import Path

from podvisor.storage import open_storage
from podvisor.storage.bench import storage_baseline


async def test_storage_baseline_reports_every_verb(tmp_path: Path) -> None:
    store = await open_storage(str(tmp_path / "bench.sqlite"))
    try:
        result = await storage_baseline(store, 60, 5, concurrency=4, list_size=20)
    finally:
        await store.close()
    for verb in ("create", "get", "update", "list", "delete"):
        assert result[f"{verb}_ops_s"] > 0
        assert 0 < result[f"{verb}_p50_ms"] <= result[f"{verb}_p99_ms"]
    assert result["watch_events_missing"] == 0
    assert result["watchers"] == 5
