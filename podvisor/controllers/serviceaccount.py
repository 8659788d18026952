"""The ServiceAccount controller: every active namespace has a ``default`` ServiceAccount.

Pods run as ``default`` unless they name another account, and ``kubectl create token default`` is the
first thing many users try, so the account must exist in every namespace, new or old, and come back
when someone deletes it. As kube's controller does, this one watches Namespaces and ServiceAccounts
(only those named ``default``: the rest are none of its business) and works per namespace: a
namespace that appears or changes, or whose ``default`` account goes, is queued; a worker creates the
account when the cache says it is missing. Level-triggered: a restart relists both and fills every gap.
Terminating namespaces are left alone (the API refuses new objects in them anyway, and the namespace
controller is emptying them).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from podvisor.client import AlreadyExists, APIClient, APIStatusError, Informer, NotFound, Res, WorkQueue

__all__ = ["ServiceAccountController", "DEFAULT_SERVICE_ACCOUNT"]

log = logging.getLogger("podvisor.controllers.serviceaccount")

NAMESPACES = Res("", "v1", "namespaces", namespaced=False, kind="Namespace")
SERVICEACCOUNTS = Res("", "v1", "serviceaccounts", kind="ServiceAccount")
DEFAULT_SERVICE_ACCOUNT = "default"


def _terminating(ns: dict[str, Any]) -> bool:
    return bool(ns.get("metadata", {}).get("deletionTimestamp")) or ns.get("status", {}).get("phase") == "Terminating"


class ServiceAccountController:
    name = "serviceaccount-controller"

    def __init__(self, client: APIClient, *, account: str = DEFAULT_SERVICE_ACCOUNT, workers: int = 1) -> None:
        self.client = client
        self.account = account
        self.namespaces = Informer(client, NAMESPACES)
        # only the managed name: a field selector keeps every other account out of this cache
        self.service_accounts = Informer(client, SERVICEACCOUNTS, field_selector=f"metadata.name={account}")
        self.queue: WorkQueue[str] = WorkQueue(base_delay=0.2, max_delay=30)
        self.workers = workers
        self._tasks: list[asyncio.Task[None]] = []
        self.namespaces.add_handler(self._on_namespace)
        self.service_accounts.add_handler(self._on_service_account)

    def _on_namespace(self, typ: str, obj: dict[str, Any]) -> None:
        if typ != "DELETED" and not _terminating(obj):
            self.queue.add(obj["metadata"]["name"])

    def _on_service_account(self, typ: str, obj: dict[str, Any]) -> None:
        if typ == "DELETED":
            self.queue.add(str(obj.get("metadata", {}).get("namespace") or ""))

    async def start(self) -> None:
        self.namespaces.start()
        self.service_accounts.start()
        self._tasks = [asyncio.create_task(self._worker(), name=f"{self.name}-{i}") for i in range(self.workers)]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self.queue.shutdown()
        await self.service_accounts.stop()
        await self.namespaces.stop()

    async def _worker(self) -> None:
        # decide from complete caches only: before both lists are in, "missing" means "not seen yet"
        await self.namespaces.synced.wait()
        await self.service_accounts.synced.wait()
        while True:
            namespace = await self.queue.get()
            try:
                await self.sync(namespace)
            except (APIStatusError, OSError) as exc:
                log.info("service accounts of %s: %s; retrying", namespace, exc)
                self.queue.add_rate_limited(namespace)
            except Exception:
                log.exception("service accounts of %s: unexpected failure", namespace)
                self.queue.add_rate_limited(namespace)
            else:
                self.queue.forget(namespace)
            finally:
                self.queue.done(namespace)

    async def sync(self, namespace: str) -> None:
        """Create the account if ``namespace`` lacks it (nothing for a namespace gone or terminating)."""
        ns = self.namespaces.get(namespace)
        if not namespace or ns is None or _terminating(ns):
            return
        name = self.account
        if self.service_accounts.get(f"{namespace}/{name}") is not None:
            return
        body = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": namespace}}
        try:
            await self.client.create(SERVICEACCOUNTS, body, namespace, field_manager="serviceaccount-controller")
        except AlreadyExists:
            return  # made meanwhile (or our cache is behind): either way it is there
        except NotFound:
            return  # the namespace went away
        except APIStatusError as exc:
            if exc.code == 403 and "terminat" in str(exc.status.get("message", "")).lower():
                return  # deleted meanwhile: nothing to do in a namespace being emptied
            raise
        log.info("created service account %s/%s", namespace, name)
