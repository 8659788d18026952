"""The embedded engine: the whole control-plane state in one SQLite file.

Why it looks like this:

* **One history table.** Every write appends a row to ``log`` (revision = rowid, key, value, the
  revision it replaced). That single append-only table is at once the watch history, the source of
  reads at an older revision, and the place the values live; ``kv`` only points each live key at its
  newest row, so current reads are two primary-key lookups. Compaction (kine's rule) removes a row
  once a newer row for the same key is itself inside the compacted range, and removes tombstones
  there, so every state at or after the compaction revision stays readable and every event after it
  replayable, including the previous value each event carries.
* **One writer thread, group commit.** All writes go through one thread with one connection. It takes
  every write waiting in its queue, runs them in one ``BEGIN IMMEDIATE`` transaction (each still gets
  its own revision and its own success or failure) and commits once: one fsync for many writes. WAL
  mode with ``synchronous=FULL`` makes each commit durable before any caller hears of it, and a killed
  process leaves either the whole transaction or none of it.
* **Reads never wait for writes.** Readers use their own connections in a small thread pool; WAL gives
  each read transaction a snapshot, so a list page and its revision always agree. A point read
  (``get``, a couple of B-tree lookups in cached pages) runs on the event loop's own connection
  instead: handing it to a thread and back costs several times the read, and every update starts
  with one. That connection never waits on a lock; should SQLite say busy, the read goes to the pool.
* **Watches without polling.** After a commit the writer hands the new events to the event loop, which
  fans them out to subscribers. A watch first subscribes, then replays history from SQLite, then
  serves live events, skipping what it already replayed; one that falls too far behind drops its
  buffer and catches up from the history again instead of buffering without bound.
* **One process owns the file** (an exclusive ``flock`` on ``<file>.lock``): the revision counter is
  kept in memory by the writer and would be wrong if two processes wrote.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import queue
import sqlite3
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from podvisor.storage._keys import prefix_end
from podvisor.storage._sqlite_watch import SQLiteWatch, Subscriber
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

__all__ = ["SQLiteStorage", "DEFAULT_KEEP_REVISIONS"]

DEFAULT_KEEP_REVISIONS = 100_000
_MAX_BATCH = 512  # writes per transaction
_COMPACT_CHUNK = 1_000  # revisions compacted per transaction (keeps write latency flat)

_T = TypeVar("_T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    revision INTEGER NOT NULL,
    compact_revision INTEGER NOT NULL
);
INSERT OR IGNORE INTO meta (id, revision, compact_revision) VALUES (1, 0, 0);
CREATE TABLE IF NOT EXISTS log (
    revision INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    deleted INTEGER NOT NULL,
    create_revision INTEGER NOT NULL,
    prev_revision INTEGER,
    value BLOB
);
CREATE INDEX IF NOT EXISTS log_key_revision ON log (key, revision);
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    create_revision INTEGER NOT NULL,
    mod_revision INTEGER NOT NULL
) WITHOUT ROWID;
"""

_GET = (
    "SELECT k.create_revision, k.mod_revision, l.value FROM kv k "
    "JOIN log l ON l.revision = k.mod_revision WHERE k.key = ?"
)
_INSERT_LOG = (
    "INSERT INTO log (revision, key, deleted, create_revision, prev_revision, value) VALUES (?, ?, ?, ?, ?, ?)"
)
_EVENTS = (
    "SELECT l.revision, l.key, l.deleted, l.create_revision, l.value, l.prev_revision, "
    "p.create_revision, p.value FROM log l LEFT JOIN log p ON p.revision = l.prev_revision "
    "WHERE l.revision > ? AND l.key >= ? {upper} ORDER BY l.revision LIMIT ?"
)
_LIST_CURRENT = (
    "SELECT k.key, k.create_revision, k.mod_revision, l.value FROM kv k "
    "JOIN log l ON l.revision = k.mod_revision WHERE k.key {lower} ? {upper} ORDER BY k.key LIMIT ?"
)
_LIST_AT = (
    "SELECT l.key, l.create_revision, l.revision, l.value FROM log l "
    "WHERE l.key {lower} ? {upper} AND l.revision <= ? AND l.deleted = 0 "
    "AND NOT EXISTS (SELECT 1 FROM log n WHERE n.key = l.key AND n.revision > l.revision "
    "AND n.revision <= ?) ORDER BY l.key LIMIT ?"
)

_CREATE, _UPDATE, _DELETE, _COMPACT, _STOP = range(5)

