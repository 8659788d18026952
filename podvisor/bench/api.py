"""`podvisor bench api`: the API server under load, from a separate process, against its storage's limit.

The running server (found through the kubeconfig, as kubectl finds it) gets N ConfigMaps created,
read, updated and listed over HTTPS by a few concurrent clients while W watchers follow the namespace;
each verb reports ops/s and p50/p99 latency, and the watchers report how long an update takes to reach
them. In the same run the same verbs go straight to a fresh SQLite engine (the storage every write of
the server ends in), so the headline ratio says how close the API server comes to its storage's limit:
``ratio = API ops/s / storage ops/s`` over the create+get+update mix.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import ssl
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from podvisor.bench.report import Progress, print_table

__all__ = ["HELP", "add_arguments", "run"]

HELP = "drive the running API server (create/get/update/list/watch) and compare with bare storage"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kubeconfig", type=Path, default=None, help="default: $KUBECONFIG, else the data dir's")
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("-n", "--objects", type=int, default=300, help="objects per verb (default 300)")
    p.add_argument("-w", "--watchers", type=int, default=100, help="watchers attached during writes (default 100)")
    p.add_argument("-c", "--concurrency", type=int, default=8, help="concurrent clients (default 8)")


@dataclass
class Verb:
    name: str
    latencies: list[float] = field(default_factory=list)
    elapsed: float = 0.0

    @property
    def ops(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed else 0.0

    def pct(self, q: float) -> float:
        if not self.latencies:
            return 0.0
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000


@dataclass
class Target:
    server: str
    ssl: ssl.SSLContext
    headers: dict[str, str]


def _load_target(args: argparse.Namespace) -> Target:
    path = args.kubeconfig
    if path is None and os.environ.get("KUBECONFIG"):
        path = Path(os.environ["KUBECONFIG"].split(os.pathsep)[0])
    if path is None:
        from podvisor.paths import default_data_dir

        path = (args.data_dir or default_data_dir()) / "kubeconfig"
    cfg = yaml.safe_load(Path(path).read_text())
    ctx_name = cfg["current-context"]
    ctx = next(c["context"] for c in cfg["contexts"] if c["name"] == ctx_name)
    cluster = next(c["cluster"] for c in cfg["clusters"] if c["name"] == ctx["cluster"])
    user = next(u["user"] for u in cfg["users"] if u["name"] == ctx["user"])
    sslctx = ssl.create_default_context(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
    headers: dict[str, str] = {}
    if "token" in user:
        headers["Authorization"] = f"Bearer {user['token']}"
    else:
        tmp = Path(tempfile.mkdtemp(prefix="pv-bench-"))
        (tmp / "c.crt").write_bytes(base64.b64decode(user["client-certificate-data"]))
        (tmp / "c.key").write_bytes(base64.b64decode(user["client-key-data"]))
        os.chmod(tmp / "c.key", 0o600)
        sslctx.load_cert_chain(tmp / "c.crt", tmp / "c.key")
    return Target(cluster["server"].rstrip("/"), sslctx, headers)


async def _timed(verb: Verb, calls: list[Callable[[], Awaitable[Any]]], concurrency: int, progress: Progress) -> list[Any]:
    results: list[Any] = [None] * len(calls)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(calls)):
        queue.put_nowait(i)

    async def worker() -> None:
        while True:
            try:
                i = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            t0 = time.perf_counter()
            results[i] = await calls[i]()
            verb.latencies.append(time.perf_counter() - t0)
            progress.advance()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    verb.elapsed = time.perf_counter() - start
    return results


async def _check(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    body = await resp.read()
    if resp.status >= 300:
        raise RuntimeError(f"{resp.method} {resp.url.path}: HTTP {resp.status}: {body[:300]!r}")
    return dict(json.loads(body))


_MODIFIED = b'{"type":"MODIFIED",'
_RV = b'"resourceVersion":"'


def _modified_rv(line: bytes) -> str | None:
    """The resourceVersion of a MODIFIED event line, None for any other event.

    The watchers must not be the bottleneck they measure: a full ``json.loads`` of every line costs
    more than the server spends sending it. The server writes ``{"type":"MODIFIED","object":{...}}``
    with compact separators and the bench's ConfigMaps carry no other ``resourceVersion`` than their
    metadata's, so a prefix test and one search find it; any line of another shape is decoded fully."""
    if line.startswith(_MODIFIED):
        start = line.find(_RV)
        end = line.find(b'"', start + len(_RV)) if start >= 0 else -1
        if end > start + len(_RV):
            return line[start + len(_RV):end].decode()
    elif line.startswith(b'{"type":"'):
        return None  # ADDED, DELETED, BOOKMARK, ERROR
    ev = json.loads(line)
    if ev.get("type") == "MODIFIED":
        return str(ev["object"]["metadata"]["resourceVersion"])
    return None


