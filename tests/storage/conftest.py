"""Engines under test: every conformance test runs once per engine kind.

``sqlite`` and ``etcd`` are the bare engines; ``+cache`` puts a `WatchCache` in front. etcd is
Debian's ``etcd`` binary, started once per session on loopback ports in a temporary directory; each
test gets its own key root so tests do not see each other's keys.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable

import pytest

from podvisor.storage import SQLiteStorage, Storage, WatchCache

ETCD_BIN = shutil.which("etcd") or "/usr/bin/etcd"
ENGINES = ["sqlite", "sqlite+cache", "etcd", "etcd+cache"]
_roots = itertools.count()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@runtime_checkable
class Compactable(Protocol):
    """Every engine and the cache can drop history (not part of `Storage`)."""

    async def compact(self, revision: int) -> None: ...


class EtcdServer:
    """One etcd member on loopback, in its own data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.client_port = _free_port()
        self.peer_port = _free_port()
        self.url = f"http://127.0.0.1:{self.client_port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        peer = f"http://127.0.0.1:{self.peer_port}"
        log = open(self.data_dir.parent / "etcd.log", "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [
                ETCD_BIN,
                "--name", "pv-test",
                "--data-dir", str(self.data_dir),
                "--listen-client-urls", self.url,
                "--advertise-client-urls", self.url,
                "--listen-peer-urls", peer,
                "--initial-advertise-peer-urls", peer,
                "--initial-cluster", f"pv-test={peer}",
                "--initial-cluster-state", "new",
                "--log-level", "error",
            ],
            stdout=log,
            stderr=log,
        )
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"etcd exited with {self.proc.returncode}; see {self.data_dir.parent}/etcd.log")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1) as resp:
                    if b'"true"' in resp.read():
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError("etcd did not become healthy in 30 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="session")
def etcd_server() -> Iterator[EtcdServer]:
    if not os.path.exists(ETCD_BIN):
        pytest.fail(f"etcd not found at {ETCD_BIN}: run `make setup` (Debian package etcd-server)")
    tmp = Path(tempfile.mkdtemp(prefix="pv-etcd-"))
    server = EtcdServer(tmp / "data")
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


class Harness:
    """Opens (and re-opens) the store under test and knows how to compact it."""

    def __init__(self, kind: str, tmp_path: Path, etcd: EtcdServer | None) -> None:
        self.kind = kind
        self.engine = kind.split("+")[0]
        self.cached = kind.endswith("+cache")
        self.db_path = tmp_path / "state.sqlite"
        self.etcd = etcd
        # A fresh key root per test: etcd is shared by the whole session.
        self.root = f"/t{next(_roots)}-{os.getpid()}/registry/"
        self.opened: list[Storage] = []

    async def open_engine(self) -> Storage:
        if self.engine == "sqlite":
            return await SQLiteStorage.open(self.db_path, keep_revisions=None)
        from podvisor.storage.etcd import EtcdStorage

        assert self.etcd is not None
        return await EtcdStorage.open([self.etcd.url])

    async def open(self, *, cache_capacity: int = 10_000) -> Storage:
        store = await self.open_engine()
        if self.cached:
            store = await WatchCache.open(store, capacity=cache_capacity)
        self.opened.append(store)
        return store

    async def compact(self, store: Storage, revision: int) -> None:
        assert isinstance(store, Compactable), f"{type(store).__name__} cannot compact"
        await store.compact(revision)

    def key(self, *parts: str) -> str:
        return self.root + "/".join(parts)

    async def close_all(self) -> None:
        for store in self.opened:
            await store.close()


@pytest.fixture(params=ENGINES)
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    kind: str = request.param
    etcd = request.getfixturevalue("etcd_server") if kind.startswith("etcd") else None
    h = Harness(kind, tmp_path, etcd)
    try:
        yield h
    finally:
        await h.close_all()


@pytest.fixture
async def store(harness: Harness) -> Storage:
    return await harness.open()
