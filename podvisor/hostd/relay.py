"""The guest agent, shared: a WebSocket per caller onto hostd's one connection to a VM's agent port.

A virtio-serial port has one host end, and hostd holds it. Callers (the node agent, `podvisor bench`,
an admin shell) speak the same framed protocol over ``GET /vms/{id}/agent``; each binary message
carries protocol frames. The relay renumbers request ids (each caller counts from its own start) and
prefixes stream names with the connection's tag, so callers never see each other's replies or output;
ContainerExit broadcasts go to everyone. When a caller leaves, the streams it opened are cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from typing import Any

from aiohttp import WSMsgType, web

from podvisor.crx.client import AgentClient, AgentError
from podvisor.crx.protocol import FrameDecoder, encode_frame

__all__ = ["serve_agent_relay"]

_connections = itertools.count(1)
_STREAM_OPENERS = ("Exec", "PortForward", "ReadLog", "Attach")


async def serve_agent_relay(request: web.Request, agent: AgentClient) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(max_msg_size=16 << 20, heartbeat=30.0)
    await ws.prepare(request)
    prefix = f"r{next(_connections)}."
    outbox: asyncio.Queue[bytes | None] = asyncio.Queue()
    opened: set[str] = set()
    tasks: set[asyncio.Task[None]] = set()

    def on_event(header: dict[str, Any], payload: bytes) -> None:
        kind = header.get("type")
        if kind in ("Output", "End"):
            sid = str(header.get("stream", ""))
            if sid.startswith(prefix):
                if kind == "End":
                    opened.discard(sid)
                outbox.put_nowait(encode_frame({**header, "stream": sid[len(prefix):]}, payload))
        elif kind == "ContainerExit":
            outbox.put_nowait(encode_frame(header, payload))

    async def writer() -> None:
        while (frame := await outbox.get()) is not None:
            if ws.closed:
                return
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.send_bytes(frame)

    async def forward(header: dict[str, Any], payload: bytes) -> None:
        caller_id = header.pop("id")
        try:
            resp, rpayload = await agent.request(header, payload, timeout_s=None)
            frame = encode_frame({**resp, "id": caller_id}, rpayload)
        except AgentError as exc:
            frame = encode_frame({"type": "Response", "id": caller_id, "ok": False,
                                  "error": {"code": exc.code, "message": exc.message}})
        outbox.put_nowait(frame)

    async def close_when_agent_goes() -> None:
        await agent.closed.wait()  # the VM stopped or hostd dropped it: callers must notice
        await ws.close()

    agent.raw_listeners.append(on_event)
    writer_task = asyncio.create_task(writer())
    watcher = asyncio.create_task(close_when_agent_goes())
    decoder = FrameDecoder()
    try:
        async for msg in ws:
            if msg.type != WSMsgType.BINARY:
                if msg.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
                    break
                continue
            for header, payload in decoder.feed(msg.data):
                if "stream" in header:
                    header["stream"] = prefix + str(header["stream"])
                    if header.get("type") in _STREAM_OPENERS:
                        opened.add(header["stream"])
                if header.get("id"):
                    task = asyncio.create_task(forward(header, payload))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                else:
                    with contextlib.suppress(AgentError):
                        await agent.notify(header, payload)
            if agent.closed.is_set():
                break
    finally:
        with contextlib.suppress(ValueError):
            agent.raw_listeners.remove(on_event)
        for task in tasks:
            task.cancel()
        for sid in opened:
            with contextlib.suppress(AgentError):
                await agent.notify({"type": "CancelStream", "stream": sid})
        outbox.put_nowait(None)
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await writer_task
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await watcher
        await ws.close()
    return ws
