"""Upgrading an HTTP request to a SPDY/3.1 session, as the kubelet does.

The client sends ``Connection: Upgrade``, ``Upgrade: SPDY/3.1`` and one or more
``X-Stream-Protocol-Version`` values (comma-separated or repeated); we pick the first of the client's
values we support and answer ``101 Switching Protocols`` echoing it. Without the upgrade headers the
answer is 400; without a protocol version 400; with no common version 403 listing ours in
``X-Accepted-Stream-Protocol-Versions`` - the kubelet's answers, in plain text.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

from podvisor.streaming.channel import RawConnection, upgrade_raw
from podvisor.streaming.spdy.session import SpdySession

__all__ = ["is_spdy_request", "spdy_handshake", "upgrade_spdy", "SPDY_UPGRADE", "PROTOCOL_HEADER"]

SPDY_UPGRADE = "SPDY/3.1"
PROTOCOL_HEADER = "X-Stream-Protocol-Version"
ACCEPTED_HEADER = "X-Accepted-Stream-Protocol-Versions"


def is_spdy_request(request: web.BaseRequest) -> bool:
    return (SPDY_UPGRADE.lower() in request.headers.get("Upgrade", "").lower()
            and "upgrade" in request.headers.get("Connection", "").lower())


def _client_protocols(request: web.BaseRequest) -> list[str]:
    out: list[str] = []
    for value in request.headers.getall(PROTOCOL_HEADER, []):
        out.extend(p.strip() for p in value.split(",") if p.strip())
    return out


def spdy_handshake(request: web.BaseRequest, supported: Sequence[str]) -> str | web.Response:
    """The negotiated protocol, or the error response to return."""
    if not is_spdy_request(request):
        return web.Response(status=400, text="unable to upgrade: missing upgrade headers in request")
    client = _client_protocols(request)
    if not client:
        return web.Response(status=400, text=f"unable to upgrade: {PROTOCOL_HEADER} is required")
    for proto in client:
        if proto in supported:
            return proto
    resp = web.Response(status=403, text=(
        f"unable to upgrade: unable to negotiate protocol: client supports {client}, "
        f"server accepts {list(supported)}"))
    for proto in supported:
        resp.headers.add(ACCEPTED_HEADER, proto)
    return resp


async def upgrade_spdy(request: web.BaseRequest, protocol: str) -> tuple[SpdySession, RawConnection]:
    """Answer 101 for ``protocol`` and start a server `SpdySession` on the connection."""
    conn = await upgrade_raw(request, {
        "Connection": "Upgrade",
        "Upgrade": SPDY_UPGRADE,
        PROTOCOL_HEADER: protocol,
    })
    session = SpdySession(conn)
    session.start()
    return session, conn
