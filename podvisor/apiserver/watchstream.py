"""Watch streams: a store's event iterator written out as a chunked HTTP response.

The wire shape is kube's: ``200``, ``Content-Type: application/json``, chunked, headers flushed at
once, then one ``{"type": ..., "object": ...}`` JSON document per line. An expired resourceVersion is
not an HTTP error but an ``ERROR`` event carrying a 410 ``Expired`` Status, after which the stream
ends (client-go and the Python client then re-list). A ``Table`` watch turns every object into a
one-row Table; only the first event carries the column definitions (kubectl reuses them), as kube does.

Design for many cheap watchers:
- one producer task per watch pulls from the store's iterator into an unbounded queue; the handler
  writes from the queue. A watcher that falls behind by more than `MAX_BACKLOG` events is ended (kube
  ends slow watchers too) instead of buffering without bound;
- client disconnects are noticed on the next write, and for idle streams by the `WatchHub` sweeper
  that checks every open stream's transport every `SWEEP_INTERVAL` seconds — no per-watch timers;
- the JSON line of a plain event is cached by object identity, so a watch cache fanning one object out
  to N watchers serializes it once;
- every stream ends by ``timeoutSeconds`` or, when unset, after a random 5-10 minutes (spreading
  reconnects), and at once when the server stops (`WatchHub.close_all`), cleanly, so clients re-watch.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections import OrderedDict
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from aiohttp import web

from podvisor.apiserver.errors import APIError, GoneError, InternalError
from podvisor.apiserver.negotiation import Rendering, partial_object_metadata, transform
from podvisor.schema.model import Resource

__all__ = ["WatchHub", "serve_watch", "MAX_BACKLOG", "SWEEP_INTERVAL"]

log = logging.getLogger("podvisor.apiserver.watch")

MAX_BACKLOG = 10_000
SWEEP_INTERVAL = 2.0
_DEFAULT_TIMEOUT = (300.0, 600.0)

_STOP = object()  # server stopping or client gone
_TIMEOUT = object()


class _LineCache:
    """The encoded line of recent plain events, keyed by the event object's identity."""

    def __init__(self, size: int = 512) -> None:
        self._size = size
        self._entries: OrderedDict[tuple[int, str], tuple[Any, bytes]] = OrderedDict()

    def line(self, etype: str, obj: Any) -> bytes:
        key = (id(obj), etype)
        hit = self._entries.get(key)
        if hit is not None and hit[0] is obj:
            return hit[1]
        data = _encode_line(etype, obj)
        self._entries[key] = (obj, data)
        if len(self._entries) > self._size:
            self._entries.popitem(last=False)
        return data


def _encode_line(etype: str, obj: Any) -> bytes:
    return json.dumps({"type": etype, "object": obj}, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


class _Stream:
    __slots__ = ("request", "queue", "producer")

    def __init__(self, request: web.BaseRequest) -> None:
        self.request = request
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.producer: asyncio.Task[None] | None = None

    def stop(self, reason: object = _STOP) -> None:
        self.queue.put_nowait(reason)

    def client_gone(self) -> bool:
        transport = self.request.transport
        return transport is None or transport.is_closing()


class WatchHub:
    """The open watch streams of one server: counts them, notices vanished clients, ends them all
    at shutdown."""

    def __init__(self, *, sweep_interval: float = SWEEP_INTERVAL) -> None:
        self._streams: set[_Stream] = set()
        self._sweep_interval = sweep_interval
        self._sweeper: asyncio.Task[None] | None = None
        self._closed = False
        self.lines = _LineCache()

    @property
    def active(self) -> int:
        return len(self._streams)

    @property
    def closed(self) -> bool:
        return self._closed

    def _add(self, stream: _Stream) -> None:
        self._streams.add(stream)
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep(), name="watch-sweeper")

    def _remove(self, stream: _Stream) -> None:
        self._streams.discard(stream)

    async def _sweep(self) -> None:
        while self._streams:
            await asyncio.sleep(self._sweep_interval)
            for s in list(self._streams):
                if s.client_gone():
                    s.stop()

    def close_all(self) -> None:
        """End every open stream (new watches are refused with 503 from now on)."""
        self._closed = True
        for s in list(self._streams):
            s.stop()

    async def aclose(self) -> None:
        self.close_all()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper


