"""The garbage collector: ownerReferences decide what dies with what.

It follows every resource that can carry owners (one informer each) and keeps an index owner-uid →
dependents. Three cases, as Kubernetes defines them:
- a dependent whose owners are all gone is deleted (background cascade). "Gone" is confirmed by a live
  GET of the owner (404 or another uid), never inferred from a lagging cache alone;
- an owner being deleted with the ``foregroundDeletion`` finalizer has its dependents deleted first
  (in the foreground too), and the finalizer is removed once none is left;
- an owner being deleted with the ``orphan`` finalizer has its uid removed from its dependents'
  ownerReferences, then the finalizer is removed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from podvisor.client import APIClient, APIStatusError, Informer, NotFound, Res, WorkQueue

__all__ = ["GarbageCollector"]

log = logging.getLogger("podvisor.controllers.gc")

# resources that never own or are owned by anything worth collecting
_SKIP = {"events", "selfsubjectaccessreviews", "bindings", "tokenreviews", "subjectaccessreviews"}


class GarbageCollector:
    name = "garbage-collector"

    def __init__(self, client: APIClient, *, workers: int = 2) -> None:
        self.client = client
        self.queue: WorkQueue[str] = WorkQueue(base_delay=0.2, max_delay=30)
        self.workers = workers
        self.informers: list[Informer] = []
        self.by_uid: dict[str, tuple[Res, dict[str, Any]]] = {}
        self.dependents: dict[str, set[str]] = {}
        self.kinds: dict[tuple[str, str], Res] = {}
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        for res in await self.client.discover():
            if res.plural in _SKIP or not {"list", "watch", "delete"} <= set(res.verbs):
                continue
            api_version = f"{res.group}/{res.version}" if res.group else res.version
            self.kinds[(api_version, res.kind)] = res
            inf = Informer(self.client, res)
            inf.add_handler(self._handler(res))
            self.informers.append(inf)
            inf.start()
        self._tasks = [asyncio.create_task(self._worker()) for _ in range(self.workers)]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.queue.shutdown()
        for inf in self.informers:
            await inf.stop()

    def _handler(self, res: Res) -> Any:
        def handle(typ: str, obj: dict[str, Any]) -> None:
            md = obj.get("metadata", {})
            uid = md.get("uid")
            if not uid:
                return
            old = self.by_uid.get(uid)
            if old is not None:
                for ref in old[1].get("metadata", {}).get("ownerReferences") or []:
                    self.dependents.get(ref.get("uid", ""), set()).discard(uid)
            if typ == "DELETED":
                self.by_uid.pop(uid, None)
                # the owner is gone: its dependents must be looked at
                for dep in self.dependents.get(uid, set()):
                    self.queue.add(dep)
                # a dependent is gone: its deleting owners may now be free
                for ref in md.get("ownerReferences") or []:
                    self.queue.add(ref.get("uid", ""))
                return
            self.by_uid[uid] = (res, obj)
            refs = md.get("ownerReferences") or []
            for ref in refs:
                self.dependents.setdefault(ref.get("uid", ""), set()).add(uid)
            if refs or md.get("deletionTimestamp"):
                self.queue.add(uid)

        return handle

    async def _worker(self) -> None:
        while True:
            uid = await self.queue.get()
            try:
                done = await self.sync(uid)
            except (APIStatusError, OSError) as exc:
                log.info("gc %s: %s; retrying", uid, exc)
                done = False
            except Exception:
                log.exception("gc %s: unexpected failure", uid)
                done = False
            finally:
                self.queue.done(uid)
            if done:
                self.queue.forget(uid)
            else:
                self.queue.add_rate_limited(uid)

    async def sync(self, uid: str) -> bool:
        entry = self.by_uid.get(uid)
        if entry is None:
            return True
        res, obj = entry
        md = obj["metadata"]
        if md.get("deletionTimestamp"):
            finalizers = md.get("finalizers") or []
            if "foregroundDeletion" in finalizers:
                return await self._foreground(res, obj)
            if "orphan" in finalizers:
                return await self._orphan(res, obj)
        refs = md.get("ownerReferences") or []
        if refs and not md.get("deletionTimestamp"):
            alive = [ref for ref in refs if await self._owner_exists(ref, md.get("namespace", ""))]
            if not alive:
                try:
                    await self.client.delete(res, md["name"], md.get("namespace", ""),
                                             body={"propagationPolicy": "Background",
                                                   "preconditions": {"uid": uid}})
                except NotFound:
                    pass
        return True

    async def _owner_exists(self, ref: dict[str, Any], namespace: str) -> bool:
        res = self.kinds.get((ref.get("apiVersion", ""), ref.get("kind", "")))
        if res is None:
            return True  # an owner kind we do not serve: never collect on a guess
        try:
            owner = await self.client.get(res, ref["name"], namespace if res.namespaced else "")
        except NotFound:
            return False
        return bool(owner["metadata"].get("uid") == ref.get("uid"))

    async def _foreground(self, res: Res, obj: dict[str, Any]) -> bool:
        uid = obj["metadata"]["uid"]
        deps = [self.by_uid[d] for d in self.dependents.get(uid, set()) if d in self.by_uid]
        for dres, dep in deps:
            dmd = dep["metadata"]
            if not dmd.get("deletionTimestamp"):
                try:
                    await self.client.delete(dres, dmd["name"], dmd.get("namespace", ""),
                                             body={"propagationPolicy": "Foreground"})
                except NotFound:
                    pass
        if deps:
            return False  # retried until they are gone (their DELETED events requeue us too)
        await self._drop_finalizer(res, obj, "foregroundDeletion")
        return True

    async def _orphan(self, res: Res, obj: dict[str, Any]) -> bool:
        uid = obj["metadata"]["uid"]
        for d in list(self.dependents.get(uid, set())):
            entry = self.by_uid.get(d)
            if entry is None:
                continue
            dres, dep = entry
            dmd = dep["metadata"]
            refs = [r for r in dmd.get("ownerReferences") or [] if r.get("uid") != uid]
            try:
                await self.client.patch(dres, dmd["name"], {"metadata": {"ownerReferences": refs or None}},
                                        dmd.get("namespace", ""))
            except NotFound:
                pass
        await self._drop_finalizer(res, obj, "orphan")
        return True

    async def _drop_finalizer(self, res: Res, obj: dict[str, Any], finalizer: str) -> None:
        md = obj["metadata"]
        ns = md.get("namespace", "")
        for _ in range(5):
            try:
                live = await self.client.get(res, md["name"], ns)
            except NotFound:
                return
            fins = [f for f in live["metadata"].get("finalizers") or [] if f != finalizer]
            if fins == (live["metadata"].get("finalizers") or []):
                return
            live["metadata"]["finalizers"] = fins
            try:
                await self.client.update(res, live, ns)
                return
            except APIStatusError as exc:
                if exc.code != 409:
                    raise
