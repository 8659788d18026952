"""Start, readiness and graceful stop of `APIServer`, and the streaming seam — on the test's own loop
(plain HTTP: TLS is covered by the other HTTP tests)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from podvisor.apiserver.authn import Authenticator
from podvisor.apiserver.rest import UserInfo
from podvisor.apiserver.server import APIServer

TOKEN = "lifecycle-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[Any]:
    from podvisor.storage.sqlite import SQLiteStorage

    s = await SQLiteStorage.open(tmp_path / "state.db")
    yield s
    await s.close()


@pytest.fixture
async def registry(storage: Any) -> Any:
    from podvisor.apiserver.registry import bootstrap, build_registry

    reg = await build_registry(storage)
    await bootstrap(reg)
    return reg


def _server(registry: Any, storage: Any, **kw: Any) -> APIServer:
    return APIServer(registry, host="127.0.0.1", port=0, ssl_context=None,
                     authenticator=Authenticator(tokens={TOKEN: UserInfo("tester")}), storage=storage,
                     shutdown_timeout=5, **kw)


async def test_ready_only_after_post_start_hooks(registry: Any, storage: Any) -> None:
    release = asyncio.Event()

    async def slow_hook() -> None:
        await release.wait()

    server = _server(registry, storage, post_start_hooks=[("slow-thing", slow_hook)])
    await server.start()
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{server.url}/readyz") as r:
                assert r.status == 500
                assert "[-]poststarthook/slow-thing failed: reason withheld" in await r.text()
            async with s.get(f"{server.url}/livez") as r:
                assert r.status == 200
            release.set()
            await server.wait_ready()
            async with s.get(f"{server.url}/readyz") as r:
                assert r.status == 200 and await r.text() == "ok"
    finally:
        await server.stop()


async def test_stop_ends_watches_cleanly_and_finishes_requests(registry: Any, storage: Any) -> None:
    server = _server(registry, storage)
    await server.start()
    url = server.url
    async with aiohttp.ClientSession(headers=AUTH) as s:
        watch = await s.get(f"{url}/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=0")
        assert watch.status == 200
        assert server.hub.active == 1
        await server.stop()
        # the stream ended with a proper end of body, not a reset
        rest = await asyncio.wait_for(watch.content.read(), 10)
        assert rest == b"" or all(json.loads(line)["type"] for line in rest.splitlines())
        assert watch.content.at_eof()
        watch.close()
        with pytest.raises(aiohttp.ClientConnectionError):
            async with s.get(f"{url}/readyz"):
                pass
    await server.stop()  # twice is fine


class _Backend:
    """A node agent stand-in that serves logs and fails exec, to exercise the seam."""

    async def log(self, pod: dict[str, Any], request: web.Request, user: UserInfo) -> web.StreamResponse:
        tail = request.query.get("tailLines", "all")
        return web.Response(text=f"logs of {pod['metadata']['name']} for {user.name} ({tail})\n")

    async def exec(self, pod: dict[str, Any], request: web.Request, user: UserInfo) -> web.StreamResponse:
        raise RuntimeError("secret internals /very/private/path")

    async def attach(self, pod: dict[str, Any], request: web.Request, user: UserInfo) -> web.StreamResponse:
        raise NotImplementedError

    async def portforward(self, pod: dict[str, Any], request: web.Request, user: UserInfo) -> web.StreamResponse:
        raise NotImplementedError


async def test_streaming_backend_seam_and_internal_errors(registry: Any, storage: Any) -> None:
    server = _server(registry, storage)
    await server.start()
    try:
        server.set_streaming_backend(_Backend())
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
               "spec": {"containers": [{"name": "a", "image": "busybox"}]}}
        async with aiohttp.ClientSession(headers=AUTH) as s:
            async with s.post(f"{server.url}/api/v1/namespaces/default/pods", json=pod) as r:
                assert r.status == 201, await r.text()
            async with s.get(f"{server.url}/api/v1/namespaces/default/pods/p/log?tailLines=5") as r:
                assert r.status == 200
                assert await r.text() == "logs of p for tester (5)\n"
            async with s.post(f"{server.url}/api/v1/namespaces/default/pods/p/exec?command=true") as r:
                assert r.status == 500
                body = await r.json()
                assert body["kind"] == "Status" and body["reason"] == "InternalError"
                text = json.dumps(body)
                assert "Traceback" not in text and "/very/private/path" not in text
    finally:
        await server.stop()
