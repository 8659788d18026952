"""Watch streams on the wire: shape, resume, Table events, timeouts, expiry, many watchers, disconnects."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from typing import Any

import aiohttp

from tests.apiserver._http_harness import LiveServer, live  # noqa: F401

TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"


def _ns(live: LiveServer, name: str) -> None:  # noqa: F811
    r = live.request("POST", "/api/v1/namespaces", body={"metadata": {"name": name}})
    assert r.status in (201, 409), r.data


def _create(live: LiveServer, ns: str, name: str, **labels: str) -> dict[str, Any]:  # noqa: F811
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels}, "data": {"a": "1"}}
    r = live.request("POST", f"/api/v1/namespaces/{ns}/configmaps", body=body)
    assert r.status == 201, r.data
    return r.json()  # type: ignore[no-any-return]


class Lines:
    """Reads newline-delimited JSON events from a streamed urllib3 response."""

    def __init__(self, resp: Any) -> None:
        self.resp = resp
        self.buf = b""
        self.chunks = resp.stream(1024, decode_content=True)

    def next(self) -> dict[str, Any] | None:
        while b"\n" not in self.buf:
            try:
                chunk = next(self.chunks)
            except StopIteration:
                return None
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return json.loads(line)  # type: ignore[no-any-return]


def _watch(live: LiveServer, path: str, accept: str = "application/json") -> tuple[Any, Lines]:  # noqa: F811
    resp = live.request("GET", path, headers={"Accept": accept}, stream=True, timeout=20)
    return resp, Lines(resp)


def test_watch_stream_shape_and_resume(live: LiveServer) -> None:  # noqa: F811
    _ns(live, "w-shape")
    first = _create(live, "w-shape", "before")
    rv = first["metadata"]["resourceVersion"]
    resp, lines = _watch(live, f"/api/v1/namespaces/w-shape/configmaps?watch=true&resourceVersion={rv}")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "application/json"
    assert resp.headers.get("Transfer-Encoding") == "chunked"
    # headers arrived before any event: now make one
    _create(live, "w-shape", "after")
    ev = lines.next()
    assert ev is not None and ev["type"] == "ADDED"
    assert ev["object"]["kind"] == "ConfigMap" and ev["object"]["metadata"]["name"] == "after"
    live.request("DELETE", "/api/v1/namespaces/w-shape/configmaps/after")
    ev = lines.next()
    assert ev is not None and ev["type"] == "DELETED" and ev["object"]["metadata"]["name"] == "after"
    resp.close()


def test_watch_from_zero_replays_current_objects(live: LiveServer) -> None:  # noqa: F811
    _ns(live, "w-zero")
    _create(live, "w-zero", "one")
    _create(live, "w-zero", "two")
    resp, lines = _watch(live, "/api/v1/watch/namespaces/w-zero/configmaps?resourceVersion=0")
    got = {lines.next()["object"]["metadata"]["name"] for _ in range(2)}  # type: ignore[index]
    assert got == {"one", "two"}
    resp.close()


def test_watch_single_object_by_name(live: LiveServer) -> None:  # noqa: F811
    _ns(live, "w-name")
    rv = _create(live, "w-name", "other")["metadata"]["resourceVersion"]
    resp, lines = _watch(live, f"/api/v1/namespaces/w-name/configmaps/mine?watch=1&resourceVersion={rv}")
    _create(live, "w-name", "noise")
    _create(live, "w-name", "mine")
    ev = lines.next()
    assert ev is not None and ev["object"]["metadata"]["name"] == "mine"
    resp.close()


def test_table_watch_events_are_one_row_tables(live: LiveServer) -> None:  # noqa: F811
    _ns(live, "w-table")
    rv = _create(live, "w-table", "t0")["metadata"]["resourceVersion"]
    resp, lines = _watch(live, f"/api/v1/namespaces/w-table/configmaps?watch=true&resourceVersion={rv}", TABLE)
    _create(live, "w-table", "t1")
    _create(live, "w-table", "t2")
    first, second = lines.next(), lines.next()
    assert first is not None and second is not None
    for ev, name in ((first, "t1"), (second, "t2")):
        table = ev["object"]
        assert ev["type"] == "ADDED" and table["kind"] == "Table"
        assert len(table["rows"]) == 1 and table["rows"][0]["cells"][0] == name
        assert table["rows"][0]["object"]["kind"] == "PartialObjectMetadata"
    assert first["object"]["columnDefinitions"][0]["name"] == "Name"
    assert not second["object"]["columnDefinitions"]  # kube sends the headers once
    resp.close()


def test_timeout_seconds_ends_the_stream(live: LiveServer) -> None:  # noqa: F811
    _ns(live, "w-timeout")
    resp, lines = _watch(live, "/api/v1/namespaces/w-timeout/configmaps?watch=true&timeoutSeconds=1&resourceVersion=0")
    assert lines.next() is None  # the server closed the stream cleanly: no events, end of body
    resp.close()


def test_expired_resource_version_is_an_error_event(live: LiveServer) -> None:  # noqa: F811
    _ns(live, "w-gone")
    for i in range(3):
        _create(live, "w-gone", f"g{i}")
    latest = int(live.request("GET", "/api/v1/namespaces/w-gone/configmaps").json()["metadata"]["resourceVersion"])
    live.call(lambda: live.storage.compact(latest))
    resp, lines = _watch(live, "/api/v1/namespaces/w-gone/configmaps?watch=true&resourceVersion=2")
    assert resp.status == 200
    ev = lines.next()
    assert ev is not None and ev["type"] == "ERROR"
    status = ev["object"]
    assert status["kind"] == "Status" and status["code"] == 410 and status["reason"] == "Expired"
    assert lines.next() is None
    resp.close()


def test_bad_selector_is_a_plain_400(live: LiveServer) -> None:  # noqa: F811
    r = live.request("GET", "/api/v1/configmaps?watch=true&labelSelector=a%20in%20(")
    assert r.status == 400
    assert r.json()["kind"] == "Status"


async def _ssl(live: LiveServer) -> ssl.SSLContext:  # noqa: F811
    ctx = ssl.create_default_context(cafile=str(live.pki.ca))
    ctx.load_cert_chain(str(live.pki.admin_cert), str(live.pki.admin_key))
    return ctx


async def test_hundred_watchers_all_see_an_event_and_disconnects_are_cleaned_up(live: LiveServer) -> None:  # noqa: F811
    _ns(live, "w-many")
    rv = _create(live, "w-many", "seed")["metadata"]["resourceVersion"]
    ctx = await _ssl(live)
    url = f"{live.url}/api/v1/namespaces/w-many/configmaps?watch=true&resourceVersion={rv}"
    before = live.server.hub.active
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx, limit=0)) as session:
        responses = await asyncio.gather(*(session.get(url) for _ in range(100)))
        assert all(r.status == 200 for r in responses)
        assert live.server.hub.active >= 100
        await asyncio.to_thread(_create, live, "w-many", "ping")
        lines = await asyncio.wait_for(asyncio.gather(*(r.content.readline() for r in responses)), 30)
        for line in lines:
            ev = json.loads(line)
            assert ev["type"] == "ADDED" and ev["object"]["metadata"]["name"] == "ping"
        for r in responses:
            r.close()
    # every stream's producer and store watch end once the clients are gone
    deadline = time.monotonic() + 20
    while live.server.hub.active > before and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert live.server.hub.active <= before
