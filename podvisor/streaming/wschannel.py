"""Kubernetes' channel protocols over WebSocket: exec and attach, and the Python client's port-forward.

Every message carries one channel's data, prefixed by the channel number: a byte in the binary
protocols (``channel.k8s.io``, ``v4.channel.k8s.io``, ``v5.channel.k8s.io``), an ASCII digit followed
by base64 text in the base64 ones (``base64.channel.k8s.io``, ``v4.base64.channel.k8s.io``). For exec:
0 stdin, 1 stdout, 2 stderr, 3 error (the final Status: JSON from v4 on, plain text before), 4 resize.
v5 adds a close signal, the two bytes ``[255, channel]``: the client has no more stdin - without it
``echo hi | kubectl exec -i ... cat`` could never end. A client that names no subprotocol gets the
plain binary framing, as from the kubelet.

Subprotocol choice follows the kubelet: the first protocol in the *client's* list that we support. A
client that offers only protocols we do not know gets 400 rather than a protocol-less 101, so kubectl
falls back to SPDY.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence

from aiohttp import WSMessage, WSMsgType, web

__all__ = [
    "EXEC_PROTOCOLS",
    "PORTFORWARD_PROTOCOLS",
    "STDIN",
    "STDOUT",
    "STDERR",
    "ERROR",
    "RESIZE",
    "CLOSE",
    "ChannelCodec",
    "ChannelOutput",
    "requested_protocols",
    "negotiate",
    "is_websocket_request",
]

STDIN, STDOUT, STDERR, ERROR, RESIZE = 0, 1, 2, 3, 4
CLOSE = 255

EXEC_PROTOCOLS = (
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
)
PORTFORWARD_PROTOCOLS = ("v4.channel.k8s.io", "v4.base64.channel.k8s.io")

_MAX_MESSAGE = 32 * 1024


def is_websocket_request(request: web.BaseRequest) -> bool:
    return (request.headers.get("Upgrade", "").strip().lower() == "websocket"
            and "upgrade" in request.headers.get("Connection", "").lower())


def requested_protocols(request: web.BaseRequest) -> list[str]:
    out: list[str] = []
    for value in request.headers.getall("Sec-WebSocket-Protocol", []):
        out.extend(p.strip() for p in value.split(",") if p.strip())
    return out


def negotiate(requested: Sequence[str], supported: Iterable[str]) -> str | None:
    """The chosen subprotocol: "" when the client asked for none, None when nothing matches."""
    if not requested:
        return ""
    allowed = set(supported)
    for proto in requested:
        if proto in allowed:
            return proto
    return None


class ChannelCodec:
    """Framing of one negotiated channel protocol."""

    def __init__(self, protocol: str) -> None:
        self.protocol = protocol
        self.base64 = "base64." in protocol
        self.structured_status = protocol.startswith(("v4.", "v5."))
        self.closable = protocol.startswith("v5.")

    def decode(self, msg: WSMessage) -> tuple[int, bytes, bool] | None:
        """(channel, data, is_close_signal) of a data message; None for anything else."""
        if msg.type in (WSMsgType.BINARY, WSMsgType.TEXT) and not self.base64:
            # the kubelet reads text messages as bytes too (the Python client sends stdin strings as text)
            raw: bytes = msg.data.encode("utf-8") if msg.type == WSMsgType.TEXT else msg.data
            if not raw:
                return None
            if self.closable and raw[0] == CLOSE:
                return (raw[1], b"", True) if len(raw) == 2 else None
            return raw[0], raw[1:], False
        if msg.type == WSMsgType.TEXT and self.base64:
            text: str = msg.data
            if not text:
                return None
            try:
                return ord(text[0]) - ord("0"), base64.b64decode(text[1:]), False
            except ValueError:
                return None
        return None

    async def send(self, ws: web.WebSocketResponse, channel: int, data: bytes) -> None:
        """Send ``data`` on ``channel`` (an empty ``data`` still sends the bare channel prefix)."""
        view = memoryview(data)
        first = True
        while first or view:
            first = False
            chunk, view = view[:_MAX_MESSAGE], view[_MAX_MESSAGE:]
            if self.base64:
                await ws.send_str(chr(ord("0") + channel) + base64.b64encode(chunk).decode("ascii"))
            else:
                await ws.send_bytes(bytes((channel,)) + bytes(chunk))


class ChannelOutput:
    """An `OutputStream` writing to one channel."""

    def __init__(self, ws: web.WebSocketResponse, codec: ChannelCodec, channel: int) -> None:
        self._ws = ws
        self._codec = codec
        self._channel = channel

    async def write(self, data: bytes) -> None:
        if not data:
            return
        if self._ws.closed:
            raise ConnectionResetError("websocket closed")
        await self._codec.send(self._ws, self._channel, data)
