"""Exec and attach over a WebSocket channel protocol (kubectl's first choice, the Python client's only).

The session: answer 101 with the negotiated subprotocol; send an empty frame on the lowest channel we
write (the kubelet's "connection established" signal); route incoming frames (stdin, resize, v5 close
of stdin); run the target with stdout/stderr writing to their channels; then write the Status on the
error channel and close the WebSocket normally - a normal close is how the client knows every stream
has ended. Pings are answered by aiohttp (``autoping``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import WSMsgType, web

from podvisor.streaming.execio import ByteFeed, ResizeFeed, run_target
from podvisor.streaming.status import encode_status, outcome_status
from podvisor.streaming.target import ExecOptions, ExecTarget
from podvisor.streaming.wschannel import (
    ERROR,
    EXEC_PROTOCOLS,
    RESIZE,
    STDERR,
    STDIN,
    STDOUT,
    ChannelCodec,
    ChannelOutput,
    negotiate,
    requested_protocols,
)

__all__ = ["serve_exec_websocket"]

log = logging.getLogger("podvisor.streaming")

_MAX_MESSAGE = 16 * 1024 * 1024


async def serve_exec_websocket(request: web.Request, target: ExecTarget, options: ExecOptions, *,
                               close_timeout: float = 5.0) -> web.StreamResponse:
    """Serve one exec/attach session on ``request`` (a WebSocket upgrade) with ``target``."""
    requested = requested_protocols(request)
    protocol = negotiate(requested, EXEC_PROTOCOLS)
    if protocol is None:
        return web.Response(status=400, text=(
            f"requested protocol(s) are not supported: {requested}; supports {list(EXEC_PROTOCOLS)}"))
    ws = web.WebSocketResponse(protocols=(protocol,) if protocol else (), autoping=True, compress=False,
                               max_msg_size=_MAX_MESSAGE, timeout=close_timeout)
    await ws.prepare(request)
    codec = ChannelCodec(protocol or "channel.k8s.io")
    stdin = ByteFeed() if options.stdin else None
    resize = ResizeFeed()
    gone = asyncio.Event()
    reader = asyncio.create_task(_read_frames(ws, codec, stdin, resize, gone), name="exec-ws-read")
    try:
        first = STDOUT if options.stdout else STDERR if options.stderr else ERROR
        await codec.send(ws, first, b"")
        outcome = await run_target(
            target,
            stdin=stdin,
            stdout=ChannelOutput(ws, codec, STDOUT) if options.stdout else None,
            stderr=ChannelOutput(ws, codec, STDERR) if options.stderr else None,
            tty=options.tty,
            resize=resize,
            client_gone=gone,
        )
        if stdin is not None:
            stdin.discard()
        if outcome is not None and not ws.closed:
            payload = encode_status(outcome_status(outcome), structured=codec.structured_status)
            if payload:
                await codec.send(ws, ERROR, payload)
    except ConnectionError:
        pass  # the client went away mid-write
    finally:
        if stdin is not None:
            stdin.discard()
        with contextlib.suppress(Exception):
            await ws.close()
        if not reader.done():
            reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader
    return ws


async def _read_frames(ws: web.WebSocketResponse, codec: ChannelCodec, stdin: ByteFeed | None,
                       resize: ResizeFeed, gone: asyncio.Event) -> None:
    try:
        while True:
            msg = await ws.receive()
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                break
            frame = codec.decode(msg)
            if frame is None:
                continue
            channel, data, close = frame
            if close:
                if channel == STDIN and stdin is not None:
                    stdin.close()
                elif channel == RESIZE:
                    resize.close()
            elif channel == STDIN and stdin is not None:
                await stdin.put(data)
            elif channel == RESIZE:
                resize.feed(data)
    finally:
        if stdin is not None:
            stdin.close()
        resize.close()
        gone.set()
