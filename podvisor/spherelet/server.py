"""The spherelet's HTTPS server: what the API server calls on a node, as on a kubelet.

    GET  /healthz                                          "ok"
    GET  /pods                                             the pods this node runs (a PodList)
    GET  /containerLogs/{ns}/{pod}/{container}             kubectl logs (follow, previous, tailLines,
                                                           sinceSeconds, sinceTime, timestamps, limitBytes)
    GET|POST /exec/{ns}/{pod}[/{uid}]/{container}          kubectl exec (WebSocket v5/v4, SPDY)
    GET|POST /attach/{ns}/{pod}[/{uid}]/{container}        kubectl attach
    GET|POST /portForward/{ns}/{pod}[/{uid}]               kubectl port-forward (SPDY, WebSocket tunnel,
                                                           the Python client's channel variant)

The protocols are `podvisor.streaming`'s; this module only finds the pod and container and adapts the
runtime's streams (`podvisor.spherelet.streams`). Query parameters are accepted both as kubectl sends
them (``stdin=true``) and as kube-apiserver rewrites them for a kubelet (``input=1``, ``output=1``,
``error=1``). Errors before an upgrade are plain-text 400/404 answers, which the API server relays.

TLS: the server presents its own certificate (a self-signed one is made in the data dir when none is
given, as a kubelet does) and, given a client CA, accepts only clients with a certificate from it.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import ssl
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from podvisor.spherelet.containers import attempts
from podvisor.spherelet.logs import LogOptions, log_chunks, parse_time
from podvisor.spherelet.runtime import StreamingRuntime
from podvisor.spherelet.streams import RuntimeAttachTarget, RuntimeExecTarget, RuntimePortForward
from podvisor.streaming.serve import serve_exec, serve_log, serve_portforward
from podvisor.streaming.target import ExecOptions, parse_bool

__all__ = ["StreamingServer", "PodLookup", "PodHandle", "ensure_serving_cert", "server_ssl_context"]

log = logging.getLogger("podvisor.spherelet.server")


@dataclass
class PodHandle:
    pod: Mapping[str, Any]
    sandbox_id: str
    containers: list[Any]          # ContainerInfo of the pod's sandbox, latest known


class PodLookup(Protocol):
    def find(self, namespace: str, name: str) -> PodHandle | None: ...

    def pods(self) -> list[Mapping[str, Any]]: ...


def _text(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=message)


class StreamingServer:
    def __init__(self, *, lookup: PodLookup, runtime: StreamingRuntime, host: str = "127.0.0.1", port: int = 0,
                 ssl_context: ssl.SSLContext | None = None, now: Callable[[], float]) -> None:
        self.lookup, self.runtime = lookup, runtime
        self.host, self.port = host, port
        self.ssl_context = ssl_context
        self.now = now
        self._runner: web.AppRunner | None = None
        self.app = self.build_app()

    def build_app(self) -> web.Application:
        app = web.Application()
        r = app.router
        r.add_get("/healthz", self.healthz)
        r.add_get("/pods", self.list_pods)
        r.add_get("/containerLogs/{ns}/{pod}/{container}", self.logs)
        r.add_get("/containerLogs/{ns}/{pod}", self.logs)
        for verb in ("exec", "attach"):
            handler = self.exec if verb == "exec" else self.attach
            for path in (f"/{verb}/{{ns}}/{{pod}}/{{container}}", f"/{verb}/{{ns}}/{{pod}}/{{uid}}/{{container}}"):
                r.add_route("GET", path, handler)
                r.add_route("POST", path, handler)
        for path in ("/portForward/{ns}/{pod}", "/portForward/{ns}/{pod}/{uid}"):
            r.add_route("GET", path, self.portforward)
            r.add_route("POST", path, self.portforward)
        return app

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=self.ssl_context)
        await site.start()
        sockets = getattr(site._server, "sockets", None)
        if self.port == 0 and sockets:
            self.port = int(sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ---- helpers ------------------------------------------------------------------------------------

    def _pod(self, request: web.Request) -> PodHandle | web.Response:
        ns, name = request.match_info["ns"], request.match_info["pod"]
        handle = self.lookup.find(ns, name)
        if handle is None:
            return _text(404, f'pod "{name}" not found')
        uid = request.match_info.get("uid")
        if uid and str((handle.pod.get("metadata") or {}).get("uid")) != uid:
            return _text(404, f'pod "{name}" with uid {uid} not found')
        return handle

    @staticmethod
    def _container_name(request: web.Request, handle: PodHandle) -> str | web.Response:
        name = request.match_info.get("container") or request.query.get("container", "")
        spec = handle.pod.get("spec") or {}
        names = [str(c.get("name")) for c in list(spec.get("containers") or []) + list(spec.get("initContainers") or [])]
        if not name:
            if len(spec.get("containers") or []) == 1:
                return str(spec["containers"][0].get("name"))
            return _text(400, "a container name must be specified for pod "
                              f"{(handle.pod.get('metadata') or {}).get('name')}, choose one of: {names}")
        if name not in names:
            return _text(400, f'container {name} is not valid for pod {(handle.pod.get("metadata") or {}).get("name")}')
        return name

    def _running(self, handle: PodHandle, name: str) -> Any:
        at = attempts(handle.containers, name)
        if not at or at[-1][1].state != "running":
            return None
        return at[-1][1]

    # ---- endpoints ----------------------------------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def list_pods(self, request: web.Request) -> web.Response:
        return web.json_response({"kind": "PodList", "apiVersion": "v1", "metadata": {},
                                  "items": [dict(p) for p in self.lookup.pods()]})

    async def logs(self, request: web.Request) -> web.StreamResponse:
        handle = self._pod(request)
        if isinstance(handle, web.Response):
            return handle
        name = self._container_name(request, handle)
        if isinstance(name, web.Response):
            return name
        q = request.query
        try:
            tail_lines = int(q["tailLines"]) if q.get("tailLines") not in (None, "") else None
            limit = int(q["limitBytes"]) if q.get("limitBytes") not in (None, "") else None
            since: float | None = None
            if q.get("sinceSeconds"):
                since = self.now() - int(q["sinceSeconds"])
            elif q.get("sinceTime"):
                since = parse_time(q["sinceTime"])
        except ValueError as exc:
            return _text(400, f"invalid log options: {exc}")
        opts = LogOptions(follow=parse_bool(q.get("follow")), previous=parse_bool(q.get("previous")),
                          timestamps=parse_bool(q.get("timestamps")), tail_lines=tail_lines, since=since,
                          limit_bytes=limit)
        pod_name = (handle.pod.get("metadata") or {}).get("name")
        at = attempts(handle.containers, name)
        if opts.previous:
            if len(at) < 2:
                return _text(400, f'previous terminated container "{name}" in pod "{pod_name}" not found')
            info = at[-2][1]
        else:
            if not at:
                reason = "ContainerCreating"
                for st in list((handle.pod.get("status") or {}).get("containerStatuses") or []) + \
                        list((handle.pod.get("status") or {}).get("initContainerStatuses") or []):
                    if st.get("name") == name:
                        reason = ((st.get("state") or {}).get("waiting") or {}).get("reason") or reason
                return _text(400, f'container "{name}" in pod "{pod_name}" is waiting to start: {reason}')
            info = at[-1][1]
        log_path, container_id = info.log_path, info.id
        sandbox_id = handle.sandbox_id
        follow = opts.follow and info.state == "running"
        opts = LogOptions(follow=follow, previous=opts.previous, timestamps=opts.timestamps,
                          tail_lines=opts.tail_lines, since=opts.since, limit_bytes=opts.limit_bytes)

        def read(follow_: bool, offset: int) -> AsyncIterator[bytes]:
            return self.runtime.read_log(sandbox_id, container_id, log_path, follow=follow_, offset=offset)

        return await serve_log(request, log_chunks(read, opts), limit_bytes=opts.limit_bytes)

    def _exec_options(self, request: web.Request, container: str, command: tuple[str, ...]) -> ExecOptions:
        q = request.query

        def flag(*names: str) -> bool:
            return any(parse_bool(q.get(n)) for n in names)

        tty = flag("tty")
        opts = ExecOptions(command=command, container=container, stdin=flag("stdin", "input"),
                           stdout=flag("stdout", "output"), stderr=flag("stderr", "error") and not tty, tty=tty)
        if not (opts.stdin or opts.stdout or opts.stderr):
            raise ValueError("you must specify at least 1 of stdin, stdout, stderr")
        return opts

    async def exec(self, request: web.Request) -> web.StreamResponse:
        handle = self._pod(request)
        if isinstance(handle, web.Response):
            return handle
        name = self._container_name(request, handle)
        if isinstance(name, web.Response):
            return name
        command = tuple(request.query.getall("command", []))
        if not command:
            return _text(400, "you must specify at least one command for the container")
        info = self._running(handle, name)
        if info is None:
            return _text(400, f"unable to upgrade connection: container not found (\"{name}\")")
        try:
            opts = self._exec_options(request, name, command)
        except ValueError as exc:
            return _text(400, str(exc))
        target = RuntimeExecTarget(self.runtime, handle.sandbox_id, info.id, list(command))
        return await serve_exec(request, target, options=opts)

    async def attach(self, request: web.Request) -> web.StreamResponse:
        handle = self._pod(request)
        if isinstance(handle, web.Response):
            return handle
        name = self._container_name(request, handle)
        if isinstance(name, web.Response):
            return name
        info = self._running(handle, name)
        if info is None:
            return _text(400, f"unable to upgrade connection: container not found (\"{name}\")")
        try:
            opts = self._exec_options(request, name, ())
        except ValueError as exc:
            return _text(400, str(exc))
        target = RuntimeAttachTarget(self.runtime, handle.sandbox_id, info.id)
        return await serve_exec(request, target, options=opts)

    async def portforward(self, request: web.Request) -> web.StreamResponse:
        handle = self._pod(request)
        if isinstance(handle, web.Response):
            return handle
        md = handle.pod.get("metadata") or {}
        target = RuntimePortForward(self.runtime, handle.sandbox_id)
        return await serve_portforward(request, target, label=f"{md.get('name')}_{md.get('namespace')}")


def ensure_serving_cert(directory: Path, *, node_name: str, addresses: list[str]) -> tuple[Path, Path]:
    """A self-signed serving certificate for this node (made once, like a kubelet's)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "spherelet.crt", directory / "spherelet.key"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{node_name}@spherelet")])
    sans: list[x509.GeneralName] = [x509.DNSName(node_name)]
    for a in addresses:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(a)))
        except ValueError:
            sans.append(x509.DNSName(a))
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(key, hashes.SHA256()))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def server_ssl_context(cert: Path, key: Path, *, client_ca: Path | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    if client_ca is not None:
        ctx.load_verify_locations(cafile=str(client_ca))
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx
