"""A loopback node agent for the streaming tests, and a small API server relaying to it.

`Backend` is an aiohttp app on 127.0.0.1 that answers just enough of the Kubernetes API for kubectl
(``/version`` with minor 32, ``/api``, ``/apis``, ``/api/v1`` with pods and their subresources, GET of a
Running pod) and serves the streaming subresources with the package under test and the local targets.
`MiniAPI` serves discovery and pods itself and relays the streaming subresources with
`NodeProxyBackend` (`proxy_upgrade` / `proxy_log`) to a backend that requires TLS client certificates,
as the API server will relay to the spherelet.

Both run on one event loop in a background thread so the tests can drive them with blocking clients:
the real kubectl in a subprocess, the official Python client.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import shutil
import ssl
import struct
import subprocess
import termios
import threading
import time
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web
from yarl import URL

from podvisor.apiserver.errors import APIError
from podvisor.pki import ClusterPKI, ensure_cluster_pki
from podvisor.streaming import (
    TerminalSize,
    serve_exec,
    serve_log,
    serve_portforward,
)
from podvisor.streaming.nodeproxy import NODE_PATHS, NodeProxyBackend
from tests.streaming.targets import LocalExecTarget, LocalPortTarget, start_echo_server, start_http_server

KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"
T = TypeVar("T")
ATTACH_SCRIPT = "echo attached; read line; echo got $line; echo to-stderr >&2"


class LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def _json(obj: Any) -> web.Response:
    return web.json_response(obj)


def pod_object(name: str, namespace: str) -> dict[str, Any]:
    started = "2025-01-01T00:00:00Z"
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}", "resourceVersion": "1",
                     "creationTimestamp": started},
        "spec": {"containers": [{"name": "main", "image": "busybox", "stdin": True}],
                 "nodeName": "" if name == "p-unscheduled" else "node-1"},
        "status": {"phase": "Running", "podIP": "10.88.0.5", "startTime": started,
                   "conditions": [{"type": "Ready", "status": "True"}],
                   "containerStatuses": [{"name": "main", "ready": True, "restartCount": 0, "image": "busybox",
                                          "imageID": "busybox@sha256:0", "started": True,
                                          "state": {"running": {"startedAt": started}}}]},
    }


def _discovery(app: web.Application) -> None:
    async def version(_: web.Request) -> web.Response:
        return _json({"major": "1", "minor": "32", "gitVersion": "v1.32.4-podvisor", "gitCommit": "0",
                      "gitTreeState": "clean", "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.23",
                      "compiler": "gc", "platform": "linux/amd64"})

    async def api(_: web.Request) -> web.Response:
        return _json({"kind": "APIVersions", "versions": ["v1"],
                      "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]})

    async def apis(_: web.Request) -> web.Response:
        return _json({"kind": "APIGroupList", "apiVersion": "v1", "groups": []})

    async def v1(_: web.Request) -> web.Response:
        res = [{"name": "pods", "singularName": "pod", "namespaced": True, "kind": "Pod",
                "verbs": ["get", "list"], "shortNames": ["po"]}]
        for sub, verbs in (("log", ["get"]), ("exec", ["create", "get"]), ("attach", ["create", "get"]),
                           ("portforward", ["create", "get"])):
            kind = "Pod" if sub == "log" else f"Pod{sub.capitalize()}Options"
            res.append({"name": f"pods/{sub}", "singularName": "", "namespaced": True, "kind": kind, "verbs": verbs})
        return _json({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "v1", "resources": res})

    async def get_pod(request: web.Request) -> web.Response:
        return _json(pod_object(request.match_info["name"], request.match_info["ns"]))

    app.router.add_get("/version", version)
    app.router.add_get("/api", api)
    app.router.add_get("/apis", apis)
    app.router.add_get("/api/v1", v1)
    app.router.add_get("/api/v1/namespaces/{ns}/pods/{name}", get_pod)


@dataclass
class Backend:
    """The node-agent stand-in. ``seen`` records (subresource, upgrade, subprotocol) per request."""

    workdir: Path
    url: str = ""
    seen: list[tuple[str, str, str]] = field(default_factory=list)
    targets: list[LocalExecTarget] = field(default_factory=list)
    port_map: dict[int, int] = field(default_factory=dict)
    refuse_websocket: bool = False
    log_lines: list[bytes] = field(default_factory=list)
    follow_queue: asyncio.Queue[bytes | None] | None = None
    logs_closed: int = 0
    runner: web.AppRunner | None = None
    servers: list[asyncio.Server] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        _discovery(app)
        base = "/api/v1/namespaces/{ns}/pods/{name}"
        app.router.add_route("*", base + "/exec", self.exec)
        app.router.add_route("*", base + "/attach", self.attach)
        app.router.add_route("*", base + "/portforward", self.portforward)
        app.router.add_get(base + "/log", self.log)
        # the same, under the node agent's (kubelet's) paths, for the API server's relay
        for sub, handler in (("exec", self.exec), ("attach", self.attach), ("portforward", self.portforward)):
            app.router.add_route("*", NODE_PATHS[sub].replace("{pod}", "{name}").replace("{namespace}", "{ns}"),
                                 handler)
        app.router.add_get(NODE_PATHS["log"].replace("{pod}", "{name}").replace("{namespace}", "{ns}"), self.log)
        return app

    def _record(self, request: web.Request, sub: str) -> web.Response | None:
        upgrade = request.headers.get("Upgrade", "")
        proto = request.headers.get("Sec-WebSocket-Protocol", "") or ",".join(
            request.headers.getall("X-Stream-Protocol-Version", []))
        self.seen.append((sub, upgrade.lower(), proto))
        if self.refuse_websocket and upgrade.lower() == "websocket":
            return web.Response(status=400, text="websocket refused by the test")
        return None

    async def exec(self, request: web.Request) -> web.StreamResponse:
        if (refused := self._record(request, "exec")) is not None:
            return refused
        target = LocalExecTarget(request.query.getall("command", []), cwd=str(self.workdir))
        self.targets.append(target)
        return await serve_exec(request, target)

    async def attach(self, request: web.Request) -> web.StreamResponse:
        if (refused := self._record(request, "attach")) is not None:
            return refused
        target = LocalExecTarget(["sh", "-c", ATTACH_SCRIPT], cwd=str(self.workdir))
        self.targets.append(target)
        return await serve_exec(request, target)

    async def portforward(self, request: web.Request) -> web.StreamResponse:
        if (refused := self._record(request, "portforward")) is not None:
            return refused
        return await serve_portforward(request, LocalPortTarget(self.port_map), label=request.match_info["name"])

    async def log(self, request: web.Request) -> web.StreamResponse:
        self._record(request, "log")
        follow = request.query.get("follow") == "true"
        lines, queue = list(self.log_lines), self.follow_queue

        async def chunks() -> AsyncIterator[bytes]:
            try:
                for line in lines:
                    yield line
                if follow and queue is not None:
                    while (more := await queue.get()) is not None:
                        yield more
            finally:
                self.logs_closed += 1

        return await serve_log(request, chunks(), poll=0.1)

    async def start(self, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self.servers = [await start_echo_server(), await start_http_server(b"hello from the pod\n")]
        self.port_map = {80: _port(self.servers[0]), 8080: _port(self.servers[1])}
        self.follow_queue = asyncio.Queue()
        self.runner = web.AppRunner(self.app(), handle_signals=False)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
        for server in self.servers:
            server.close()

    async def wait_resize(self, size: TerminalSize) -> None:
        """Until a tty session has applied ``size`` (the caller bounds the wait)."""
        while not any(size in t.resizes for t in self.targets):
            await asyncio.sleep(0.05)


def _port(server: asyncio.Server) -> int:
    return int(server.sockets[0].getsockname()[1])


@dataclass
class MiniAPI:
    """An API server reduced to what kubectl needs for pods, whose streaming subresources go through
    `NodeProxyBackend` to the node agent at ``node_url`` - the API server's wiring in small."""

    node_url: str
    ssl_context: ssl.SSLContext | None
    url: str = ""
    runner: web.AppRunner | None = None

    async def get_node(self, name: str) -> dict[str, Any] | None:
        if name != "node-1":
            return None
        parsed = URL(self.node_url)
        return {"metadata": {"name": name},
                "status": {"addresses": [{"type": "InternalIP", "address": parsed.host}],
                           "daemonEndpoints": {"kubeletEndpoint": {"Port": parsed.port}}}}

    def app(self) -> web.Application:
        streaming = NodeProxyBackend(get_node=self.get_node, ssl_context=self.ssl_context,
                                     scheme=URL(self.node_url).scheme)

        @web.middleware
        async def errors(request: web.Request, handler: Any) -> web.StreamResponse:
            try:
                return await handler(request)
            except APIError as err:
                return web.json_response(err.status(), status=err.code)

        async def subresource(request: web.Request) -> web.StreamResponse:
            pod = pod_object(request.match_info["name"], request.match_info["ns"])
            sub = request.match_info["sub"]
            if sub not in ("log", "exec", "attach", "portforward"):
                raise web.HTTPNotFound()
            result: web.StreamResponse = await getattr(streaming, sub)(pod, request, None)
            return result

        app = web.Application(middlewares=[errors])
        _discovery(app)
        app.router.add_route("*", "/api/v1/namespaces/{ns}/pods/{name}/{sub}", subresource)
        return app

    async def start(self) -> None:
        self.runner = web.AppRunner(self.app(), handle_signals=False)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def tls_contexts(pki: ClusterPKI) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context requiring client certificates, client context with the admin certificate)."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(pki.serving_cert, pki.serving_key)
    server.load_verify_locations(pki.ca_cert)
    server.verify_mode = ssl.CERT_REQUIRED
    client = ssl.create_default_context(cafile=str(pki.ca_cert))
    client.load_cert_chain(pki.admin_cert, pki.admin_key)
    return server, client


