"""hostd's door: tickets, 401 for everything else, loopback only, and API validation (no VM boots)."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from podvisor.hostd.client import HostdAPIError, HostdClient
from podvisor.hostd.component import HostdComponent
from tests.crx.harness import size_of

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def api(tmp_path_factory: pytest.TempPathFactory, crx_dir: Path) -> AsyncIterator[HostdComponent]:
    component = HostdComponent(tmp_path_factory.mktemp("hostd-api"), host_name="pv-api", crx_dir=crx_dir)
    await component.start()
    yield component
    await component.stop()


def _tls(component: HostdComponent) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(component.cert_file))


async def _status(component: HostdComponent, method: str, path: str, *, headers: dict[str, str] | None = None,
                  body: object = None) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as s, s.request(method, component.url + path, ssl=_tls(component),
                                                       headers=headers, json=body) as r:
        text = await r.text()
        return r.status, json.loads(text) if text else {}


async def test_listens_on_loopback_only(api: HostdComponent) -> None:
    assert api.url.startswith("https://127.0.0.1:")
    assert api.secret_file.stat().st_mode & 0o077 == 0


@pytest.mark.parametrize("method,path", [("GET", "/vms"), ("GET", "/host"), ("POST", "/vms"),
                                         ("GET", "/vms/x/console"), ("GET", "/no/such/path"), ("DELETE", "/vms/x")])
async def test_everything_needs_a_ticket(api: HostdComponent, method: str, path: str) -> None:
    status, body = await _status(api, method, path)
    assert status == 401
    assert body == {"error": {"code": "Unauthorized",
                              "message": "a valid session ticket is required (POST /session with the host secret)"}}


async def test_bad_secret_and_bad_ticket_are_refused(api: HostdComponent) -> None:
    assert (await _status(api, "POST", "/session", body={"secret": "0" * 64}))[0] == 401
    assert (await _status(api, "GET", "/vms", headers={"Authorization": "Bearer forged"}))[0] == 401


async def test_expired_ticket_is_refused_and_the_client_logs_in_again(api: HostdComponent) -> None:
    secret = api.secret_file.read_text().strip()
    status, body = await _status(api, "POST", "/session", body={"secret": secret, "ttlSeconds": 0.2})
    assert status == 201
    headers = {"Authorization": f"Bearer {body['ticket']}"}
    assert (await _status(api, "GET", "/vms", headers=headers))[0] == 200
    await asyncio.sleep(0.3)
    assert (await _status(api, "GET", "/vms", headers=headers))[0] == 401
    client = HostdClient(api.url, secret=secret, cert_file=api.cert_file, ticket_ttl=0.2)
    async with client:
        assert await client.list_vms() == []
        await asyncio.sleep(0.3)
        assert await client.list_vms() == []  # re-authenticated transparently


async def test_host_inventory(api: HostdComponent) -> None:
    async with HostdClient.from_data_dir(api.data_dir) as client:
        host = await client.host()
    assert host["name"] == "pv-api" and host["accel"] in ("kvm", "tcg") and host["cpus"] >= 1
    assert host["memoryBytes"] > 0 and host["disk"]["capacityBytes"] > 0
    assert host["bundle"]["kernel"]


async def test_specs_are_validated_and_reconfigured_while_off(api: HostdComponent, busybox_image: Path) -> None:
    async with HostdClient.from_data_dir(api.data_dir) as client:
        with pytest.raises(HostdAPIError) as bad:
            await client.create_vm({"id": "Bad_Name"})
        assert bad.value.status == 400
        with pytest.raises(HostdAPIError) as missing:
            await client.create_vm({"id": "vm1", "disks": [{"id": "img0", "kind": "image", "path": "/nonexistent"}]})
        assert missing.value.status == 400 and "does not exist" in missing.value.message
        vm = await client.create_vm({"id": "vm1", "memoryMiB": 192})
        assert vm["power"] == "off" and vm["disks"] == [] and vm["memoryMiB"] == 192
        vm = await client.attach_disk("vm1", {"id": "img0", "kind": "image", "path": str(busybox_image)})
        assert vm["disks"][0]["readOnly"] is True and vm["disks"][0]["sizeBytes"] == size_of(busybox_image)
        vm = await client.attach_nic("vm1", {"id": "eth0", "tap": "pvtest0", "ip": "10.99.0.2/24"})
        assert vm["nics"][0]["mac"].startswith("02:") and vm["nics"][0]["ip"] == "10.99.0.2/24"
        assert (await client.detach_nic("vm1", "eth0"))["nics"] == []
        assert (await client.detach_disk("vm1", "img0"))["disks"] == []
        with pytest.raises(HostdAPIError) as conflict:
            await client.create_vm({"id": "vm1"})
        assert conflict.value.status == 409
        await client.destroy_vm("vm1")
        with pytest.raises(HostdAPIError) as gone:
            await client.get_vm("vm1")
        assert gone.value.status == 404
    assert "POST /vms 201" in (api.root / "requests.log").read_text()


async def test_openapi_document_lists_every_route(api: HostdComponent) -> None:
    doc = _openapi()
    from podvisor.hostd.api import build_app
    from podvisor.hostd.auth import TicketAuthority

    app = build_app(api.runtime, TicketAuthority("x"), host_name="x", request_log=api.root / "x.log")
    routes = {(r.method.lower(), r.resource.canonical) for r in app.router.routes()
              if r.resource is not None and r.method != "HEAD"}
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops if m != "parameters"}
    assert routes == documented


def _openapi() -> dict[str, Any]:
    import yaml

    doc: dict[str, Any] = yaml.safe_load((Path(__file__).resolve().parents[2] / "docs" / "hostd-openapi.yaml").read_text())
    return doc
