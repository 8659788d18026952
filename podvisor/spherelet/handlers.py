"""Running one probe or lifecycle-hook handler against a container: exec, httpGet, tcpSocket, sleep.

Probes and hooks share Kubernetes' handler shapes, so they share this code. Network handlers reach the
pod through the runtime (the guest agent connects to 127.0.0.1:port inside the VM), not over the pod
network: the host needs no route into the pod network, and a probe works before the NIC is up. The
blind spot, written down: a server that listens only on the pod IP (not on 0.0.0.0 or 127.0.0.1)
cannot be probed this way; ``host`` in httpGet/tcpSocket is ignored for the same reason.

Messages are worded as the kubelet words them, since they end up in ``Unhealthy`` events.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from podvisor.spherelet.runtime import Runtime, RuntimeFailure

__all__ = ["HandlerResult", "run_handler", "resolve_port", "handler_kind"]

USER_AGENT = "kube-probe/1.32"


@dataclass(frozen=True)
class HandlerResult:
    ok: bool
    message: str = ""


def handler_kind(handler: Mapping[str, Any]) -> str:
    for kind in ("exec", "httpGet", "tcpSocket", "grpc", "sleep"):
        if handler.get(kind) is not None:
            return kind
    return ""


def resolve_port(container: Mapping[str, Any], port: Any) -> int:
    """A probe's ``port``: a number, or the name of one of the container's ports."""
    if isinstance(port, int):
        return port
    text = str(port)
    if text.isdigit():
        return int(text)
    for p in container.get("ports") or []:
        if p.get("name") == text:
            return int(p.get("containerPort", 0))
    raise ValueError(f"couldn't find port {text} in the container's ports")


def _http_request(spec: Mapping[str, Any], host: str, port: int) -> tuple[bytes, str]:
    path = str(spec.get("path") or "/")
    if not path.startswith("/"):
        path = "/" + path
    headers = {"Host": f"{host}:{port}" if host else f"localhost:{port}", "User-Agent": USER_AGENT,
               "Accept": "*/*", "Connection": "close"}
    for h in spec.get("httpHeaders") or []:
        name = str(h.get("name", ""))
        if name:
            # a user's header replaces ours of the same name (Host and User-Agent included, as in kube)
            for k in [k for k in headers if k.lower() == name.lower()]:
                del headers[k]
            headers[name] = str(h.get("value", ""))
    head = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    scheme = str(spec.get("scheme") or "HTTP").lower()
    url = f"{scheme}://{host or 'localhost'}:{port}{path}"
    return head.encode("latin-1"), url


async def run_handler(runtime: Runtime, sandbox_id: str, container_id: str, container: Mapping[str, Any],
                      handler: Mapping[str, Any], *, timeout_s: float, pod_ip: str = "") -> HandlerResult:
    kind = handler_kind(handler)
    try:
        if kind == "exec":
            command = [str(x) for x in (handler["exec"].get("command") or [])]
            if not command:
                return HandlerResult(False, "exec handler has no command")
            res = await runtime.exec_sync(sandbox_id, container_id, command, timeout_s=timeout_s)
            output = (res.stdout + res.stderr).decode(errors="replace")
            if res.timed_out:
                return HandlerResult(False, f"command {command!r} timed out")
            if res.exit_code != 0:
                return HandlerResult(False, output)
            return HandlerResult(True, output)
        if kind == "tcpSocket":
            port = resolve_port(container, handler["tcpSocket"].get("port"))
            try:
                await runtime.port_check(sandbox_id, port, timeout_s=timeout_s)
            except (OSError, TimeoutError) as exc:
                return HandlerResult(False, f"dial tcp {pod_ip or '127.0.0.1'}:{port}: {_net_error(exc)}")
            return HandlerResult(True)
        if kind == "httpGet":
            spec = handler["httpGet"]
            port = resolve_port(container, spec.get("port"))
            if str(spec.get("scheme") or "HTTP").upper() == "HTTPS":
                return HandlerResult(False, "HTTPS probes are not supported on this host yet")
            request, url = _http_request(spec, pod_ip, port)
            try:
                answer = await runtime.http_get(sandbox_id, port, request, timeout_s=timeout_s)
            except TimeoutError:
                return HandlerResult(False, f'Get "{url}": context deadline exceeded (Client.Timeout exceeded '
                                            f'while awaiting headers)')
            except OSError as exc:
                return HandlerResult(False, f'Get "{url}": dial tcp {pod_ip or "127.0.0.1"}:{port}: {_net_error(exc)}')
            code = _status_code(answer)
            if code is None:
                return HandlerResult(False, f'Get "{url}": malformed HTTP response')
            if 200 <= code < 400:
                return HandlerResult(True)
            return HandlerResult(False, f"HTTP probe failed with statuscode: {code}")
        if kind == "sleep":
            await asyncio.sleep(max(0, int(handler["sleep"].get("seconds") or 0)))
            return HandlerResult(True)
        if kind == "grpc":
            return HandlerResult(False, "gRPC probes are not supported on this host")
        return HandlerResult(False, "handler has no action")
    except ValueError as exc:
        return HandlerResult(False, str(exc))
    except RuntimeFailure as exc:
        return HandlerResult(False, str(exc))


def _net_error(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connect: connection refused"
    if isinstance(exc, TimeoutError):
        return "i/o timeout"
    return str(exc) or type(exc).__name__


def _status_code(answer: bytes) -> int | None:
    line = answer.split(b"\r\n", 1)[0].split(b"\n", 1)[0]
    parts = line.split()
    if len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1].isdigit():
        return int(parts[1])
    return None
