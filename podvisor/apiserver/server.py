"""Where the API server listens: TLS, the socket, post-start hooks and a graceful stop.

The Application (`podvisor.apiserver.app`) does not know where it listens; this module binds it to a
socket, the way aiohttp separates an app from its runner and sites. TLS asks every client for a
certificate but does not require one (``CERT_OPTIONAL`` against the cluster CA), so the same port
serves kubectl with a client certificate and the Python client or a controller with a bearer token.

Stopping is graceful, in kube's order: readiness turns false, open watches end cleanly (clients
re-watch elsewhere or after the restart), the listener closes, in-flight requests get
``shutdown_timeout`` seconds to finish, and only then are the rest cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from aiohttp import web

from podvisor.apiserver.app import API_KEY, AccessLogger, APIApp, build_app
from podvisor.apiserver.authn import Authenticator, Authorizer
from podvisor.apiserver.handlers import StreamingBackend
from podvisor.apiserver.health import HealthChecks
from podvisor.apiserver.rest import Registry
from podvisor.apiserver.watchstream import WatchHub
from podvisor.storage.interface import Storage

__all__ = ["APIServer", "make_server_ssl_context", "PostStartHook"]

log = logging.getLogger("podvisor.apiserver")

PostStartHook = tuple[str, Callable[[], Awaitable[None]]]


def make_server_ssl_context(cert: Path, key: Path, client_ca: Path | None = None) -> ssl.SSLContext:
    """A TLS server context with the serving certificate (it must carry the SANs clients dial: Go
    refuses CN-only certificates) and, when ``client_ca`` is given, optional client certificates
    verified against it."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(certfile=str(cert), keyfile=str(key))
    if client_ca is not None:
        ctx.load_verify_locations(cafile=str(client_ca))
        ctx.verify_mode = ssl.CERT_OPTIONAL
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


_frozen = False
_YOUNG_THRESHOLD = 10_000  # allocations between young collections (CPython's default is 700)


def _tune_gc() -> None:
    """Once per process, when the first server starts: keep the garbage collector's pauses short.

    * Every object alive now (modules, schemas, strategies, routes) lives as long as the process,
      yet each full collection would walk them all again, a pause of tens of milliseconds that
      lands on whatever requests are in flight. Frozen, a full collection walks only what was made
      since. Garbage is collected first so that none of it is frozen with them.
    * With CPython's default young-generation threshold a collection runs every 700 net
      allocations, i.e. in the middle of nearly every request: its short-lived objects get promoted,
      pile up in the old generation and trigger full collections. A list of a few hundred objects
      alone allocates thousands of containers. A larger threshold lets them die young, so full
      collections become rare; a young collection then takes a few milliseconds."""
    global _frozen
    if _frozen:
        return
    _frozen = True
    gc.collect()
    gc.freeze()
    young, *older = gc.get_threshold()
    if 0 < young < _YOUNG_THRESHOLD:
        gc.set_threshold(_YOUNG_THRESHOLD, *older)


def _bind(host: str, port: int) -> socket.socket:
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(addr)
        sock.listen(1024)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class APIServer:
    """The Kubernetes API over HTTPS (or plain HTTP when ``ssl_context`` is None, for tests).

    ``storage`` feeds the readiness check; ``post_start_hooks`` run after the listener is up
    (readiness waits for them, as kube's ``poststarthook/*`` checks do)."""

    def __init__(
        self,
        registry: Registry,
        *,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext | None,
        authenticator: Authenticator,
        storage: Storage | None = None,
        authorizer: Authorizer | None = None,
        streaming: StreamingBackend | None = None,
        post_start_hooks: Sequence[PostStartHook] = (),
        shutdown_timeout: float = 10.0,
    ) -> None:
        self._host = host
        self._port = port
        self._ssl = ssl_context
        self._shutdown_timeout = shutdown_timeout
        self.health = HealthChecks(storage=storage)
        self.hub = WatchHub()
        self.app = build_app(
            registry,
            authenticator=authenticator,
            authorizer=authorizer,
            health=self.health,
            hub=self.hub,
            streaming=streaming,
        )
        self._hooks = list(post_start_hooks)
        for name, _ in self._hooks:
            self.health.add_post_start_hook(name)
        self._runner: web.AppRunner | None = None
        self._hooks_task: asyncio.Task[None] | None = None

    @property
    def api(self) -> APIApp:
        return self.app[API_KEY]

    @property
    def port(self) -> int:
        """The bound port (the real one once started, when constructed with port 0)."""
        return self._port

    @property
    def url(self) -> str:
        host = self._host or "127.0.0.1"
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1" if host == "0.0.0.0" else "::1"
        if ":" in host:
            host = f"[{host}]"
        scheme = "https" if self._ssl is not None else "http"
        return f"{scheme}://{host}:{self._port}"

    def set_streaming_backend(self, backend: StreamingBackend | None) -> None:
        """Attach (or detach) the node-agent proxy serving pods/log, exec, attach, portforward."""
        self.api.set_streaming_backend(backend)

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("APIServer already started")
        runner = web.AppRunner(
            self.app,
            handle_signals=False,
            shutdown_timeout=self._shutdown_timeout,
            access_log_class=AccessLogger,
            access_log=logging.getLogger("podvisor.apiserver.access"),
        )
        await runner.setup()
        try:
            sock = _bind(self._host, self._port)
        except BaseException:
            await runner.cleanup()
            raise
        self._port = sock.getsockname()[1]
        site = web.SockSite(runner, sock, ssl_context=self._ssl)
        await site.start()
        self._runner = runner
        _tune_gc()
        log.info("API server listening on %s", self.url)
        if self._hooks:
            self._hooks_task = asyncio.get_running_loop().create_task(self._run_hooks(), name="post-start-hooks")

    async def _run_hooks(self) -> None:
        for name, hook in self._hooks:
            try:
                await hook()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("post-start hook %s failed", name)
                self.health.hook_failed(name, f"{type(exc).__name__}: {exc}")
            else:
                self.health.hook_done(name)

    async def wait_ready(self) -> None:
        """Wait for the post-start hooks (a convenience for tests and `podvisor up`)."""
        if self._hooks_task is not None:
            await asyncio.shield(self._hooks_task)

    async def stop(self) -> None:
        """Stop gracefully; safe to call twice, and safe against a second cancellation."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self.health.start_shutdown()
        self.hub.close_all()
        if self._hooks_task is not None and not self._hooks_task.done():
            self._hooks_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._hooks_task
        # runner.cleanup: stop listening, run on_shutdown (ends watches), wait for in-flight requests
        await asyncio.shield(runner.cleanup())
        log.info("API server on %s stopped", self.url)
