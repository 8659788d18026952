"""Storage baseline for the benchmark: the API verbs' cost measured directly on an engine.

The API benchmark runs create / get / update / list through HTTP; this runs the same verbs on the
`Storage` underneath, with the same number of watchers attached, so the benchmark can print how
much of each verb's time the API layer adds (API ops/s divided by storage ops/s).

``python -m podvisor.storage.bench [--url sqlite:///tmp/x.sqlite] [--n 2000] [--watchers 100] [--no-cache]``
prints the numbers for one store.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable

from podvisor.storage.interface import Storage

__all__ = ["storage_baseline"]


def _configmap(namespace: str, name: str, generation: int) -> bytes:
    """A realistic ~1 KiB object, like the API benchmark's ConfigMaps."""
    doc = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": str(uuid.uuid4()),
            "labels": {"app": "bench", "generation": str(generation)},
            "creationTimestamp": "2025-01-01T00:00:00Z",
        },
        "data": {f"key{i}": "v" * 64 + str(generation) for i in range(10)},
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


async def _phase(
    name: str, count: int, concurrency: int, op: Callable[[int], Awaitable[object]], out: dict[str, float]
) -> None:
    """Run ``op(0..count-1)`` with ``concurrency`` workers; record ops/s, p50 and p99 in ms."""
    latencies: list[float] = []
    cursor = iter(range(count))

    async def worker() -> None:
        for i in cursor:
            t0 = time.perf_counter()
            await op(i)
            latencies.append(time.perf_counter() - t0)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
    elapsed = time.perf_counter() - start
    latencies.sort()
    out[f"{name}_ops_s"] = count / elapsed if elapsed > 0 else 0.0
    out[f"{name}_p50_ms"] = _percentile(latencies, 0.50) * 1000
    out[f"{name}_p99_ms"] = _percentile(latencies, 0.99) * 1000


async def storage_baseline(
    storage: Storage, n: int, watchers: int, *, concurrency: int = 16, list_size: int = 500
) -> dict[str, float]:
    """Create ``n`` ConfigMap-sized values, get each, update each (compare-and-swap), list pages of
    ``list_size`` (n // 10 lists, at least 10), then delete them, while ``watchers`` watches on the
    namespace prefix consume every event. Returns ``<verb>_ops_s``, ``<verb>_p50_ms``,
    ``<verb>_p99_ms`` for create/get/update/list/delete, plus ``watch_events_s`` (events delivered
    to all watchers per second over the whole run) and ``watchers``."""
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    prefix = f"/registry/core/configmaps/{namespace}/"
    keys = [f"{prefix}cm-{i:06d}" for i in range(n)]
    revisions: list[int] = [0] * n
    out: dict[str, float] = {"n": float(n), "watchers": float(watchers), "concurrency": float(concurrency)}
    expected_events = 3 * n  # create, update, delete
    delivered = [0] * watchers

    start_rev = await storage.current_revision()

    async def watch(slot: int) -> None:
        seen = 0
        watch_it = storage.watch(prefix, from_revision=start_rev)
        try:
            async for _ in watch_it:
                seen += 1
                delivered[slot] = seen
                if seen == expected_events:
                    return
        finally:
            aclose = getattr(watch_it, "aclose", None)
            if aclose is not None:
                await aclose()

    watch_tasks = [asyncio.create_task(watch(i)) for i in range(watchers)]
    t_start = time.perf_counter()
    try:

        async def create(i: int) -> None:
            revisions[i] = (await storage.create(keys[i], _configmap(namespace, f"cm-{i:06d}", 0))).mod_revision

        async def get(i: int) -> None:
            await storage.get(keys[i])

        async def update(i: int) -> None:
            value = _configmap(namespace, f"cm-{i:06d}", 1)
            revisions[i] = (await storage.update(keys[i], value, expected_revision=revisions[i])).mod_revision

        async def list_page(i: int) -> None:
            start_after = keys[(i * list_size) % n - 1] if (i * list_size) % n else None
            await storage.list(prefix, start_after=start_after, limit=list_size)

        async def delete(i: int) -> None:
            await storage.delete(keys[i], expected_revision=revisions[i])

        await _phase("create", n, concurrency, create, out)
        await _phase("get", n, concurrency, get, out)
        await _phase("update", n, concurrency, update, out)
        await _phase("list", max(10, n // 10), concurrency, list_page, out)
        await _phase("delete", n, concurrency, delete, out)
        if watch_tasks:
            await asyncio.wait_for(asyncio.gather(*watch_tasks), timeout=max(30.0, n / 50))
    finally:
        for task in watch_tasks:
            task.cancel()
        await asyncio.gather(*watch_tasks, return_exceptions=True)
    elapsed = time.perf_counter() - t_start
    out["watch_events_s"] = sum(delivered) / elapsed if elapsed > 0 else 0.0
    out["watch_events_missing"] = float(watchers * expected_events - sum(delivered))
    return out


async def _main(url: str, n: int, watchers: int, concurrency: int, cache: bool) -> None:
    from podvisor.storage import open_storage

    store = await open_storage(url, watch_cache=cache)
    try:
        result = await storage_baseline(store, n, watchers, concurrency=concurrency)
    finally:
        await store.close()
    for key, value in result.items():
        print(f"{key:24s} {value:12.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", default="", help="storage URL or path (default: a temporary SQLite file)")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--watchers", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--no-cache", action="store_true", help="measure the bare engine, no watch cache")
    args = parser.parse_args()
    url = args.url or os.path.join(tempfile.mkdtemp(prefix="pv-bench-"), "bench.sqlite")
    asyncio.run(_main(url, args.n, args.watchers, args.concurrency, not args.no_cache))


if __name__ == "__main__":
    main()