class _Watchers:
    """W watch streams on the bench namespace; records when each (name, resourceVersion) arrives.

    Arrival is when the chunk holding the event is read off the connection, before any parsing."""

    def __init__(self, session: aiohttp.ClientSession, url: str, count: int) -> None:
        self.session, self.url, self.count = session, url, count
        self.arrivals: dict[str, list[float]] = {}
        self.tasks: list[asyncio.Task[None]] = []
        self.ready = 0

    async def start(self, rv: str) -> None:
        ready = asyncio.Event()
        arrivals = self.arrivals

        async def one() -> None:
            async with self.session.get(self.url, params={"watch": "true", "resourceVersion": rv,
                                                          "timeoutSeconds": "600"}) as resp:
                self.ready += 1
                if self.ready == self.count:
                    ready.set()
                rest = b""
                async for chunk in resp.content.iter_any():
                    now = time.perf_counter()
                    *lines, rest = (rest + chunk).split(b"\n")
                    for line in lines:
                        if line.strip():
                            version = _modified_rv(line)
                            if version is not None:
                                arrivals.setdefault(version, []).append(now)

        self.tasks = [asyncio.create_task(one()) for _ in range(self.count)]
        if self.count:
            await asyncio.wait_for(ready.wait(), timeout=60)

    async def stop(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def _bench_api(args: argparse.Namespace) -> tuple[dict[str, Verb], list[float], int]:
    target = _load_target(args)
    n, conc = args.objects, args.concurrency
    ns = f"bench-{uuid.uuid4().hex[:6]}"
    connector = aiohttp.TCPConnector(ssl=target.ssl, limit=0)
    async with aiohttp.ClientSession(base_url=target.server, headers=target.headers, connector=connector) as s:
        await _check(await s.post("/api/v1/namespaces", json={"metadata": {"name": ns}}))
        base = f"/api/v1/namespaces/{ns}/configmaps"
        verbs = {k: Verb(k) for k in ("create", "get", "update", "list")}
        total = n * 3 + max(1, n // 10)
        progress = Progress("bench api", total)

        def create(i: int) -> Callable[[], Awaitable[Any]]:
            async def call() -> Any:
                # read within the timed call, as get and update do: an unread response keeps its
                # connection, so every create would open (and time) a TLS connection of its own
                async with s.post(base, json={"metadata": {"name": f"cm-{i}", "labels": {"bench": "x"}},
                                              "data": {"k": "v" * 64}}) as r:
                    return await _check(r)
            return call

        objs = await _timed(verbs["create"], [create(i) for i in range(n)], conc, progress)
        list_rv = objs[-1]["metadata"]["resourceVersion"] if objs else "0"

        def get(i: int) -> Callable[[], Awaitable[Any]]:
            async def call() -> Any:
                async with s.get(f"{base}/cm-{i % n}") as r:
                    return await _check(r)
            return call

        await _timed(verbs["get"], [get(i) for i in range(n)], conc, progress)

        # the watchers are other clients: their own connections, not the writers' keep-alive pool
        watch_session = aiohttp.ClientSession(base_url=target.server, headers=target.headers,
                                              connector=aiohttp.TCPConnector(ssl=target.ssl, limit=0))
        watchers = _Watchers(watch_session, base, args.watchers)
        await watchers.start(list_rv)
        sent: dict[str, float] = {}

        def update(o: dict[str, Any]) -> Callable[[], Awaitable[Any]]:
            async def call() -> Any:
                o2 = dict(o)
                o2["data"] = {"k": "w" * 64}
                async with s.put(f"{base}/{o['metadata']['name']}", json=o2) as r:
                    out = await _check(r)
                    sent[out["metadata"]["resourceVersion"]] = time.perf_counter()
                    return out
            return call

        await _timed(verbs["update"], [update(o) for o in objs], conc, progress)
        deadline = time.perf_counter() + 10
        while time.perf_counter() < deadline and sum(len(v) for v in watchers.arrivals.values()) < len(sent) * args.watchers:
            await asyncio.sleep(0.05)
        await watchers.stop()
        await watch_session.close()
        delivery = [max(0.0, t - sent[rv]) for rv, ts in watchers.arrivals.items() if rv in sent for t in ts]
        delivered = len(delivery)

        def lst(_: int) -> Callable[[], Awaitable[Any]]:
            async def call() -> Any:
                async with s.get(base, params={"limit": "500"}) as r:
                    return await _check(r)
            return call

        await _timed(verbs["list"], [lst(i) for i in range(max(1, n // 10))], conc, progress)
        async with s.delete(f"/api/v1/namespaces/{ns}") as r:
            await r.read()
    return verbs, delivery, delivered


async def _bench_storage(n: int, conc: int) -> dict[str, Verb]:
    from podvisor.storage.sqlite import SQLiteStorage

    with tempfile.TemporaryDirectory(prefix="pv-bench-storage-") as tmp:
        st = await SQLiteStorage.open(Path(tmp) / "bench.db")
        try:
            verbs = {k: Verb(k) for k in ("create", "get", "update", "list")}
            value = json.dumps({"metadata": {"name": "x"}, "data": {"k": "v" * 64}}).encode()
            progress = Progress("bench storage", n * 3 + max(1, n // 10))
            prefix = "/registry/core/configmaps/bench/"
            made = await _timed(verbs["create"], [partial(st.create, f"{prefix}cm-{i}", value) for i in range(n)],
                                conc, progress)
            await _timed(verbs["get"], [partial(st.get, f"{prefix}cm-{i % n}") for i in range(n)], conc, progress)
            await _timed(verbs["update"], [partial(st.update, kv.key, value, expected_revision=kv.mod_revision)
                                           for kv in made], conc, progress)
            await _timed(verbs["list"], [partial(st.list, prefix, limit=500) for _ in range(max(1, n // 10))],
                         conc, progress)
        finally:
            await st.close()
    return verbs


def run(args: argparse.Namespace) -> dict[str, Any]:
    api, delivery, delivered = asyncio.run(_bench_api(args))
    storage = asyncio.run(_bench_storage(args.objects, args.concurrency))
    rows = []
    for name in ("create", "get", "update", "list"):
        a, s = api[name], storage[name]
        rows.append((name, a.ops, a.pct(0.5), a.pct(0.99), s.ops, s.pct(0.5), s.pct(0.99),
                     a.ops / s.ops if s.ops else 0.0))
    print_table(
        f"bench api: {args.objects} ConfigMaps, {args.concurrency} clients, {args.watchers} watchers",
        ("verb", "api ops/s", "api p50 ms", "api p99 ms", "storage ops/s", "st p50 ms", "st p99 ms", "api/storage"),
        rows,
    )
    d50 = statistics.median(delivery) * 1000 if delivery else 0.0
    d99 = sorted(delivery)[min(len(delivery) - 1, int(0.99 * len(delivery)))] * 1000 if delivery else 0.0
    expected = args.objects * args.watchers
    print(f"watch delivery to {args.watchers} watchers: {delivered}/{expected} events, p50 {d50:.1f} ms, p99 {d99:.1f} ms")
    mix = ("create", "get", "update")
    api_time = sum(len(api[v].latencies) / api[v].ops for v in mix if api[v].ops)
    st_time = sum(len(storage[v].latencies) / storage[v].ops for v in mix if storage[v].ops)
    ratio = st_time / api_time if api_time else 0.0
    write_p99 = max(api["create"].pct(0.99), api["update"].pct(0.99))
    print(f"goals: writes p99 {write_p99:.1f} ms (goal < 50), gets {api['get'].ops:,.0f}/s (goal >= 1000)")
    result: dict[str, Any] = {
        "ratio": round(ratio, 4),
        "ratio_meaning": "API ops/s over storage ops/s for the create+get+update mix (1.0 = the storage's limit)",
        "objects": args.objects,
        "watchers": args.watchers,
        "concurrency": args.concurrency,
        "write_p99_ms": round(write_p99, 2),
        "gets_per_s": round(api["get"].ops, 1),
        "watch_delivery_p50_ms": round(d50, 2),
        "watch_delivery_p99_ms": round(d99, 2),
        "watch_events_delivered": delivered,
        "watch_events_expected": expected,
    }
    for name in ("create", "get", "update", "list"):
        for src, verbs in (("api", api), ("storage", storage)):
            v = verbs[name]
            result[f"{src}_{name}_ops_s"] = round(v.ops, 1)
            result[f"{src}_{name}_p50_ms"] = round(v.pct(0.5), 2)
            result[f"{src}_{name}_p99_ms"] = round(v.pct(0.99), 2)
    return result
