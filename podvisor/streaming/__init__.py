"""Kubernetes' streaming protocols (exec, attach, port-forward, logs), server side and relay.

Two users, one package:

- the node agent (spherelet) serves the protocols: `serve_exec` / `serve_attach` / `serve_portforward`
  / `serve_log` on an aiohttp request, with an `ExecTarget` or `PortForwardTarget` that does the real
  work (the pod VM's guest agent). The protocol is chosen from the request: WebSocket channels
  (v5/v4/v1, binary or base64), SPDY/3.1 (plain upgrade, or tunnelled in WebSocket for kubectl's
  port-forward) or the Python client's port-forward channels.
- the API server relays: `proxy_upgrade` / `proxy_log` forward the client's request to the node agent
  and splice the upgraded connections byte for byte, so the API server decodes nothing;
  ``podvisor.streaming.nodeproxy.NodeProxyBackend`` plugs that into the API server's
  ``StreamingBackend`` seam. It is the one module here that imports API server code (its errors), so
  it is not re-exported: the node agent imports this package without the API server.

Module map: `target` (the backend interfaces), `status` (the final Status), `wschannel`/`wsexec`
(WebSocket channels), `spdy` (frames, session), `spdyserve`/`spdyexec` (SPDY upgrade and exec),
`portforward`, `serve` (entry points), `channel` (byte pipes, connection takeover), `proxy`,
`logs` (log query options), `nodeproxy` (the API server backend).
"""

from podvisor.streaming.logs import LogOptions
from podvisor.streaming.proxy import UpstreamError, proxy_log, proxy_upgrade
from podvisor.streaming.serve import serve_attach, serve_exec, serve_log, serve_portforward
from podvisor.streaming.target import (
    ExecError,
    ExecOptions,
    ExecTarget,
    ExitStatus,
    OutputStream,
    PortForwardTarget,
    PortReader,
    PortWriter,
    TerminalSize,
)

__all__ = [
    "ExecError",
    "ExecOptions",
    "ExecTarget",
    "ExitStatus",
    "LogOptions",
    "OutputStream",
    "PortForwardTarget",
    "PortReader",
    "PortWriter",
    "TerminalSize",
    "UpstreamError",
    "proxy_log",
    "proxy_upgrade",
    "serve_attach",
    "serve_exec",
    "serve_log",
    "serve_portforward",
]