def make_pki(tmp: Path) -> ClusterPKI:
    return ensure_cluster_pki(tmp, sans=["127.0.0.1", "localhost"])


# ------------------------------------------------------------------------------------------ kubectl


@dataclass
class Kubectl:
    server: str
    home: Path

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBECTL_")}
        env.update(HOME=str(self.home), KUBECONFIG=str(self.home / "none"))
        env.update(extra)
        return env

    def argv(self, *args: str) -> list[str]:
        return [KUBECTL, "--server", self.server, "-n", "default", *args]

    def run(self, *args: str, input: bytes | None = None, timeout: float = 60,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(self.argv(*args), input=input, capture_output=True, timeout=timeout,
                              env=env or self.env())

    def popen(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.argv(*args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env or self.env())


def set_winsize(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def spawn_in_pty(argv: list[str], env: dict[str, str], rows: int, cols: int) -> tuple[subprocess.Popen[bytes], int]:
    """Start ``argv`` with a pseudo-terminal as its controlling terminal; return it and the master."""
    master, slave = pty.openpty()
    set_winsize(slave, rows, cols)

    def controlling_tty() -> None:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True,
                            preexec_fn=controlling_tty)
    os.close(slave)
    return proc, master


def read_until(fd: int, needle: bytes, seen: bytearray, timeout: float = 30) -> bytes:
    """Read ``fd`` into ``seen`` until ``needle`` appears in it."""
    import select

    deadline = time.monotonic() + timeout
    while needle not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"{needle!r} never came; got {bytes(seen)!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                data = os.read(fd, 4096)
            except OSError:
                data = b""
            if not data:
                raise AssertionError(f"EOF before {needle!r}; got {bytes(seen)!r}")
            seen += data
    return bytes(seen)


def start_forward(kubectl: Kubectl, *ports: str, env: dict[str, str] | None = None
                  ) -> tuple[subprocess.Popen[bytes], list[int]]:
    """``kubectl port-forward p1 <ports>``; the local ports it reports, in order."""
    proc = kubectl.popen("port-forward", "pod/p1", *ports, env=env)
    assert proc.stdout is not None
    local: list[int] = []
    deadline = time.monotonic() + 30
    while len(local) < len(ports):
        if time.monotonic() > deadline or proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr and proc.poll() is not None else ""
            proc.kill()
            raise AssertionError(f"port-forward did not start: {err}")
        line = proc.stdout.readline().decode()
        if line.startswith("Forwarding from 127.0.0.1:"):
            local.append(int(line.split(":")[1].split()[0]))
    return proc, local