# Module-level aliases: inside SQLiteStorage the name ``list`` is the Storage method.
_Results = list[tuple["asyncio.Future[Any]", Any]]
_Events = list[WatchEvent]
_OpList = list["_Op"]


class _Op:
    __slots__ = ("kind", "key", "value", "expected", "future")

    def __init__(
        self, kind: int, key: str, value: bytes, expected: int, future: asyncio.Future[Any] | None
    ) -> None:
        self.kind = kind
        self.key = key
        self.value = value
        self.expected = expected
        self.future = future


class SQLiteStorage:
    """`Storage` on one SQLite file. Create with `SQLiteStorage.open`; use from one event loop."""

    def __init__(self, path: Path, *, keep_revisions: int | None, readers: int) -> None:
        """Private: use `open`."""
        self._path = path
        self._keep = keep_revisions
        self._loop = asyncio.get_running_loop()
        self._pool = ThreadPoolExecutor(max_workers=readers, thread_name_prefix="sqlite-read")
        self._local = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._loop_conn: sqlite3.Connection | None = None
        self._conns_lock = threading.Lock()
        self._queue: queue.SimpleQueue[_Op] = queue.SimpleQueue()
        self._subs: weakref.WeakSet[Subscriber] = weakref.WeakSet()
        self._closed = False
        self._lock_fd = -1
        self._writer_conn: sqlite3.Connection | None = None
        self._writer: threading.Thread | None = None
        self._writer_done: asyncio.Future[None] = self._loop.create_future()
        # Owned by the writer thread; read elsewhere as plain ints (assignment is atomic).
        self._revision = 0
        self._compacted = 0
        self._compact_goal = 0
        self._compact_waiters: list[tuple[int, asyncio.Future[Any]]] = []

    @classmethod
    async def open(
        cls, path: Path | str, *, keep_revisions: int | None = DEFAULT_KEEP_REVISIONS, readers: int = 2
    ) -> SQLiteStorage:
        """Open (creating if needed) the store at ``path``. ``keep_revisions`` bounds the history:
        once the counter passes it, revisions older than the newest ``keep_revisions`` are compacted
        (None: never compact automatically; `compact` still works)."""
        store = cls(Path(path), keep_revisions=keep_revisions, readers=readers)
        try:
            await store._loop.run_in_executor(store._pool, store._setup)
        except BaseException:
            store._release_lock()
            store._pool.shutdown(wait=False)
            raise
        store._writer = threading.Thread(target=store._write_loop, name="sqlite-writer", daemon=True)
        store._writer.start()
        return store

    # -- the Storage protocol -------------------------------------------------------------

    async def get(self, key: str) -> KeyValue:
        # A point read is a couple of B-tree lookups in pages that are almost always cached: done
        # right here it costs less than handing it to a reader thread (and back), and it never
        # waits for the writer (WAL). Should SQLite ever report the database busy, the read goes to
        # a reader thread, which may wait.
        self._check_open(key)
        try:
            row = self._loop_reader().execute(_GET, (key,)).fetchone()
        except sqlite3.OperationalError:
            return await self._read(self._get_sync, key)
        except sqlite3.Error as exc:
            raise UnavailableError(key, f"sqlite read failed: {exc}") from exc
        if row is None:
            raise KeyNotFoundError(key)
        return KeyValue(key, row[2], row[0], row[1])

    async def list(
        self, prefix: str, *, start_after: str | None = None, limit: int = 0, revision: int = 0
    ) -> ListResult:
        return await self._read(self._list_sync, prefix, start_after, limit, revision)

    async def create(self, key: str, value: bytes) -> KeyValue:
        result: KeyValue = await self._submit(_CREATE, key, value, 0)
        return result

    async def update(self, key: str, value: bytes, *, expected_revision: int) -> KeyValue:
        result: KeyValue = await self._submit(_UPDATE, key, value, expected_revision)
        return result

    async def delete(self, key: str, *, expected_revision: int = 0) -> KeyValue:
        result: KeyValue = await self._submit(_DELETE, key, b"", expected_revision)
        return result

    def watch(self, prefix: str, *, from_revision: int) -> SQLiteWatch:
        return SQLiteWatch(self, prefix, from_revision)

    async def current_revision(self) -> int:
        self._check_open(None)
        return self._revision

    async def count(self, prefix: str) -> int:
        return await self._read(self._count_sync, prefix)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for sub in list(self._subs):
            sub.close()
        self._queue.put(_Op(_STOP, "", b"", 0, None))
        await asyncio.shield(self._writer_done)
        await self._loop.run_in_executor(None, self._shutdown_readers)

    # -- beyond the protocol --------------------------------------------------------------

    async def compact(self, revision: int) -> None:
        """Drop history at or before ``revision``: afterwards reads at older revisions and watches
        from older revisions raise `RevisionCompactedError`. Returns once done."""
        await self._submit(_COMPACT, "", b"", revision)

    async def compacted_revision(self) -> int:
        """The oldest revision still readable (0 before any compaction)."""
        self._check_open(None)
        return self._compacted

    @property
    def path(self) -> Path:
        return self._path

    # -- plumbing on the event loop -------------------------------------------------------

    def _check_open(self, key: str | None) -> None:
        if self._closed:
            raise UnavailableError(key or "", f"storage {self._path} is closed")

    async def _submit(self, kind: int, key: str, value: bytes, expected: int) -> Any:
        self._check_open(key)
        if kind != _COMPACT and not isinstance(value, bytes):
            raise TypeError(f"value for {key} must be bytes, not {type(value).__name__}")
        fut: asyncio.Future[Any] = self._loop.create_future()
        self._queue.put(_Op(kind, key, value, expected, fut))
        return await fut

    async def _read(self, fn: Callable[..., _T], *args: Any) -> _T:
        self._check_open(None)
        try:
            return await self._loop.run_in_executor(self._pool, fn, *args)
        except sqlite3.Error as exc:
            raise UnavailableError("", f"sqlite read failed: {exc}") from exc
        except RuntimeError as exc:  # pool shut down under us
            raise UnavailableError("", f"storage {self._path} is closed") from exc

    def _subscribe(self, prefix: str) -> Subscriber:
        sub = Subscriber(prefix)
        if self._closed:
            sub.close()
        self._subs.add(sub)
        return sub

    def _unsubscribe(self, sub: Subscriber) -> None:
        self._subs.discard(sub)

    def _deliver(self, results: _Results, events: _Events) -> None:
        for fut, res in results:
            if fut.done():
                continue
            if isinstance(res, BaseException):
                fut.set_exception(res)
            else:
                fut.set_result(res)
        if events:
            for sub in list(self._subs):
                sub.offer(events)

    def _post(self, results: _Results, events: _Events) -> None:
        if not results and not events:
            return
        try:
            self._loop.call_soon_threadsafe(self._deliver, results, events)
        except RuntimeError:  # the loop is gone; nobody is waiting any more
            pass

    # -- connections ----------------------------------------------------------------------

    def _connect(self, *, writer: bool) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False, timeout=30.0)
        conn.execute("PRAGMA busy_timeout = 30000")
        conn.execute("PRAGMA cache_size = -65536")  # 64 MiB page cache per connection
        conn.execute("PRAGMA mmap_size = 268435456")
        if writer:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA journal_size_limit = 67108864")
        else:
            conn.execute("PRAGMA query_only = 1")
        return conn

    def _loop_reader(self) -> sqlite3.Connection:
        """The event loop thread's own read connection: never waits on a lock (busy_timeout 0)."""
        conn = self._loop_conn
        if conn is None:
            conn = self._connect(writer=False)
            conn.execute("PRAGMA busy_timeout = 0")
            self._loop_conn = conn
            with self._conns_lock:
                self._reader_conns.append(conn)
        return conn

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect(writer=False)
            self._local.conn = conn
            with self._conns_lock:
                self._reader_conns.append(conn)
        return conn

    def _setup(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self._path.with_name(self._path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise UnavailableError("", f"{self._path} is in use by another process") from exc
        self._lock_fd = fd
        conn = self._connect(writer=True)
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        if str(mode).lower() != "wal":
            raise UnavailableError("", f"{self._path}: cannot enable WAL (journal_mode={mode})")
        conn.executescript(_SCHEMA)
        self._revision, self._compacted = conn.execute(
            "SELECT revision, compact_revision FROM meta WHERE id = 1"
        ).fetchone()
        self._compact_goal = self._compacted
        self._writer_conn = conn

    def _release_lock(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def _shutdown_readers(self) -> None:
        self._pool.shutdown(wait=True)
        with self._conns_lock:
            for conn in self._reader_conns:
                conn.close()
            self._reader_conns.clear()
        self._release_lock()

    # -- reads (reader threads) -----------------------------------------------------------

    def _get_sync(self, key: str) -> KeyValue:
        row = self._reader().execute(_GET, (key,)).fetchone()
        if row is None:
            raise KeyNotFoundError(key)
        return KeyValue(key, row[2], row[0], row[1])

    def _count_sync(self, prefix: str) -> int:
        end = prefix_end(prefix)
        if end is None:
            row = self._reader().execute("SELECT COUNT(*) FROM kv WHERE key >= ?", (prefix,)).fetchone()
        else:
            row = self._reader().execute(
                "SELECT COUNT(*) FROM kv WHERE key >= ? AND key < ?", (prefix, end)
            ).fetchone()
        return int(row[0])

    def _list_sync(self, prefix: str, start_after: str | None, limit: int, revision: int) -> ListResult:
        conn = self._reader()
        end = prefix_end(prefix)
        if start_after is not None and start_after >= prefix:
            lower, low = ">", start_after
        else:
            lower, low = ">=", prefix
        params: list[Any] = [low]
        upper = ""
        if end is not None:
            upper = "AND {col} < ?"
            params.append(end)
        fetch = limit + 1 if limit > 0 else -1
        conn.execute("BEGIN")
        try:
            head, compacted = conn.execute(
                "SELECT revision, compact_revision FROM meta WHERE id = 1"
            ).fetchone()
            if revision == 0 or revision == head:
                sql = _LIST_CURRENT.format(lower=lower, upper=upper.format(col="k.key"))
                rows = conn.execute(sql, (*params, fetch)).fetchall()
                at = head
            else:
                if revision > head:
                    raise StorageError(prefix, f"revision {revision} is in the future (current {head})")
                if revision < compacted:
                    raise RevisionCompactedError(prefix, revision, compacted)
                sql = _LIST_AT.format(lower=lower, upper=upper.format(col="l.key"))
                rows = conn.execute(sql, (*params, revision, revision, fetch)).fetchall()
                at = revision
        finally:
            conn.execute("COMMIT")
        more = limit > 0 and len(rows) > limit
        if more:
            rows = rows[:limit]
        return ListResult([KeyValue(r[0], r[3], r[1], r[2]) for r in rows], at, more)

    def _read_events(self, prefix: str, after: int, limit: int) -> _Events:
        conn = self._reader()
        end = prefix_end(prefix)
        params: list[Any] = [after, prefix]
        upper = ""
        if end is not None:
            upper = "AND l.key < ?"
            params.append(end)
        params.append(limit)
        conn.execute("BEGIN")
        try:
            (compacted,) = conn.execute("SELECT compact_revision FROM meta WHERE id = 1").fetchone()
            if after < compacted:
                raise RevisionCompactedError(prefix, after, compacted)
            rows = conn.execute(_EVENTS.format(upper=upper), params).fetchall()
        finally:
            conn.execute("COMMIT")
        events: _Events = []
        for rev, key, deleted, create_rev, value, prev_rev, prev_create, prev_value in rows:
            prev = None if prev_rev is None else KeyValue(key, prev_value, prev_create, prev_rev)
            if deleted:
                assert prev is not None
                kv = KeyValue(key, prev.value, create_rev, rev)
                events.append(WatchEvent(EventType.DELETE, kv, prev, rev))
            else:
                events.append(WatchEvent(EventType.PUT, KeyValue(key, value, create_rev, rev), prev, rev))
        return events

    # -- writes (writer thread) -----------------------------------------------------------

    def _write_loop(self) -> None:
        conn = self._writer_conn
        assert conn is not None
        stopping = False
        try:
            while not stopping:
                pending_compaction = self._compact_goal > self._compacted
                try:
                    first = self._queue.get_nowait() if pending_compaction else self._queue.get()
                except queue.Empty:
                    first = None
                batch: _OpList = [] if first is None else [first]
                while first is not None and len(batch) < _MAX_BATCH:
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                writes = [op for op in batch if op.kind in (_CREATE, _UPDATE, _DELETE)]
                if writes:
                    self._commit_writes(conn, writes)
                for op in batch:
                    if op.kind == _COMPACT:
                        self._request_compaction(op)
                    elif op.kind == _STOP:
                        stopping = True
                if self._keep is not None and self._revision - self._compacted > self._keep + max(
                    self._keep // 10, 100
                ):
                    self._compact_goal = max(self._compact_goal, self._revision - self._keep)
                if self._compact_goal > self._compacted and not stopping:
                    self._compact_chunk(conn)
        finally:
            self._fail_leftovers()
            conn.close()
            self._post_done()

    def _post_done(self) -> None:
        def done() -> None:
            if not self._writer_done.done():
                self._writer_done.set_result(None)

        try:
            self._loop.call_soon_threadsafe(done)
        except RuntimeError:
            pass

    def _fail_leftovers(self) -> None:
        results: _Results = []
        while True:
            try:
                op = self._queue.get_nowait()
            except queue.Empty:
                break
            if op.future is not None:
                results.append((op.future, UnavailableError(op.key, f"storage {self._path} is closed")))
        for target, fut in self._compact_waiters:
            results.append((fut, UnavailableError("", f"storage closed before compacting to {target}")))
        self._compact_waiters.clear()
        self._post(results, [])

    def _commit_writes(self, conn: sqlite3.Connection, ops: _OpList) -> None:
        results: _Results = []
        events: _Events = []
        rev = self._revision
        try:
            conn.execute("BEGIN IMMEDIATE")
            for op in ops:
                try:
                    kv, ev = self._apply(conn, op, rev + 1)
                except StorageError as exc:
                    assert op.future is not None
                    results.append((op.future, exc))
                    continue
                rev += 1
                assert op.future is not None
                results.append((op.future, kv))
                events.append(ev)
            if events:
                conn.execute("UPDATE meta SET revision = ? WHERE id = 1", (rev,))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            err = UnavailableError("", f"sqlite write failed: {exc}")
            self._post([(op.future, err) for op in ops if op.future is not None], [])
            return
        self._revision = rev
        self._post(results, events)

    @staticmethod
    def _apply(conn: sqlite3.Connection, op: _Op, rev: int) -> tuple[KeyValue, WatchEvent]:
        """One write at revision ``rev`` inside the open transaction; a `StorageError` leaves the
        database untouched (checks come before any change)."""
        key = op.key
        row = conn.execute(_GET, (key,)).fetchone()
        if op.kind == _CREATE:
            if row is not None:
                raise KeyExistsError(key)
            conn.execute(_INSERT_LOG, (rev, key, 0, rev, None, op.value))
            conn.execute("INSERT INTO kv (key, create_revision, mod_revision) VALUES (?, ?, ?)", (key, rev, rev))
            kv = KeyValue(key, op.value, rev, rev)
            return kv, WatchEvent(EventType.PUT, kv, None, rev)
        if row is None:
            raise KeyNotFoundError(key)
        current = KeyValue(key, row[2], row[0], row[1])
        if op.kind == _UPDATE:
            if current.mod_revision != op.expected:
                raise ConflictError(key, current)
            conn.execute(_INSERT_LOG, (rev, key, 0, current.create_revision, current.mod_revision, op.value))
            conn.execute("UPDATE kv SET mod_revision = ? WHERE key = ?", (rev, key))
            kv = KeyValue(key, op.value, current.create_revision, rev)
            return kv, WatchEvent(EventType.PUT, kv, current, rev)
        if op.expected and current.mod_revision != op.expected:
            raise ConflictError(key, current)
        conn.execute(_INSERT_LOG, (rev, key, 1, current.create_revision, current.mod_revision, None))
        conn.execute("DELETE FROM kv WHERE key = ?", (key,))
        kv = KeyValue(key, current.value, current.create_revision, rev)
        return kv, WatchEvent(EventType.DELETE, kv, current, rev)

    def _request_compaction(self, op: _Op) -> None:
        assert op.future is not None
        target = op.expected
        if target > self._revision:
            self._post(
                [(op.future, StorageError("", f"cannot compact to {target}: current is {self._revision}"))], []
            )
        elif target <= self._compacted:
            self._post([(op.future, None)], [])
        else:
            self._compact_goal = max(self._compact_goal, target)
            self._compact_waiters.append((target, op.future))

    def _compact_chunk(self, conn: sqlite3.Connection) -> None:
        lo = self._compacted
        hi = min(self._compact_goal, lo + _COMPACT_CHUNK)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "DELETE FROM log WHERE revision IN (SELECT prev_revision FROM log "
                "WHERE revision > ? AND revision <= ? AND prev_revision IS NOT NULL)",
                (lo, hi),
            )
            conn.execute("DELETE FROM log WHERE revision > ? AND revision <= ? AND deleted = 1", (lo, hi))
            conn.execute("UPDATE meta SET compact_revision = ? WHERE id = 1", (hi,))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            self._compact_goal = self._compacted  # give up this round; retried on the next trigger
            waiters, self._compact_waiters = self._compact_waiters, []
            self._post([(f, UnavailableError("", f"compaction failed: {exc}")) for _, f in waiters], [])
            return
        self._compacted = hi
        done = [(t, f) for t, f in self._compact_waiters if t <= hi]
        if done:
            self._compact_waiters = [(t, f) for t, f in self._compact_waiters if t > hi]
            self._post([(f, None) for _, f in done], [])
