"""The namespace controller: empties a namespace being deleted, then releases it.

Deleting a namespace marks it Terminating; its ``spec.finalizers`` (``kubernetes``) keep it until this
controller has deleted every namespaced object in it (each resource's delete-collection, repeated until
lists come back empty, since pods and finalizers may hold objects a while) and then removes the
``kubernetes`` finalizer through ``namespaces/<name>/finalize``. Level-triggered: a restart simply
picks up every namespace still Terminating.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from podvisor.client import APIClient, APIStatusError, Informer, NotFound, Res, WorkQueue

__all__ = ["NamespaceController"]

log = logging.getLogger("podvisor.controllers.namespace")

NAMESPACES = Res("", "v1", "namespaces", namespaced=False, kind="Namespace")


class NamespaceController:
    name = "namespace-controller"

    def __init__(self, client: APIClient, *, workers: int = 2) -> None:
        self.client = client
        self.informer = Informer(client, NAMESPACES)
        self.queue: WorkQueue[str] = WorkQueue(base_delay=0.2, max_delay=10)
        self.workers = workers
        self._resources: list[Res] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.informer.add_handler(self._on_event)

    def _on_event(self, typ: str, obj: dict[str, Any]) -> None:
        if typ != "DELETED" and obj.get("metadata", {}).get("deletionTimestamp"):
            self.queue.add(obj["metadata"]["name"])

    async def start(self) -> None:
        self.informer.start()
        self._tasks = [asyncio.create_task(self._worker()) for _ in range(self.workers)]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.queue.shutdown()
        await self.informer.stop()

    async def _namespaced_resources(self) -> list[Res]:
        if self._resources is None:
            found = await self.client.discover()
            self._resources = [r for r in found if r.namespaced and "deletecollection" in r.verbs]
        return self._resources

    async def _worker(self) -> None:
        while True:
            name = await self.queue.get()
            try:
                done = await self.sync(name)
            except (APIStatusError, OSError) as exc:
                log.info("namespace %s: %s; retrying", name, exc)
                self.queue.add_rate_limited(name)
            except Exception:
                log.exception("namespace %s: unexpected failure", name)
                self.queue.add_rate_limited(name)
            else:
                if done:
                    self.queue.forget(name)
                else:
                    self.queue.add_rate_limited(name)
            finally:
                self.queue.done(name)

    async def sync(self, name: str) -> bool:
        """One pass; True when the namespace needs no more work."""
        try:
            ns = await self.client.get(NAMESPACES, name)
        except NotFound:
            return True
        if not ns["metadata"].get("deletionTimestamp"):
            return True
        remaining = 0
        for res in await self._namespaced_resources():
            items, _ = await self.client.list_all(res, name)
            if not items:
                continue
            remaining += len(items)
            try:
                await self.client.delete_collection(res, name, body={"propagationPolicy": "Background"})
            except NotFound:
                pass
        if remaining:
            return False
        finalizers = [f for f in ns.get("spec", {}).get("finalizers", []) if f != "kubernetes"]
        if finalizers != ns.get("spec", {}).get("finalizers", []):
            ns.setdefault("spec", {})["finalizers"] = finalizers
            await self.client.update(NAMESPACES, ns, subresource="finalize")
        return True
