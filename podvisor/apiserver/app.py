"""The aiohttp Application of the API server: one dispatcher and the error boundary.

Why one catch-all route instead of aiohttp's router: Kubernetes URLs are parsed by position
(``/apis/<group>/<version>/namespaces/<ns>/<resource>/<name>/<sub>``, with the legacy ``/watch/``
prefix and namespace subresources as exceptions), and every miss must still be a ``Status`` with kube's
wording. `dispatch` authenticates, splits the path into a `RequestInfo`, then hands resource requests
to `RESTHandler` and everything else (discovery, OpenAPI, health, version) to its owner.

The error middleware is the only place errors become responses: `APIError` renders its Status,
aiohttp's own HTTP errors are mapped to Statuses, and anything else is logged with its traceback and
answered as a 500 InternalError whose body carries no traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from podvisor.apiserver.authn import (
    ANONYMOUS,
    AllowAuthenticated,
    Authenticator,
    Authorizer,
    forbidden,
    is_public_path,
)
from podvisor.apiserver.discovery import Discovery
from podvisor.apiserver.errors import (
    APIError,
    BadRequestError,
    InternalError,
    MethodNotAllowedError,
    NotFoundError,
    RequestEntityTooLargeError,
    ServiceUnavailableError,
    UnauthorizedError,
)
from podvisor.apiserver.handlers import (
    METHOD_NOT_ALLOWED_MESSAGE,
    NOT_FOUND_MESSAGE,
    RESTHandler,
    StreamingBackend,
    parse_request_info,
    render_error,
)
from podvisor.apiserver.health import HealthChecks
from podvisor.apiserver.negotiation import MAX_BODY
from podvisor.apiserver.rest import Registry, UserInfo
from podvisor.apiserver.watchstream import WatchHub
from podvisor.storage.interface import UnavailableError

__all__ = ["APIApp", "API_KEY", "build_app", "AccessLogger", "error_middleware"]

log = logging.getLogger("podvisor.apiserver")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except APIError as err:
        return render_error(err)
    except web.HTTPRedirection:
        raise
    except web.HTTPException as exc:
        return render_error(_from_http_exception(exc))
    except UnavailableError as exc:
        log.warning("storage unavailable during %s %s: %s", request.method, request.path, exc)
        return render_error(ServiceUnavailableError("storage is unavailable, try again later", retry_after=1))
    except ConnectionResetError:
        raise  # the client went away; nothing to answer
    except Exception:
        log.exception("internal error serving %s %s", request.method, request.path)
        return render_error(InternalError("Internal error occurred: unexpected server error"))


def _from_http_exception(exc: web.HTTPException) -> APIError:
    """aiohttp's own HTTP errors (no route, body too large, ...) as Statuses."""
    if exc.status == 404:
        return NotFoundError(NOT_FOUND_MESSAGE)
    if exc.status == 405:
        return MethodNotAllowedError(METHOD_NOT_ALLOWED_MESSAGE)
    if exc.status == 413:
        return RequestEntityTooLargeError(f"Request entity too large: limit is {MAX_BODY}")
    if exc.status < 500:
        return BadRequestError(exc.text or exc.reason or "bad request")
    return InternalError(f"Internal error occurred: {exc.reason}")


class AccessLogger(AbstractAccessLogger):
    """One DEBUG line per request (method, path, status, duration, user agent): quiet by default,
    there when asked for with ``-v``."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.debug(
            '%s %s %s %d %.1fms "%s"',
            request.remote,
            request.method,
            request.path_qs,
            response.status,
            time * 1000,
            request.headers.get("User-Agent", ""),
        )

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.DEBUG)


@dataclass(slots=True)
class APIApp:
    """Everything one server's requests need; stored on the aiohttp app under `API_KEY`."""

    registry: Registry
    authenticator: Authenticator
    authorizer: Authorizer
    health: HealthChecks
    hub: WatchHub
    discovery: Discovery
    rest: RESTHandler

    def set_streaming_backend(self, backend: StreamingBackend | None) -> None:
        self.rest.streaming = backend

    def _user(self, request: web.Request, path: str) -> UserInfo:
        user = self.authenticator.authenticate(request)
        if user is not None:
            return user
        if is_public_path(path):
            return ANONYMOUS
        raise UnauthorizedError("Unauthorized")

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        user = self._user(request, path)
        info = parse_request_info(request.method, path, request.query)
        if info.resource_request:
            return await self.rest.handle(request, info, user)

        parts = [p for p in path.split("/") if p]
        head = parts[0] if parts else ""
        if head in ("livez", "readyz", "healthz"):
            if request.method not in ("GET", "HEAD"):
                raise MethodNotAllowedError(METHOD_NOT_ALLOWED_MESSAGE)
            return await self.health.handle(request)
        attrs = info.attributes(user)
        if head != "version":
            decision = await self.authorizer.authorize(attrs)
            if not decision.allowed:
                raise forbidden(attrs, decision.reason)
        if request.method not in ("GET", "HEAD"):
            raise MethodNotAllowedError(METHOD_NOT_ALLOWED_MESSAGE)
        d = self.discovery
        n = len(parts)
        if n == 0:
            return await d.root(request)
        if head == "version" and n == 1:
            return await d.version(request)
        if head == "api":
            if n == 1:
                return await d.api(request)
            if n == 2:
                return await d.resource_list(request, "", parts[1])
        if head == "apis":
            if n == 1:
                return await d.apis(request)
            if n == 2:
                return await d.api_group(request, parts[1])
            if n == 3:
                return await d.resource_list(request, parts[1], parts[2])
        if head == "openapi" and n >= 2 and parts[1] == "v2" and n == 2:
            return await d.openapi_v2(request)
        if head == "openapi" and n >= 2 and parts[1] == "v3":
            if n == 2:
                return await d.openapi_v3_index(request)
            return await d.openapi_v3(request, "/".join(parts[2:]))
        raise NotFoundError(NOT_FOUND_MESSAGE)


API_KEY = web.AppKey("podvisor_api", APIApp)


def build_app(
    registry: Registry,
    *,
    authenticator: Authenticator,
    authorizer: Authorizer | None = None,
    health: HealthChecks | None = None,
    hub: WatchHub | None = None,
    streaming: StreamingBackend | None = None,
) -> web.Application:
    """The Application serving ``registry``. Its shutdown signal ends every open watch."""
    authorizer = authorizer or AllowAuthenticated()
    hub = hub or WatchHub()
    api = APIApp(
        registry=registry,
        authenticator=authenticator,
        authorizer=authorizer,
        health=health or HealthChecks(),
        hub=hub,
        discovery=Discovery(registry),
        rest=RESTHandler(registry, authorizer=authorizer, hub=hub, streaming=streaming),
    )
    # the body limit is enforced by `negotiation.read_body` with kube's 413; aiohttp's own stays out of the way
    app = web.Application(middlewares=[error_middleware], client_max_size=MAX_BODY + (1 << 20))
    app[API_KEY] = api
    app.router.add_route("*", "/{tail:.*}", api.dispatch)

    async def on_shutdown(_: web.Application) -> None:
        api.health.start_shutdown()
        await hub.aclose()

    app.on_shutdown.append(on_shutdown)
    return app
