"""Recording Kubernetes Events (core/v1) about objects, as client-go's event recorder does.

Why a recorder and not a bare POST: components repeat themselves (a pod that cannot be scheduled is
retried many times; a probe keeps failing), and a user reading ``kubectl describe`` wants one line
"(x12 over 3m)", not twelve. So identical events — same object, type, reason, message and source —
are aggregated into one Event whose ``count`` and ``lastTimestamp`` grow, exactly the fields kubectl
reads. Writes never raise into the caller's control loop: an event is a side channel, and a failed
event is logged and dropped. ``emit`` is fire-and-forget (a background task); ``record`` awaits.

Event names follow Kubernetes' ``<object name>.<hex nanoseconds>`` so they sort by time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

from podvisor.client.errors import APIStatusError, NotFound
from podvisor.client.rest import APIClient, Res

__all__ = ["EVENTS", "EventRecorder", "object_reference"]

log = logging.getLogger("podvisor.client.events")

EVENTS = Res("", "v1", "events", namespaced=True, kind="Event")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def object_reference(obj: dict[str, Any]) -> dict[str, Any]:
    """The ``involvedObject`` of an event about ``obj`` (kind and apiVersion as the object says)."""
    md = obj.get("metadata") or {}
    ref = {
        "kind": obj.get("kind") or "",
        "apiVersion": obj.get("apiVersion") or "v1",
        "name": md.get("name", ""),
        "uid": md.get("uid", ""),
        "resourceVersion": md.get("resourceVersion", ""),
    }
    if md.get("namespace"):
        ref["namespace"] = md["namespace"]
    return {k: v for k, v in ref.items() if v}


class EventRecorder:
    """Records events about objects on behalf of one component (``source.component`` /
    ``reportingComponent``), e.g. ``default-scheduler`` or ``kubelet``."""

    def __init__(self, client: APIClient, *, component: str, host: str = "", instance: str = "",
                 cache_size: int = 4096) -> None:
        self.client = client
        self.component, self.host = component, host
        self.instance = instance or (f"{component}-{host}" if host else component)
        self._seen: OrderedDict[tuple[str, ...], tuple[str, str, int]] = OrderedDict()
        self._cache_size = cache_size
        self._tasks: set[asyncio.Task[None]] = set()
        self._locks: dict[tuple[str, ...], tuple[asyncio.Lock, int]] = {}  # lock and how many use it

    def emit(self, obj: dict[str, Any], *, type: str, reason: str, message: str, action: str = "",
             kind: str = "") -> None:
        """Record in the background; the caller never waits for the API server."""
        task = asyncio.create_task(self.record(obj, type=type, reason=reason, message=message, action=action,
                                               kind=kind))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def record(self, obj: dict[str, Any], *, type: str, reason: str, message: str, action: str = "",
                     kind: str = "") -> None:
        ref = object_reference(obj)
        if kind:
            ref["kind"] = kind
        namespace = ref.get("namespace") or "default"
        key = (ref.get("uid", ""), ref.get("kind", ""), ref.get("name", ""), namespace, type, reason, message)
        lock, users = self._locks.get(key) or (asyncio.Lock(), 0)
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:  # one writer per distinct event keeps its count updates from racing
                await self._write(key, ref, namespace, type=type, reason=reason, message=message, action=action)
        except (APIStatusError, OSError, TimeoutError) as exc:
            log.info("could not record event %s on %s/%s: %s", reason, namespace, ref.get("name"), exc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # never let an event break the caller
            log.warning("could not record event %s: %r", reason, exc)
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    async def _write(self, key: tuple[str, ...], ref: dict[str, Any], namespace: str, *, type: str, reason: str,
                     message: str, action: str) -> None:
        now = _now()
        seen = self._seen.get(key)
        if seen is not None:
            name, ns, count = seen
            try:
                await self.client.patch(EVENTS, name, {"count": count + 1, "lastTimestamp": now}, ns)
                self._seen[key] = (name, ns, count + 1)
                self._seen.move_to_end(key)
                return
            except NotFound:
                self._seen.pop(key, None)
        name = f"{ref.get('name', 'event')}.{time.time_ns():x}"
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": ref,
            "reason": reason,
            "message": message,
            "type": type,
            "source": {"component": self.component, **({"host": self.host} if self.host else {})},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "reportingComponent": self.component,
            "reportingInstance": self.instance,
        }
        if action:
            body["action"] = action
        await self.client.create(EVENTS, body, namespace)
        self._seen[key] = (name, namespace, 1)
        while len(self._seen) > self._cache_size:
            self._seen.popitem(last=False)

    async def flush(self) -> None:
        """Wait for events emitted so far."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()