async def _produce(events: AsyncIterator[dict[str, Any]], stream: _Stream) -> None:
    q = stream.queue
    try:
        async for ev in events:
            q.put_nowait(ev)
            if q.qsize() > MAX_BACKLOG:
                log.warning("watch %s fell %d events behind; ending it", stream.request.path, MAX_BACKLOG)
                q.put_nowait(_STOP)
                return
        q.put_nowait(_STOP)
    except asyncio.CancelledError:
        raise
    except APIError as exc:
        q.put_nowait(exc)
    except Exception as exc:
        log.exception("watch on %s failed", stream.request.path)
        q.put_nowait(InternalError(f"Internal error occurred: {type(exc).__name__}"))
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()


class _Encoder:
    """Turns events into lines for one stream's rendering."""

    def __init__(self, rendering: Rendering, resource: Resource, include_object: str, hub: WatchHub,
                 now: datetime | None) -> None:
        self.rendering = rendering
        self.resource = resource
        self.include_object = include_object
        self.hub = hub
        self.now = now
        self.first_table = True

    def line(self, ev: dict[str, Any]) -> bytes:
        etype = str(ev.get("type", ""))
        obj = ev.get("object")
        convert = self.rendering.convert
        if not convert or etype in ("ERROR", "BOOKMARK") or not isinstance(obj, dict):
            return self.hub.lines.line(etype, obj)
        if convert == "PartialObjectMetadata":
            return _encode_line(etype, partial_object_metadata(obj, self.rendering.version))
        table = transform(self.rendering, self.resource, obj, include_object=self.include_object, now=self.now)
        if self.first_table:
            self.first_table = False
        else:
            table["columnDefinitions"] = []
        return _encode_line(etype, table)


def _error_line(err: APIError) -> bytes:
    return _encode_line("ERROR", err.status())


async def serve_watch(
    request: web.BaseRequest,
    events: AsyncIterator[dict[str, Any]],
    *,
    resource: Resource,
    rendering: Rendering,
    hub: WatchHub,
    timeout_seconds: int = 0,
    include_object: str = "Metadata",
    now: datetime | None = None,
) -> web.StreamResponse:
    """Stream ``events`` to the client until the store ends them, the timeout passes, the client goes
    or the server stops. Errors the store raises before its first event that are not about the
    resourceVersion (a bad selector) still answer as plain HTTP errors."""
    stream = _Stream(request)
    stream.producer = asyncio.get_running_loop().create_task(_produce(events, stream))
    hub._add(stream)
    timer: asyncio.TimerHandle | None = None
    q = stream.queue
    try:
        # give the store a moment to reject the request before the headers go out
        for _ in range(3):
            if not q.empty() or stream.producer.done():
                break
            await asyncio.sleep(0)
        carry: Any = None
        if not q.empty():
            carry = q.get_nowait()
            if isinstance(carry, APIError) and not isinstance(carry, GoneError):
                raise carry

        resp = web.StreamResponse(status=200)
        resp.content_type = "application/json"
        resp.headers["Cache-Control"] = "no-cache, private"
        resp.enable_chunked_encoding()
        await resp.prepare(request)

        timeout = float(timeout_seconds) if timeout_seconds > 0 else random.uniform(*_DEFAULT_TIMEOUT)
        timer = asyncio.get_running_loop().call_later(timeout, stream.stop, _TIMEOUT)
        encoder = _Encoder(rendering, resource, include_object, hub, now)
        if hub.closed:
            stream.stop()
        ended = False
        while not ended:
            item = carry if carry is not None else await q.get()
            carry = None
            lines: list[bytes] = []
            # batch whatever is already queued into one write
            while True:
                if item is _STOP or item is _TIMEOUT:
                    ended = True
                    break
                if isinstance(item, APIError):
                    lines.append(_error_line(item))
                    ended = True
                    break
                lines.append(encoder.line(item))
                if q.empty():
                    break
                item = q.get_nowait()
            if lines:
                try:
                    await resp.write(b"".join(lines))
                except (ConnectionError, RuntimeError):
                    return resp  # the client went away
        with contextlib.suppress(ConnectionError, RuntimeError):
            await resp.write_eof()
        return resp
    finally:
        if timer is not None:
            timer.cancel()
        hub._remove(stream)
        producer = stream.producer
        if producer is not None and not producer.done():
            producer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await producer
