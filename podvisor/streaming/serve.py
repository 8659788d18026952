"""The node agent's entry points: serve exec/attach, port-forward and logs on an aiohttp request.

Each looks at the request's upgrade headers and picks the protocol the client speaks:

exec / attach  ``Upgrade: websocket``  -> channel protocol v5/v4/v1 (binary or base64)
               ``Upgrade: SPDY/3.1``   -> SPDY streams, protocol v4..v1
port-forward   WebSocket with ``SPDY/3.1+portforward.k8s.io`` -> SPDY tunnelled in WebSocket (kubectl)
               other WebSocket          -> channels 2i/2i+1 with ``?ports=`` (the Python client)
               ``Upgrade: SPDY/3.1``    -> SPDY, ``portforward.k8s.io`` (kubectl's fallback)
logs           plain GET               -> chunked text, flushed as it comes

Anything else is answered 400 in plain text, as the kubelet does. The handler must return what these
return (after a WebSocket or SPDY session the connection is closed; aiohttp writes nothing more).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

from aiohttp import web

from podvisor.streaming.channel import client_gone
from podvisor.streaming.portforward import (
    PORTFORWARD_PROTOCOL,
    TUNNEL_PROTOCOL,
    parse_ports,
    serve_portforward_channels,
    serve_portforward_session,
    serve_portforward_tunnel,
)
from podvisor.streaming.spdyexec import serve_exec_spdy
from podvisor.streaming.spdyserve import is_spdy_request, spdy_handshake, upgrade_spdy
from podvisor.streaming.target import ExecOptions, ExecTarget, PortForwardTarget
from podvisor.streaming.wschannel import is_websocket_request, requested_protocols
from podvisor.streaming.wsexec import serve_exec_websocket

__all__ = ["serve_exec", "serve_attach", "serve_portforward", "serve_log"]

_UPGRADE_REQUIRED = "Upgrade request required"


async def serve_exec(request: web.Request, target: ExecTarget, *, options: ExecOptions | None = None,
                     stream_creation_timeout: float = 30.0) -> web.StreamResponse:
    """Serve an exec (or attach) request with ``target``. ``options`` default to the request's query
    (``command``, ``container``, ``stdin``, ``stdout``, ``stderr``, ``tty``)."""
    if options is None:
        try:
            options = ExecOptions.from_query(request.query)
        except ValueError as exc:
            return web.Response(status=400, text=str(exc))
    if is_websocket_request(request):
        return await serve_exec_websocket(request, target, options)
    if is_spdy_request(request):
        return await serve_exec_spdy(request, target, options, stream_creation_timeout=stream_creation_timeout)
    return web.Response(status=400, text=_UPGRADE_REQUIRED)


serve_attach = serve_exec
"""Attach is exec's protocol with another target (one that joins the container's own streams)."""


async def serve_portforward(request: web.Request, target: PortForwardTarget, *, ports: Sequence[int] | None = None,
                            label: str = "", stream_creation_timeout: float = 30.0) -> web.StreamResponse:
    """Serve a port-forward request with ``target``. ``ports`` (the Python client's WebSocket variant)
    default to the ``ports`` query parameter; ``label`` names the pod in error messages."""
    if is_websocket_request(request):
        if TUNNEL_PROTOCOL in requested_protocols(request):
            return await serve_portforward_tunnel(request, target, label=label,
                                                  stream_creation_timeout=stream_creation_timeout)
        if ports is None:
            try:
                # "ports" from clients; "port" is the kubelet's own spelling
                ports = parse_ports(request.query.getall("ports", []) + request.query.getall("port", []))
            except ValueError as exc:
                return web.Response(status=400, text=str(exc))
        return await serve_portforward_channels(request, target, ports, label=label)
    if is_spdy_request(request):
        negotiated = spdy_handshake(request, (PORTFORWARD_PROTOCOL,))
        if isinstance(negotiated, web.Response):
            return negotiated
        session, conn = await upgrade_spdy(request, negotiated)
        try:
            await serve_portforward_session(session, target, label=label,
                                            stream_creation_timeout=stream_creation_timeout)
        finally:
            await session.close()
        return conn.response
    return web.Response(status=400, text=_UPGRADE_REQUIRED)


async def serve_log(request: web.Request, chunks: AsyncIterator[bytes], *, limit_bytes: int | None = None,
                    poll: float = 2.0) -> web.StreamResponse:
    """Stream ``chunks`` (a container's log, already cut to tail/since/timestamps by the caller) as
    ``text/plain``, chunked and flushed per chunk so ``kubectl logs -f`` shows lines as they come.
    Stops after ``limit_bytes``, when ``chunks`` ends, or when the client has gone (checked every
    ``poll`` seconds while the source is quiet)."""
    resp = web.StreamResponse(status=200, headers={"Content-Type": "text/plain"})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    sent = 0
    iterator = chunks.__aiter__()
    pending: asyncio.Future[bytes] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(iterator.__anext__())
            done, _ = await asyncio.wait({pending}, timeout=poll)
            if not done:
                if client_gone(request):
                    break
                continue
            finished, pending = pending, None
            try:
                chunk = finished.result()
            except StopAsyncIteration:
                break
            if limit_bytes is not None:
                chunk = chunk[: max(0, limit_bytes - sent)]
            if chunk:
                await resp.write(chunk)
                sent += len(chunk)
            if limit_bytes is not None and sent >= limit_bytes:
                break
    except ConnectionError:
        pass
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()
    with contextlib.suppress(ConnectionError):
        await resp.write_eof()
    return resp
