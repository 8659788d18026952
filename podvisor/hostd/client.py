"""An async client for hostd, for the node agent and the CLI.

It logs in with the host secret (``POST /session``), keeps the ticket and logs in again when a
request answers 401 (tickets expire; a restarted hostd forgets them). TLS trusts exactly hostd's
certificate. `HostdClient.agent` opens the guest-agent relay of a VM as an `AgentClient`.

    async with HostdClient.from_data_dir(data_dir) as hostd:
        vm = await hostd.create_vm({"id": "pod-x", "vcpus": 1, "memoryMiB": 320, "disks": [...]},
                                   power_on=True)
        agent = await hostd.agent("pod-x")
        await agent.create_container({...}); await agent.start_container("c1")

Errors: `HostdAPIError` (status, code, message); `code` is hostd's ("NotFound", "Conflict",
"BundleRejected", "BootFailed", ...).
"""

from __future__ import annotations

import contextlib
import json
import ssl
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

from podvisor.crx.client import AgentClient
from podvisor.hostd.component import hostd_paths, read_hostd_state
from podvisor.hostd.tls import client_context

__all__ = ["HostdClient", "HostdAPIError", "WebSocketTransport"]


class HostdAPIError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"hostd {status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


class WebSocketTransport:
    """The agent relay's WebSocket as an `AgentClient` transport."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws

    async def send(self, data: bytes) -> None:
        await self._ws.send_bytes(data)

    async def recv(self) -> bytes:
        msg = await self._ws.receive()
        if msg.type == aiohttp.WSMsgType.BINARY:
            return bytes(msg.data)
        if msg.type == aiohttp.WSMsgType.TEXT:
            return str(msg.data).encode()
        return b""

    async def close(self) -> None:
        await self._ws.close()


class HostdClient:
    def __init__(self, url: str, *, secret: str, cert_file: Path | None = None, ticket_ttl: float | None = None) -> None:
        self.url = url.rstrip("/")
        self._secret = secret
        self._ssl: ssl.SSLContext | bool = client_context(cert_file) if cert_file else False
        self._ttl = ticket_ttl
        self._ticket = ""
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_data_dir(cls, data_dir: Path, *, url: str | None = None) -> HostdClient:
        """A client for the hostd of ``data_dir`` (its url, secret and certificate are read from there)."""
        paths = hostd_paths(data_dir)
        url = url or read_hostd_state(data_dir).get("url")
        if not url:
            raise HostdAPIError(503, "Unavailable", f"no hostd is running for {data_dir}")
        return cls(url, secret=paths["secret"].read_text().strip(), cert_file=paths["cert"])

    async def __aenter__(self) -> HostdClient:
        return self

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            if self._ticket:
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    await self._session.delete(self.url + "/session", ssl=self._ssl, headers=self._auth())
            await self._session.close()
            self._session = None

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._ticket}"} if self._ticket else {}

    async def login(self) -> None:
        body: dict[str, Any] = {"secret": self._secret}
        if self._ttl:
            body["ttlSeconds"] = self._ttl
        async with self._http().post(self.url + "/session", json=body, ssl=self._ssl) as resp:
            data = await _json(resp)
        self._ticket = str(data["ticket"])

    async def request(self, method: str, path: str, *, body: Any = None, text: bool = False) -> Any:
        for attempt in (0, 1):
            if not self._ticket:
                await self.login()
            async with self._http().request(method, self.url + path, json=body, ssl=self._ssl,
                                            headers=self._auth()) as resp:
                if resp.status == 401 and attempt == 0:
                    self._ticket = ""
                    continue
                if text and resp.status < 300:
                    return await resp.text()
                return await _json(resp)
        raise AssertionError("unreachable")

    # ---- the API ----

    async def host(self) -> dict[str, Any]:
        return dict(await self.request("GET", "/host"))

    async def list_vms(self) -> list[dict[str, Any]]:
        return list((await self.request("GET", "/vms"))["items"])

    async def create_vm(self, spec: dict[str, Any], *, power_on: bool = False, start_mode: str = "auto") -> dict[str, Any]:
        """Create a VM; with ``power_on`` also boot it ("auto": from a template if one fits, else cold)."""
        return dict(await self.request("POST", "/vms", body={**spec, "powerOn": power_on, "startMode": start_mode}))

    async def get_vm(self, vm_id: str) -> dict[str, Any]:
        return dict(await self.request("GET", f"/vms/{vm_id}"))

    async def power_on(self, vm_id: str, *, start_mode: str = "auto") -> dict[str, Any]:
        return dict(await self.request("POST", f"/vms/{vm_id}/power", body={"state": "on", "startMode": start_mode}))

    async def list_templates(self) -> list[dict[str, Any]]:
        return list((await self.request("GET", "/templates"))["items"])

    async def build_template(self, layout: dict[str, Any]) -> dict[str, Any]:
        """Build the template of a layout {vcpus, memoryMiB, disks: [{kind, readOnly}], nics} now."""
        return dict(await self.request("POST", "/templates", body=layout))

    async def power_off(self, vm_id: str, *, timeout_s: float = 10.0, force: bool = False) -> dict[str, Any]:
        return dict(await self.request("POST", f"/vms/{vm_id}/power",
                                       body={"state": "off", "timeoutSeconds": timeout_s, "force": force}))

    async def destroy_vm(self, vm_id: str) -> None:
        await self.request("DELETE", f"/vms/{vm_id}")

    async def attach_disk(self, vm_id: str, disk: dict[str, Any]) -> dict[str, Any]:
        return dict(await self.request("PUT", f"/vms/{vm_id}/disks/{disk['id']}", body=disk))

    async def detach_disk(self, vm_id: str, disk_id: str) -> dict[str, Any]:
        return dict(await self.request("DELETE", f"/vms/{vm_id}/disks/{disk_id}"))

    async def attach_nic(self, vm_id: str, nic: dict[str, Any]) -> dict[str, Any]:
        return dict(await self.request("PUT", f"/vms/{vm_id}/nics/{nic['id']}", body=nic))

    async def detach_nic(self, vm_id: str, nic_id: str) -> dict[str, Any]:
        return dict(await self.request("DELETE", f"/vms/{vm_id}/nics/{nic_id}"))

    async def console(self, vm_id: str, *, limit: int = 65536) -> str:
        return str(await self.request("GET", f"/vms/{vm_id}/console?limit={limit}", text=True))

    async def agent(self, vm_id: str) -> AgentClient:
        """The VM's guest agent through hostd's relay (Hello is up to the caller; the VM is set up)."""
        for attempt in (0, 1):
            if not self._ticket:
                await self.login()
            try:
                ws = await self._http().ws_connect(self.url + f"/vms/{vm_id}/agent", ssl=self._ssl,
                                                   headers=self._auth(), max_msg_size=16 << 20, heartbeat=30.0)
            except aiohttp.WSServerHandshakeError as exc:
                if exc.status == 401 and attempt == 0:
                    self._ticket = ""
                    continue
                raise HostdAPIError(exc.status, "Unavailable", f"agent relay of {vm_id}: {exc.message}") from exc
            return AgentClient(WebSocketTransport(ws))
        raise AssertionError("unreachable")


async def _json(resp: aiohttp.ClientResponse) -> Any:
    raw = await resp.read()
    try:
        data = json.loads(raw) if raw else {}
    except ValueError:
        data = {"error": {"code": "Internal", "message": raw.decode(errors="replace")[:300]}}
    if resp.status >= 300:
        err = data.get("error", {}) if isinstance(data, dict) else {}
        raise HostdAPIError(resp.status, str(err.get("code", resp.reason)), str(err.get("message", "")))
    return data
