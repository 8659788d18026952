"""The distributed engine: etcd v3 through its JSON gateway.

Why the gateway and not gRPC: etcd serves every v3 call as JSON over plain HTTP (``/v3/kv/range``,
``/v3/kv/txn``, ``/v3/watch``, keys and values base64, 64-bit numbers as strings), so aiohttp is all
we need; no generated stubs, no gRPC dependency.

How the contract maps onto etcd:

* The revision is etcd's own revision (it starts at 1 on an empty cluster; every write adds one).
* create / update / delete are single transactions comparing the key's ``create_revision`` (exists or
  not) and ``mod_revision`` (the CAS), with a read of the key on the failure branch, so a failed
  write reports the current value without a second round trip.
* ``watch(from_revision=F)`` is an etcd watch from ``F + 1`` with ``prev_kv``. etcd accepts a watch
  starting exactly at its compaction revision, whose first event has lost its previous value; we
  report that as `RevisionCompactedError`, as the SQLite engine does, so both agree that a watch
  must start at or after the compaction revision.
* A broken watch stream is reopened from the last delivered revision a few times before the
  iterator raises `UnavailableError`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from podvisor.storage._keys import prefix_end
from podvisor.storage.interface import (
    ConflictError,
    EventType,
    KeyExistsError,
    KeyNotFoundError,
    KeyValue,
    ListResult,
    RevisionCompactedError,
    StorageError,
    UnavailableError,
    WatchEvent,
)

__all__ = ["EtcdStorage"]

_REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=30, sock_connect=5)
_WATCH_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=None)
_WATCH_BUFFER = 1_000  # events read ahead per watch; beyond that etcd is made to wait
_WATCH_RETRIES = 5
_ALL = "\0"  # as a range end: every key at or after the start key


def _b64(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw).decode("ascii")


def _unb64(text: str | None) -> bytes:
    return base64.b64decode(text) if text else b""


def _kv(raw: dict[str, Any]) -> KeyValue:
    return KeyValue(
        _unb64(raw.get("key")).decode(),
        _unb64(raw.get("value")),
        int(raw.get("create_revision", 0)),
        int(raw.get("mod_revision", 0)),
    )


def _revision(resp: dict[str, Any]) -> int:
    return int(resp.get("header", {}).get("revision", 0))


class _EtcdError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class _EtcdWatch:
    """One etcd watch stream, read ahead by a background task into a bounded queue (so a slow
    consumer slows etcd's sending rather than growing memory) and cancellation-safe to consume."""

    def __init__(self, store: EtcdStorage, prefix: str, from_revision: int) -> None:
        self._store = store
        self._prefix = prefix
        self._last = from_revision
        self._queue: asyncio.Queue[WatchEvent | BaseException | None] = asyncio.Queue(_WATCH_BUFFER)
        self._task: asyncio.Task[None] | None = None
        self._done = False

    def __aiter__(self) -> _EtcdWatch:
        return self

    async def __anext__(self) -> WatchEvent:
        if self._done:
            raise StopAsyncIteration
        if self._task is None:
            self._task = asyncio.create_task(self._pump(), name=f"etcd-watch {self._prefix}")
            self._store._watches.add(self)
        item = await self._queue.get()
        if isinstance(item, WatchEvent):
            return item
        await self.aclose()
        if item is None:
            raise StopAsyncIteration
        raise item

    async def aclose(self) -> None:
        self._done = True
        self._store._watches.discard(self)
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _pump(self) -> None:
        failures = 0
        try:
            while True:
                try:
                    await self._stream()
                    failures = 0
                except (TimeoutError, aiohttp.ClientError, OSError, UnavailableError) as exc:
                    failures += 1
                    if failures > _WATCH_RETRIES or self._store._closed:
                        raise UnavailableError(self._prefix, f"etcd watch failed: {exc}") from exc
                    await asyncio.sleep(0.1 * 2**failures)
                if self._store._closed:
                    await self._queue.put(None)
                    return
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            await self._queue.put(exc)

    async def _stream(self) -> None:
        store = self._store
        end = prefix_end(self._prefix)
        create: dict[str, Any] = {
            "key": _b64(self._prefix or _ALL),
            "range_end": _b64(end if end is not None else _ALL),
            "start_revision": self._last + 1,
            "prev_kv": True,
        }
        session = store._session_or_fail(self._prefix)
        async with session.post(
            store._url("/v3/watch"), json={"create_request": create}, timeout=_WATCH_TIMEOUT
        ) as resp:
            if resp.status != 200:
                raise UnavailableError(self._prefix, f"etcd watch: HTTP {resp.status}")
            buf = b""
            async for chunk in resp.content.iter_any():
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.strip():
                        await self._message(json.loads(line))
        if not store._closed:
            raise UnavailableError(self._prefix, "etcd closed the watch stream")

    async def _message(self, msg: dict[str, Any]) -> None:
        if "error" in msg:
            err = msg["error"]
            raise UnavailableError(self._prefix, f"etcd watch error: {err.get('message', err)}")
        result = msg.get("result", {})
        compact = int(result.get("compact_revision", 0))
        if compact:
            raise RevisionCompactedError(self._prefix, self._last, compact)
        if result.get("canceled"):
            raise UnavailableError(self._prefix, f"etcd canceled the watch: {result.get('cancel_reason', '')}")
        for raw in result.get("events", ()):
            event = self._event(raw)
            if event.revision <= self._last:
                continue  # a reconnect may repeat what we already delivered
            await self._queue.put(event)
            self._last = event.revision

    def _event(self, raw: dict[str, Any]) -> WatchEvent:
        kv_raw = raw.get("kv", {})
        kv = _kv(kv_raw)
        prev = _kv(raw["prev_kv"]) if "prev_kv" in raw else None
        if raw.get("type", "PUT") == "DELETE":
            if prev is None:  # the value before this event is compacted away
                raise RevisionCompactedError(self._prefix, self._last, kv.mod_revision)
            return WatchEvent(
                EventType.DELETE,
                KeyValue(kv.key, prev.value, prev.create_revision, kv.mod_revision),
                prev,
                kv.mod_revision,
            )
        if prev is None and int(kv_raw.get("version", 1)) != 1:
            raise RevisionCompactedError(self._prefix, self._last, kv.mod_revision)
        return WatchEvent(EventType.PUT, kv, prev, kv.mod_revision)


class EtcdStorage:
    """`Storage` on an etcd v3 cluster. Create with `EtcdStorage.open`."""

    def __init__(self, endpoints: list[str]) -> None:
        """Private: use `open`."""
        if not endpoints:
            raise ValueError("no etcd endpoint")
        self._endpoints = [e.rstrip("/") for e in endpoints]
        self._current = 0
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self._watches: set[_EtcdWatch] = set()

    @classmethod
    async def open(cls, endpoints: list[str]) -> EtcdStorage:
        """Connect to the first reachable endpoint (``http://host:port``)."""
        store = cls(endpoints)
        store._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=60), timeout=_REQUEST_TIMEOUT
        )
        try:
            await store.current_revision()
        except BaseException:
            await store._session.close()
            raise
        return store

    # -- the Storage protocol -------------------------------------------------------------

    async def get(self, key: str) -> KeyValue:
        resp = await self._call("/v3/kv/range", {"key": _b64(key)}, key)
        kvs = resp.get("kvs")
        if not kvs:
            raise KeyNotFoundError(key)
        return _kv(kvs[0])

    async def list(
        self, prefix: str, *, start_after: str | None = None, limit: int = 0, revision: int = 0
    ) -> ListResult:
        start = start_after + "\0" if start_after is not None and start_after >= prefix else prefix
        end = prefix_end(prefix)
        if end is not None and start >= end:  # paging past the prefix: nothing there
            return ListResult([], revision or await self.current_revision(), False)
        body: dict[str, Any] = {"key": _b64(start or _ALL), "range_end": _b64(end if end is not None else _ALL)}
        if limit > 0:
            body["limit"] = limit
        if revision > 0:
            body["revision"] = revision
        resp = await self._call("/v3/kv/range", body, prefix, revision=revision)
        items = [_kv(raw) for raw in resp.get("kvs", ())]
        return ListResult(items, revision or _revision(resp), bool(resp.get("more", False)))

    async def create(self, key: str, value: bytes) -> KeyValue:
        k = _b64(key)
        txn = {
            "compare": [{"key": k, "target": "CREATE", "result": "EQUAL", "create_revision": 0}],
            "success": [{"request_put": {"key": k, "value": _b64(value)}}],
            "failure": [{"request_range": {"key": k}}],
        }
        resp = await self._call("/v3/kv/txn", txn, key)
        if not resp.get("succeeded"):
            raise KeyExistsError(key)
        rev = _revision(resp)
        return KeyValue(key, value, rev, rev)

    async def update(self, key: str, value: bytes, *, expected_revision: int) -> KeyValue:
        k = _b64(key)
        txn = {
            "compare": [
                {"key": k, "target": "CREATE", "result": "GREATER", "create_revision": 0},
                {"key": k, "target": "MOD", "result": "EQUAL", "mod_revision": expected_revision},
            ],
            "success": [{"request_put": {"key": k, "value": _b64(value), "prev_kv": True}}],
            "failure": [{"request_range": {"key": k}}],
        }
        resp = await self._call("/v3/kv/txn", txn, key)
        if not resp.get("succeeded"):
            raise self._failed(key, resp)
        prev = _kv(resp["responses"][0]["response_put"]["prev_kv"])
        return KeyValue(key, value, prev.create_revision, _revision(resp))

    async def delete(self, key: str, *, expected_revision: int = 0) -> KeyValue:
        k = _b64(key)
        compare: list[dict[str, Any]] = [{"key": k, "target": "CREATE", "result": "GREATER", "create_revision": 0}]
        if expected_revision:
            compare.append({"key": k, "target": "MOD", "result": "EQUAL", "mod_revision": expected_revision})
        txn = {
            "compare": compare,
            "success": [{"request_delete_range": {"key": k, "prev_kv": True}}],
            "failure": [{"request_range": {"key": k}}],
        }
        resp = await self._call("/v3/kv/txn", txn, key)
        if not resp.get("succeeded"):
            raise self._failed(key, resp)
        prev = _kv(resp["responses"][0]["response_delete_range"]["prev_kvs"][0])
        return KeyValue(key, prev.value, prev.create_revision, _revision(resp))

    def watch(self, prefix: str, *, from_revision: int) -> AsyncIterator[WatchEvent]:
        return _EtcdWatch(self, prefix, from_revision)

    async def current_revision(self) -> int:
        resp = await self._call("/v3/kv/range", {"key": _b64("\0"), "count_only": True}, "")
        return _revision(resp)

    async def count(self, prefix: str) -> int:
        end = prefix_end(prefix)
        body = {"key": _b64(prefix or _ALL), "range_end": _b64(end if end is not None else _ALL), "count_only": True}
        resp = await self._call("/v3/kv/range", body, prefix)
        return int(resp.get("count", 0))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for watch in list(self._watches):
            await watch.aclose()
        if self._session is not None:
            await self._session.close()

    # -- beyond the protocol --------------------------------------------------------------

    async def compact(self, revision: int) -> None:
        """Drop etcd's history before ``revision`` (physically, waiting until done)."""
        try:
            await self._call("/v3/kv/compaction", {"revision": revision, "physical": True}, "")
        except RevisionCompactedError:
            pass  # already compacted at or past it

    async def compacted_revision(self) -> int:
        """The oldest revision still readable, found by probing reads (etcd does not expose it)."""
        lo, hi = 1, await self.current_revision()
        while lo < hi:
            mid = (lo + hi) // 2
            try:
                await self._call("/v3/kv/range", {"key": _b64("\0"), "count_only": True, "revision": mid}, "")
            except RevisionCompactedError:
                lo = mid + 1
            else:
                hi = mid
        return lo

    # -- plumbing -------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return self._endpoints[self._current] + path

    def _session_or_fail(self, key: str) -> aiohttp.ClientSession:
        if self._closed or self._session is None:
            raise UnavailableError(key, "etcd storage is closed")
        return self._session

    async def _call(self, path: str, body: dict[str, Any], key: str, *, revision: int = 0) -> dict[str, Any]:
        session = self._session_or_fail(key)
        last_exc: BaseException | None = None
        for _ in range(len(self._endpoints)):
            try:
                async with session.post(self._url(path), json=body) as resp:
                    data: dict[str, Any] = await resp.json(content_type=None)
            except (TimeoutError, aiohttp.ClientError, OSError, json.JSONDecodeError) as exc:
                last_exc = exc
                self._current = (self._current + 1) % len(self._endpoints)
                continue
            if "error" in data or resp.status != 200:
                raise self._translate(key, revision, data)
            return data
        raise UnavailableError(key, f"etcd unreachable: {last_exc}")

    @staticmethod
    def _translate(key: str, revision: int, data: dict[str, Any]) -> StorageError:
        message = str(data.get("message") or data.get("error") or data)
        if "compacted" in message:
            return RevisionCompactedError(key, revision, revision + 1)
        if "future revision" in message:
            return StorageError(key, f"revision {revision} is in the future")
        if int(data.get("code", 0)) in (4, 14):  # deadline exceeded, unavailable
            return UnavailableError(key, f"etcd: {message}")
        return StorageError(key, f"etcd: {message}")

    @staticmethod
    def _failed(key: str, resp: dict[str, Any]) -> StorageError:
        kvs = resp.get("responses", [{}])[0].get("response_range", {}).get("kvs")
        if not kvs:
            return KeyNotFoundError(key)
        return ConflictError(key, _kv(kvs[0]))
