"""Exec and attach over SPDY/3.1: kubectl's fallback when the WebSocket upgrade fails (and its only way
before 1.30; ``KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false`` forces it).

The client opens one stream per standard stream, each with a ``streamType`` header: ``error`` always,
``stdin``/``stdout``/``stderr`` as asked in the query (no stderr with a tty), and ``resize`` with a tty
from protocol v3 on. We accept every stream (SYN_REPLY) and wait, up to the stream-creation timeout,
until all expected ones are there, then run the target. At the end the Status goes on the error stream
(JSON in v4, text before), every stream is half-closed (the client waits for our FIN on stdin, too),
and we give the client a moment to read it all and hang up before we close the connection ourselves:
spdystream drops frames it has not handled when the connection ends under it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from podvisor.streaming.execio import ResizeFeed, run_target
from podvisor.streaming.spdy.session import SpdySession, SpdyStream
from podvisor.streaming.spdyserve import spdy_handshake, upgrade_spdy
from podvisor.streaming.status import encode_status, outcome_status
from podvisor.streaming.target import ExecOptions, ExecTarget

__all__ = ["serve_exec_spdy", "SPDY_EXEC_PROTOCOLS"]

log = logging.getLogger("podvisor.streaming")

# v5 over SPDY is the same as v4 for the client; like the kubelet we answer v4.
SPDY_EXEC_PROTOCOLS = ("v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io")


class _StreamOutput:
    def __init__(self, stream: SpdyStream) -> None:
        self._stream = stream

    async def write(self, data: bytes) -> None:
        if data:
            await self._stream.write(data)


async def _iter_stream(stream: SpdyStream) -> AsyncIterator[bytes]:
    while data := await stream.read():
        yield data


async def _feed_resize(stream: SpdyStream, feed: ResizeFeed) -> None:
    try:
        while data := await stream.read():
            feed.feed(data)
    finally:
        feed.close()


async def _wait_for_streams(session: SpdySession, wanted: set[str], limit: float) -> dict[str, SpdyStream]:
    streams: dict[str, SpdyStream] = {}

    async def collect() -> None:
        while not wanted <= streams.keys():
            stream = await session.accept()
            if stream is None:
                raise ConnectionResetError("client closed the connection before creating its streams")
            await stream.reply()
            kind = stream.header("streamtype")
            if kind in wanted:
                streams[kind] = stream
            else:
                log.info("ignoring unexpected exec stream type %r", kind)
                stream.discard()

    await asyncio.wait_for(collect(), limit)
    return streams


async def serve_exec_spdy(request: web.Request, target: ExecTarget, options: ExecOptions, *,
                          stream_creation_timeout: float = 30.0, linger: float = 5.0) -> web.StreamResponse:
    """Serve one exec/attach session on ``request`` (a SPDY/3.1 upgrade) with ``target``."""
    negotiated = spdy_handshake(request, SPDY_EXEC_PROTOCOLS)
    if isinstance(negotiated, web.Response):
        return negotiated
    session, conn = await upgrade_spdy(request, negotiated)
    resizable = negotiated in ("v4.channel.k8s.io", "v3.channel.k8s.io")
    wanted = {"error"}
    for kind, on in (("stdin", options.stdin), ("stdout", options.stdout), ("stderr", options.stderr),
                     ("resize", options.tty and resizable)):
        if on:
            wanted.add(kind)
    try:
        try:
            streams = await _wait_for_streams(session, wanted, stream_creation_timeout)
        except (TimeoutError, ConnectionError) as exc:
            log.info("exec over SPDY not started: %s", exc)
            return conn.response
        resize = ResizeFeed()
        resize_task = (asyncio.create_task(_feed_resize(streams["resize"], resize)) if "resize" in streams
                       else None)
        if resize_task is None:
            resize.close()
        gone = asyncio.Event()
        watcher = asyncio.create_task(_watch_session(session, gone))
        try:
            outcome = await run_target(
                target,
                stdin=_iter_stream(streams["stdin"]) if "stdin" in streams else None,
                stdout=_StreamOutput(streams["stdout"]) if "stdout" in streams else None,
                stderr=_StreamOutput(streams["stderr"]) if "stderr" in streams else None,
                tty=options.tty,
                resize=resize,
                client_gone=gone,
            )
        finally:
            watcher.cancel()
            if resize_task is not None:
                resize_task.cancel()
        if outcome is not None:
            payload = encode_status(outcome_status(outcome), structured=negotiated == "v4.channel.k8s.io")
            with contextlib.suppress(ConnectionError):
                if payload:
                    await streams["error"].write(payload)
                for stream in streams.values():
                    stream.discard()
                    await stream.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(session.wait_closed(), linger)
    finally:
        await session.close()
    return conn.response


async def _watch_session(session: SpdySession, gone: asyncio.Event) -> None:
    await session.wait_closed()
    gone.set()
