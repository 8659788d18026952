"""hostd's HTTP API (docs/hostd-openapi.yaml is the contract), as an aiohttp application.

Resources by id, Firecracker-style: ``/host``, ``/vms``, ``/vms/{id}``, ``/vms/{id}/disks/{disk}``,
``/vms/{id}/nics/{nic}``, ``/vms/{id}/power``, ``/vms/{id}/console``, ``/vms/{id}/agent`` (WebSocket).
``POST /session`` is the only door without a ticket; every other path - existing or not - answers 401
without one, so an unauthenticated caller learns nothing. Errors are ``{"error": {"code", "message"}}``
with the status of the `HostdError` raised. Each request is logged to ``DATA/hostd/requests.log``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from podvisor.hostd.auth import TicketAuthority
from podvisor.hostd.errors import BadRequest, Conflict, HostdError, Unauthorized
from podvisor.hostd.relay import serve_agent_relay
from podvisor.hostd.runtime import QemuRuntime
from podvisor.hostd.spec import DiskSpec, NicSpec, SpecError, VMSpec
from podvisor.hostd.templates import Layout

__all__ = ["build_app", "RUNTIME_KEY"]

log = logging.getLogger("podvisor.hostd.api")
RUNTIME_KEY = web.AppKey("runtime", QemuRuntime)
AUTH_KEY = web.AppKey("auth", TicketAuthority)
NAME_KEY = web.AppKey("host_name", str)
LOG_KEY = web.AppKey("request_log", Path)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(exc: HostdError) -> web.Response:
    headers = {"WWW-Authenticate": 'Bearer realm="podvisor-hostd"'} if exc.status == 401 else None
    return web.json_response(exc.to_json(), status=exc.status, headers=headers)


def _ticket(request: web.Request) -> str:
    auth = request.headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return request.headers.get("X-Podvisor-Ticket", "").strip()


def _log_request(request: web.Request, status: int, started: float) -> None:
    line = (f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {request.remote} {request.method} "
            f"{request.path_qs} {status} {(time.monotonic() - started) * 1000:.1f}ms\n")
    path = request.app[LOG_KEY]
    try:
        if path.exists() and path.stat().st_size > 8 << 20:
            path.replace(path.with_suffix(".log.1"))
        with path.open("a") as f:
            f.write(line)
    except OSError:
        pass
    log.debug(line.rstrip())


@web.middleware
async def _middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.monotonic()
    status = 500
    try:
        if not (request.path == "/session" and request.method == "POST"):
            if not request.app[AUTH_KEY].check(_ticket(request)):
                raise Unauthorized("a valid session ticket is required (POST /session with the host secret)")
        response = await handler(request)
        status = response.status
        return response
    except HostdError as exc:
        status = exc.status
        return _error(exc)
    except web.HTTPException as exc:
        status = exc.status
        raise
    except Exception as exc:
        log.exception("hostd: %s %s failed", request.method, request.path)
        status = 500
        return _error(HostdError(f"internal error: {exc}"))
    finally:
        _log_request(request, status, started)


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def _rt(request: web.Request) -> QemuRuntime:
    return request.app[RUNTIME_KEY]


async def login(request: web.Request) -> web.Response:
    body = await _body(request)
    secret = body.get("secret")
    ttl = body.get("ttlSeconds")
    if not isinstance(secret, str):
        raise Unauthorized("a valid session ticket is required (POST /session with the host secret)")
    granted = request.app[AUTH_KEY].login(secret, ttl=float(ttl) if isinstance(ttl, (int, float)) else None)
    if granted is None:
        raise Unauthorized("a valid session ticket is required (POST /session with the host secret)")
    ticket, expires = granted
    return web.json_response({"ticket": ticket, "expiresAt": expires, "ttlSeconds": round(expires - time.time())},
                             status=201)


async def logout(request: web.Request) -> web.Response:
    request.app[AUTH_KEY].logout(_ticket(request))
    return web.Response(status=204)


async def host(request: web.Request) -> web.Response:
    return web.json_response(await _rt(request).host_info(request.app[NAME_KEY]))


async def list_vms(request: web.Request) -> web.Response:
    return web.json_response({"items": _rt(request).list_vms()})


async def create_vm(request: web.Request) -> web.Response:
    body = await _body(request)
    power_on = body.pop("powerOn", False)
    start_mode = body.pop("startMode", "auto")
    try:
        spec = VMSpec.from_json(body)
    except SpecError as exc:
        raise BadRequest(str(exc)) from exc
    rt = _rt(request)
    info = await rt.create_vm(spec)
    if power_on is True:
        info = await rt.power_on(spec.id, start_mode=str(start_mode))
    return web.json_response(info, status=201)


async def get_vm(request: web.Request) -> web.Response:
    return web.json_response(_rt(request).inspect(request.match_info["id"]))


async def destroy_vm(request: web.Request) -> web.Response:
    await _rt(request).destroy(request.match_info["id"])
    return web.Response(status=204)


async def power(request: web.Request) -> web.Response:
    body = await _body(request)
    state = body.get("state")
    vm_id = request.match_info["id"]
    if state == "on":
        return web.json_response(await _rt(request).power_on(vm_id, start_mode=str(body.get("startMode", "auto"))))
    if state == "off":
        timeout = body.get("timeoutSeconds", 10)
        force = body.get("force", False)
        if not isinstance(timeout, (int, float)) or timeout < 0 or not isinstance(force, bool):
            raise BadRequest("timeoutSeconds must be a non-negative number and force a boolean")
        return web.json_response(await _rt(request).power_off(vm_id, timeout_s=float(timeout), force=force))
    raise BadRequest("state must be 'on' or 'off'")


async def put_disk(request: web.Request) -> web.Response:
    body = await _body(request)
    body["id"] = request.match_info["disk"]
    try:
        disk = DiskSpec.from_json(body)
    except SpecError as exc:
        raise BadRequest(str(exc)) from exc
    return web.json_response(await _rt(request).attach_disk(request.match_info["id"], disk))


async def delete_disk(request: web.Request) -> web.Response:
    return web.json_response(await _rt(request).detach_disk(request.match_info["id"], request.match_info["disk"]))


async def put_nic(request: web.Request) -> web.Response:
    body = await _body(request)
    body["id"] = request.match_info["nic"]
    try:
        nic = NicSpec.from_json(body)
    except SpecError as exc:
        raise BadRequest(str(exc)) from exc
    return web.json_response(await _rt(request).attach_nic(request.match_info["id"], nic))


async def delete_nic(request: web.Request) -> web.Response:
    return web.json_response(await _rt(request).detach_nic(request.match_info["id"], request.match_info["nic"]))


async def console(request: web.Request) -> web.Response:
    try:
        limit = int(request.query.get("limit", "65536"))
    except ValueError as exc:
        raise BadRequest("limit must be an integer") from exc
    text = _rt(request).console(request.match_info["id"], limit=max(1, min(limit, 16 << 20)))
    return web.Response(text=text, content_type="text/plain")


async def list_templates(request: web.Request) -> web.Response:
    return web.json_response({"items": _rt(request).list_templates()})


async def build_template(request: web.Request) -> web.Response:
    body = await _body(request)
    try:
        disks = tuple((str(d["kind"]), bool(d.get("readOnly", d["kind"] == "image"))) for d in body.get("disks", []))
        vcpus, memory, nics = int(body.get("vcpus", 1)), int(body.get("memoryMiB", 256)), int(body.get("nics", 0))
    except (KeyError, TypeError, ValueError) as exc:
        raise BadRequest(f"a layout needs vcpus, memoryMiB, disks [{{kind, readOnly}}] and nics: {exc}") from exc
    if not (1 <= vcpus <= 64 and 64 <= memory <= 1 << 20 and 0 <= nics <= 8 and len(disks) <= 16):
        raise BadRequest("layout out of range")
    order = {"image": 0, "runtime": 1, "data": 2, "ephemeral": 3}
    layout = Layout(vcpus, memory, tuple(sorted(disks, key=lambda d: order.get(d[0], 9))), nics, "")
    return web.json_response(await _rt(request).build_template(layout), status=201)


async def agent(request: web.Request) -> web.StreamResponse:
    vm_id = request.match_info["id"]
    client = _rt(request).agent(vm_id)
    if client is None:
        raise Conflict(f"VM {vm_id} has no connected guest agent (is it powered on?)")
    return await serve_agent_relay(request, client)


def build_app(runtime: QemuRuntime, auth: TicketAuthority, *, host_name: str, request_log: Path) -> web.Application:
    app = web.Application(middlewares=[_middleware], client_max_size=1 << 20)
    app[RUNTIME_KEY] = runtime
    app[AUTH_KEY] = auth
    app[NAME_KEY] = host_name
    app[LOG_KEY] = request_log
    r = app.router
    r.add_post("/session", login)
    r.add_delete("/session", logout)
    r.add_get("/host", host)
    r.add_get("/vms", list_vms)
    r.add_post("/vms", create_vm)
    r.add_get("/vms/{id}", get_vm)
    r.add_delete("/vms/{id}", destroy_vm)
    r.add_post("/vms/{id}/power", power)
    r.add_put("/vms/{id}/disks/{disk}", put_disk)
    r.add_delete("/vms/{id}/disks/{disk}", delete_disk)
    r.add_put("/vms/{id}/nics/{nic}", put_nic)
    r.add_delete("/vms/{id}/nics/{nic}", delete_nic)
    r.add_get("/vms/{id}/console", console)
    r.add_get("/vms/{id}/agent", agent)
    r.add_get("/templates", list_templates)
    r.add_post("/templates", build_template)
    return app
