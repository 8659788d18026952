"""The API server's side of streaming: relay a request to the node agent without decoding it.

As kube-apiserver's UpgradeAwareHandler does for the kubelet, we forward the client's request (its
method, query and upgrade headers; never its credentials) to the node agent over our own connection,
read the answer's head, and then:

- ``101 Switching Protocols``: send the same 101 (same ``Sec-WebSocket-Accept``, subprotocol or
  ``X-Stream-Protocol-Version``) to the client, take its connection over and splice the two byte
  streams until either side closes. WebSocket, SPDY and SPDY-in-WebSocket all pass through untouched:
  the API server needs no knowledge of channels or frames, and the node agent negotiates the protocol
  with the client itself.
- anything else (pods/log, or an upgrade the node agent refused): relay status, headers and body,
  streaming the body chunk by chunk (``kubectl logs -f``) until the node agent ends it or the client
  goes away.

The node agent sees the request from the API server's identity (the client certificate in
``ssl_context``); extra ``headers`` are added to the forwarded request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Mapping

from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from podvisor.streaming.channel import client_gone, upgrade_raw

__all__ = ["proxy_upgrade", "proxy_log", "UpstreamError"]

log = logging.getLogger("podvisor.streaming.proxy")

_HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te",
    "trailer", "transfer-encoding", "upgrade",
})
_NOT_FORWARDED = frozenset({"host", "authorization", "content-length", "expect", "accept-encoding", "cookie"})
_NOT_RETURNED = frozenset({"content-length", "date", "server"})
_READ = 64 * 1024


class UpstreamError(Exception):
    """The node agent could not be reached or did not answer HTTP."""


def _is_upgrade(request: web.BaseRequest) -> bool:
    return "upgrade" in request.headers.get("Connection", "").lower() and bool(request.headers.get("Upgrade"))


def _request_head(request: web.BaseRequest, url: URL, upgrade: bool, body_len: int,
                  extra: Mapping[str, str] | None) -> bytes:
    host = url.host or ""
    if ":" in host:
        host = f"[{host}]"
    if url.explicit_port:
        host = f"{host}:{url.port}"
    lines = [f"{request.method} {url.raw_path_qs} HTTP/1.1", f"Host: {host}"]
    overridden = {k.lower() for k in (extra or {})}
    for name, value in request.headers.items():
        low = name.lower()
        if low in _HOP_BY_HOP or low in _NOT_FORWARDED or low.startswith("impersonate-") or low in overridden:
            continue
        lines.append(f"{name}: {value}")
    if upgrade:
        lines.append("Connection: Upgrade")
        lines.append(f"Upgrade: {request.headers['Upgrade']}")
    else:
        lines.append("Connection: close")
    if body_len or request.method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {body_len}")
    for name, value in (extra or {}).items():
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _response_head(reader: asyncio.StreamReader) -> tuple[int, str, list[tuple[str, str]]]:
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        raise UpstreamError(f"the node agent sent no valid HTTP response head: {exc}") from exc
    lines = raw.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise UpstreamError(f"the node agent sent a malformed status line: {lines[0]!r}")
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(":")
        headers.append((name.strip(), value.strip()))
    return int(parts[1]), (parts[2] if len(parts) > 2 else ""), headers


async def _body(reader: asyncio.StreamReader, headers: CIMultiDict[str]) -> AsyncIterator[bytes]:
    if "chunked" in headers.get("Transfer-Encoding", "").lower():
        while True:
            line = await reader.readline()
            if not line:
                return
            size = int(line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while (await reader.readline()).strip():
                    pass  # trailers
                return
            yield await reader.readexactly(size)
            await reader.readexactly(2)
    elif "Content-Length" in headers:
        left = int(headers["Content-Length"])
        while left > 0:
            chunk = await reader.read(min(left, _READ))
            if not chunk:
                return
            left -= len(chunk)
            yield chunk
    else:
        while chunk := await reader.read(_READ):
            yield chunk


async def _watch_client(request: web.BaseRequest, writer: asyncio.StreamWriter, poll: float) -> None:
    while not client_gone(request):
        await asyncio.sleep(poll)
    writer.close()


async def _relay_response(request: web.BaseRequest, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                          status: int, reason: str, head: list[tuple[str, str]], poll: float) -> web.StreamResponse:
    headers = CIMultiDict(head)
    resp = web.StreamResponse(status=status, reason=reason or None)
    for name, value in head:
        if name.lower() not in _HOP_BY_HOP and name.lower() not in _NOT_RETURNED:
            resp.headers.add(name, value)
    no_body = request.method == "HEAD" or status in (204, 304) or 100 <= status < 200
    if "Content-Length" in headers and not no_body:
        resp.content_length = int(headers["Content-Length"])
    await resp.prepare(request)
    if not no_body:
        watcher = asyncio.create_task(_watch_client(request, writer, poll))
        try:
            async for chunk in _body(reader, headers):
                await resp.write(chunk)
        except (asyncio.IncompleteReadError, ConnectionError, OSError, ValueError) as exc:
            log.debug("relay of %s ended: %s", request.path, exc)
        finally:
            watcher.cancel()
    with contextlib.suppress(ConnectionError, RuntimeError):
        await resp.write_eof()
    return resp


async def _splice(request: web.BaseRequest, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                  reason: str, head: list[tuple[str, str]]) -> web.StreamResponse:
    answer = [(k, v) for k, v in head if k.lower() not in _NOT_RETURNED and k.lower() != "transfer-encoding"]
    conn = await upgrade_raw(request, answer, status=101, reason=reason or None)

    async def client_to_node() -> None:
        while data := await conn.read():
            writer.write(data)
            await writer.drain()

    async def node_to_client() -> None:
        while data := await reader.read(_READ):
            await conn.write(data)

    tasks = [asyncio.create_task(client_to_node()), asyncio.create_task(node_to_client())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        await conn.close()
    return conn.response


async def _relay(request: web.BaseRequest, upstream_url: str | URL, *, ssl_context: ssl.SSLContext | None,
                 headers: Mapping[str, str] | None, connect_timeout: float, poll: float) -> web.StreamResponse:
    url = URL(upstream_url)
    secure = url.scheme == "https"
    if not url.host:
        raise ValueError(f"upstream URL has no host: {upstream_url}")
    port = url.port or (443 if secure else 80)
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(url.host, port, ssl=(ssl_context or ssl.create_default_context()) if secure else None,
                                    server_hostname=url.host if secure else None),
            connect_timeout)
    except (OSError, TimeoutError, ssl.SSLError) as exc:
        raise UpstreamError(f"error dialing backend: {exc or type(exc).__name__}") from exc
    try:
        upgrade = _is_upgrade(request)
        body = b"" if upgrade or not request.can_read_body else await request.read()
        writer.write(_request_head(request, url, upgrade, len(body), headers) + body)
        await writer.drain()
        status, reason, head = await _response_head(reader)
        if status == 101 and upgrade:
            return await _splice(request, reader, writer, reason, head)
        return await _relay_response(request, reader, writer, status, reason, head, poll)
    except (ConnectionError, OSError) as exc:
        raise UpstreamError(f"error talking to backend: {exc}") from exc
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def proxy_upgrade(request: web.BaseRequest, upstream_url: str | URL, *,
                        ssl_context: ssl.SSLContext | None = None, headers: Mapping[str, str] | None = None,
                        connect_timeout: float = 10.0, poll: float = 2.0) -> web.StreamResponse:
    """Relay ``request`` (exec, attach, port-forward: an upgrade) to ``upstream_url`` (the node
    agent's URL, query included) and splice the connections after its 101. Raises `UpstreamError`
    when the node agent cannot be reached; relays its answer when it refuses the upgrade."""
    return await _relay(request, upstream_url, ssl_context=ssl_context, headers=headers,
                        connect_timeout=connect_timeout, poll=poll)


async def proxy_log(request: web.BaseRequest, upstream_url: str | URL, *,
                    ssl_context: ssl.SSLContext | None = None, headers: Mapping[str, str] | None = None,
                    connect_timeout: float = 10.0, poll: float = 2.0) -> web.StreamResponse:
    """Relay a plain request (pods/log) to ``upstream_url``, streaming the answer's body as it comes
    (the client sees each chunk of ``logs -f`` when the node agent sends it). Raises `UpstreamError`
    when the node agent cannot be reached."""
    return await _relay(request, upstream_url, ssl_context=ssl_context, headers=headers,
                        connect_timeout=connect_timeout, poll=poll)
