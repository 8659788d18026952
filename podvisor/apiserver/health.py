"""Liveness and readiness: ``/livez``, ``/readyz``, ``/healthz``, answered the way kube answers them.

Why separate checks: a load balancer (or ``podvisor up`` waiting for the server) needs "ready" to mean
"will answer a kubectl request correctly", which is more than "the process runs". Readiness therefore
waits for the post-start hooks (bootstrap objects: default namespaces, the ``kubernetes`` service...)
and asks the storage for its revision; it turns false again as soon as shutdown starts, so clients
move away before the listener closes. Liveness only fails when the storage stops answering.

Output follows kube: ``ok`` on success; on failure (or with ``?verbose``) one ``[+]name ok`` /
``[-]name failed: reason withheld`` line per check and a last line ``<endpoint> check passed|failed``;
``/readyz/<name>`` runs one check; ``?exclude=<name>`` skips one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from podvisor.storage.interface import Storage

__all__ = ["HealthChecks", "Check"]

log = logging.getLogger("podvisor.apiserver.health")

_STORAGE_TIMEOUT = 2.0


@dataclass(frozen=True, slots=True)
class Check:
    """A named check; ``probe`` returns None when healthy or a short reason (never shown to
    clients: kube withholds reasons, they go to the log)."""

    name: str
    probe: Callable[[], Awaitable[str | None]]
    livez: bool = True
    readyz: bool = True


class HealthChecks:
    """The registry of checks for one server."""

    def __init__(self, *, storage: Storage | None = None) -> None:
        self._checks: dict[str, Check] = {}
        self._pending_hooks: dict[str, str] = {}
        self._shutting_down = False
        self.add(Check("ping", _ok))
        self.add(Check("log", _ok))
        if storage is not None:
            self.add(Check("etcd", lambda: _storage_probe(storage)))
        self.add(Check("shutdown", self._shutdown_probe, livez=False))

    def add(self, check: Check) -> None:
        self._checks[check.name] = check

    def add_post_start_hook(self, name: str) -> None:
        """A hook that must finish before the server is ready (``poststarthook/<name>``). Unlike
        kube, a slow hook does not fail liveness: restarting the server would not make it faster."""
        full = f"poststarthook/{name}"
        self._pending_hooks[full] = "not finished"

        async def probe() -> str | None:
            return self._pending_hooks.get(full)

        self.add(Check(full, probe, livez=False))

    def hook_done(self, name: str) -> None:
        self._pending_hooks.pop(f"poststarthook/{name}", None)

    def hook_failed(self, name: str, reason: str) -> None:
        self._pending_hooks[f"poststarthook/{name}"] = reason

    def start_shutdown(self) -> None:
        self._shutting_down = True

    async def _shutdown_probe(self) -> str | None:
        return "server is shutting down" if self._shutting_down else None

    async def run(self, endpoint: str, *, exclude: set[str] | None = None) -> list[tuple[str, str | None]]:
        """Run the checks of ``endpoint`` (livez, readyz, healthz) concurrently: [(name, reason)]."""
        wanted = [
            c
            for c in self._checks.values()
            if (c.readyz if endpoint == "readyz" else c.livez) and c.name not in (exclude or set())
        ]
        results = await asyncio.gather(*(_guarded(c) for c in wanted))
        return list(zip((c.name for c in wanted), results, strict=True))

    async def handle(self, request: web.Request) -> web.Response:
        """Serve ``/<endpoint>`` and ``/<endpoint>/<check>``."""
        parts = [p for p in request.path.split("/") if p]
        endpoint = parts[0]
        headers = {"Content-Type": "text/plain; charset=utf-8", "X-Content-Type-Options": "nosniff",
                   "Cache-Control": "no-cache, private"}
        if len(parts) > 1:
            name = "/".join(parts[1:])
            check = self._checks.get(name)
            if check is None or not (check.readyz if endpoint == "readyz" else check.livez):
                return web.Response(status=404, text="404 page not found\n", headers=headers)
            reason = await _guarded(check)
            if reason is None:
                return web.Response(text="ok", headers=headers)
            log.warning("%s check %s failed: %s", endpoint, name, reason)
            return web.Response(status=500, text=f"internal server error: {name} failed\n", headers=headers)
        exclude = set(request.query.getall("exclude", []))
        results = await self.run(endpoint, exclude=exclude)
        failed = [(n, r) for n, r in results if r is not None]
        for n, r in failed:
            log.warning("%s check %s failed: %s", endpoint, n, r)
        verbose = "verbose" in request.query
        if not failed and not verbose:
            return web.Response(text="ok", headers=headers)
        lines = [f"[+]{n} ok" if r is None else f"[-]{n} failed: reason withheld" for n, r in results]
        for n in sorted(exclude):
            lines.append(f"[+]{n} excluded: ok")
        lines.append(f"{endpoint} check {'failed' if failed else 'passed'}")
        return web.Response(status=500 if failed else 200, text="\n".join(lines) + "\n", headers=headers)


async def _ok() -> str | None:
    return None


async def _storage_probe(storage: Storage) -> str | None:
    try:
        await asyncio.wait_for(storage.current_revision(), _STORAGE_TIMEOUT)
    except Exception as exc:  # any failure means "not answering"
        return f"storage does not answer: {exc or type(exc).__name__}"
    return None


async def _guarded(check: Check) -> str | None:
    try:
        return await check.probe()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
