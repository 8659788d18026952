"""Fixtures: one background event loop per module, a node-agent stand-in on it, kubectl pointed at it,
and (for the relay tests) a TLS node agent behind a small API server."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.streaming.harness import Backend, Kubectl, LoopThread, MiniAPI, make_pki, tls_contexts


@pytest.fixture(scope="module")
def loop() -> Iterator[LoopThread]:
    thread = LoopThread()
    yield thread
    thread.stop()


@pytest.fixture(scope="module")
def backend(loop: LoopThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    b = Backend(workdir=tmp_path_factory.mktemp("work"))
    loop.run(b.start())
    yield b
    loop.run(b.stop())


@pytest.fixture(scope="module")
def kubectl(backend: Backend, tmp_path_factory: pytest.TempPathFactory) -> Kubectl:
    return Kubectl(backend.url, tmp_path_factory.mktemp("home"))


@dataclass
class Relayed:
    backend: Backend
    api: MiniAPI
    kubectl: Kubectl


@pytest.fixture(scope="module")
def relayed(loop: LoopThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relayed]:
    pki = make_pki(tmp_path_factory.mktemp("pki"))
    server_ctx, client_ctx = tls_contexts(pki)
    b = Backend(workdir=tmp_path_factory.mktemp("work"))
    loop.run(b.start(ssl_context=server_ctx))
    api = MiniAPI(b.url, client_ctx)
    loop.run(api.start())
    yield Relayed(b, api, Kubectl(api.url, tmp_path_factory.mktemp("home")))
    loop.run(api.stop())
    loop.run(b.stop())
