"""What only the SQLite engine promises: it survives SIGKILL, one process owns the file, and the
history window is bounded automatically."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from podvisor.storage import RevisionCompactedError, SQLiteStorage, UnavailableError, WatchEvent

from .crash_writer import check_value

REPO = Path(__file__).resolve().parents[2]


def run_writer_until_killed(db: Path, *, writers: int, commits: int) -> list[tuple[int, str, int]]:
    """Start a writer process, let it confirm at least ``commits`` writes, SIGKILL it mid-stream,
    and return every write it confirmed before dying."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.storage.crash_writer", str(db), str(writers)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    confirmed: list[tuple[int, str, int]] = []
    try:
        for line in proc.stdout:
            rev, key, seq = line.split()
            confirmed.append((int(rev), key.decode(), int(seq)))
            if len(confirmed) >= commits:
                break
        else:
            raise AssertionError(f"writer died early: {proc.stderr.read().decode() if proc.stderr else ''}")
        os.kill(proc.pid, signal.SIGKILL)
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    for text in rest.decode().split("\n")[:-1]:  # confirmed between our read and the kill
        r, k, q = text.split()  # (the last piece may be a line cut short by the kill: dropped)
        confirmed.append((int(r), k, int(q)))
    return confirmed


async def history(store: SQLiteStorage, upto: int) -> list[WatchEvent]:
    events: list[WatchEvent] = []
    if upto == 0:
        return events
    watch = store.watch("", from_revision=0)
    async for ev in watch:
        events.append(ev)
        if ev.revision >= upto:
            break
    await watch.aclose()
    return events


async def test_sigkilled_writer_loses_no_committed_write(tmp_path: Path) -> None:
    db = tmp_path / "crash.sqlite"
    confirmed = run_writer_until_killed(db, writers=4, commits=300)
    confirmed += run_writer_until_killed(db, writers=3, commits=150)  # a second life, killed again

    store = await SQLiteStorage.open(db, keep_revisions=None)
    try:
        current = await store.current_revision()
        assert current >= max(rev for rev, _, _ in confirmed)
        events = await history(store, current)
        # The counter never skipped or repeated, across both kills.
        assert [ev.revision for ev in events] == list(range(1, current + 1))
        by_revision = {ev.revision: ev for ev in events}
        for rev, key, seq in confirmed:
            ev = by_revision[rev]
            assert ev.kv.key == key
            assert check_value(ev.kv.value)["seq"] == seq
        # Every stored value is whole, and no key is older than its last confirmed write.
        last_rev: dict[str, int] = {}
        for rev, key, _ in confirmed:
            last_rev[key] = max(rev, last_rev.get(key, 0))
        listed = await store.list("/registry/")
        for kv in listed.items:
            check_value(kv.value)
        stored = {kv.key: kv.mod_revision for kv in listed.items}
        for key, rev in last_rev.items():
            assert stored[key] >= rev
        # And the store goes on counting from where it was.
        nxt = await store.create("/registry/core/configmaps/crash/after", b"{}")
        assert nxt.mod_revision == current + 1
    finally:
        await store.close()


async def test_second_process_cannot_open_the_same_file(tmp_path: Path) -> None:
    db = tmp_path / "owned.sqlite"
    store = await SQLiteStorage.open(db)
    try:
        code = (
            "import asyncio, sys\n"
            "from podvisor.storage import SQLiteStorage, UnavailableError\n"
            "async def main():\n"
            "    try:\n"
            f"        await SQLiteStorage.open({str(db)!r})\n"
            "    except UnavailableError:\n"
            "        sys.exit(3)\n"
            "asyncio.run(main())\n"
        )
        proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code, cwd=REPO)
        assert await proc.wait() == 3
    finally:
        await store.close()
    again = await SQLiteStorage.open(db)  # released on close
    await again.close()


async def test_history_window_is_bounded(tmp_path: Path) -> None:
    store = await SQLiteStorage.open(tmp_path / "window.sqlite", keep_revisions=100)
    try:
        kv = await store.create("/r/k", b"0")
        await store.create("/r/stays", b"s")
        for i in range(1, 400):
            kv = await store.update("/r/k", b"%d" % i, expected_revision=kv.mod_revision)
        await store.create("/r/x", b"x")
        await store.delete("/r/x")
        current = await store.current_revision()
        for _ in range(200):  # compaction runs in the writer between write batches
            if current - await store.compacted_revision() <= 200:  # keep + slack
                break
            await asyncio.sleep(0.01)
        oldest = await store.compacted_revision()
        assert 0 < oldest and current - oldest <= 200
        with pytest.raises(RevisionCompactedError) as err:
            await store.list("/r/", revision=oldest - 1)
        assert err.value.oldest == oldest
        with pytest.raises(RevisionCompactedError):
            await anext(aiter(store.watch("/r/", from_revision=oldest - 1)))
        at = await store.list("/r/", revision=oldest)
        assert {k.key for k in at.items} == {"/r/k", "/r/stays"}
        assert (await store.get("/r/stays")).value == b"s"  # untouched keys outlive compaction
    finally:
        await store.close()


async def test_closed_store_refuses_work(tmp_path: Path) -> None:
    store = await SQLiteStorage.open(tmp_path / "closed.sqlite")
    watch = store.watch("/", from_revision=0)
    await store.close()
    for call in (store.get("/a"), store.create("/a", b""), store.list("/"), store.current_revision()):
        with pytest.raises(UnavailableError):
            await call
    with pytest.raises(StopAsyncIteration):
        await anext(aiter(watch))


async def test_watch_falling_behind_catches_up_from_history(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A raw-engine watcher that stops reading while more events pass than it may buffer loses
    none of them (the buffer is shrunk so the test stays small)."""
    from podvisor.storage import _sqlite_watch as sqlite_watch

    monkeypatch.setattr(sqlite_watch, "SUBSCRIBER_BUFFER", 50)
    monkeypatch.setattr(sqlite_watch, "REPLAY_PAGE", 40)
    store = await SQLiteStorage.open(tmp_path / "lag.sqlite")
    try:
        watch = store.watch("/lag/", from_revision=0)
        first = await store.create("/lag/0", b"0")
        assert (await anext(aiter(watch))).kv == first
        n = 500
        await asyncio.gather(*(store.create(f"/lag/{i}", b"%d" % i) for i in range(1, n)))
        got = []
        async for ev in watch:
            got.append(ev.revision)
            if len(got) == n - 1:
                break
        assert got == list(range(first.mod_revision + 1, first.mod_revision + n))
    finally:
        await store.close()
