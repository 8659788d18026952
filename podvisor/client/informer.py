"""An informer: list, then watch from the list's resourceVersion, keeping a local cache of objects.

On 410 Gone (or any broken stream) it lists again and turns the differences into events, so handlers
see a consistent sequence. Handlers receive (event_type, object) and should only enqueue keys;
never mutate objects from the cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from podvisor.client.errors import APIStatusError, Gone
from podvisor.client.rest import APIClient, Res

__all__ = ["Informer", "obj_key"]

log = logging.getLogger("podvisor.client.informer")

Handler = Callable[[str, dict[str, Any]], None]


def obj_key(obj: dict[str, Any]) -> str:
    md = obj.get("metadata", {})
    ns = md.get("namespace", "")
    return f"{ns}/{md['name']}" if ns else str(md["name"])


class Informer:
    def __init__(self, client: APIClient, res: Res, *, namespace: str = "", label_selector: str = "",
                 field_selector: str = "", retry_delay: float = 1.0) -> None:
        self.client, self.res, self.namespace = client, res, namespace
        self.label_selector, self.field_selector = label_selector, field_selector
        self.cache: dict[str, dict[str, Any]] = {}
        self.handlers: list[Handler] = []
        self.synced = asyncio.Event()
        self.retry_delay = retry_delay
        self._task: asyncio.Task[None] | None = None

    def add_handler(self, handler: Handler) -> None:
        self.handlers.append(handler)

    def get(self, key: str) -> dict[str, Any] | None:
        return self.cache.get(key)

    def items(self) -> list[dict[str, Any]]:
        return list(self.cache.values())

    def _emit(self, typ: str, obj: dict[str, Any]) -> None:
        for h in self.handlers:
            try:
                h(typ, obj)
            except Exception:  # a handler bug must not stop the informer
                log.exception("informer handler failed for %s", self.res.plural)

    async def _relist(self) -> str:
        items, rv = await self.client.list_all(self.res, self.namespace, label_selector=self.label_selector,
                                               field_selector=self.field_selector)
        fresh = {obj_key(o): o for o in items}
        for key, old in list(self.cache.items()):
            if key not in fresh:
                del self.cache[key]
                self._emit("DELETED", old)
        for key, obj in fresh.items():
            old_obj = self.cache.get(key)
            self.cache[key] = obj
            if old_obj is None:
                self._emit("ADDED", obj)
            elif old_obj["metadata"].get("resourceVersion") != obj["metadata"].get("resourceVersion"):
                self._emit("MODIFIED", obj)
        self.synced.set()
        return rv

    async def run(self) -> None:
        rv = ""
        while True:
            try:
                if not rv:
                    rv = await self._relist()
                async for ev in self.client.watch(self.res, self.namespace, resource_version=rv,
                                                  label_selector=self.label_selector,
                                                  field_selector=self.field_selector):
                    typ, obj = ev.get("type"), ev.get("object") or {}
                    if typ == "ERROR":
                        rv = "" if obj.get("code") == 410 else rv
                        break
                    rv = str(obj.get("metadata", {}).get("resourceVersion", rv))
                    if typ == "BOOKMARK":
                        continue
                    key = obj_key(obj)
                    if typ == "DELETED":
                        self.cache.pop(key, None)
                    else:
                        self.cache[key] = obj
                    self._emit(str(typ), obj)
            except Gone:
                rv = ""
            except asyncio.CancelledError:
                raise
            except (TimeoutError, APIStatusError, OSError, ValueError) as exc:
                log.debug("informer %s: %s; retrying", self.res.plural, exc)
                await asyncio.sleep(self.retry_delay)
            except Exception as exc:  # aiohttp payload errors and the like
                log.debug("informer %s: %r; retrying", self.res.plural, exc)
                await asyncio.sleep(self.retry_delay)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name=f"informer-{self.res.plural}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
