"""The registry's token service: Docker's token protocol (``GET /token``) on loopback.

A registry client that got ``401`` with ``WWW-Authenticate: Bearer realm=...,service=...,scope=...``
asks here with its credentials; we authenticate them (`identity`), grant each requested scope what the
policy allows (`policy`), and answer a short-lived JWT signed by our key (`keys`). Anonymous requests
and wrong credentials get ``401`` (no anonymous access to any project). Granting less than asked is
not an error: the registry itself then answers ``401 insufficient_scope``, which is what clients expect.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import secrets
import time
from typing import Any

from aiohttp import web

from podvisor.registry.identity import TokenFileAuthenticator
from podvisor.registry.keys import SigningKey
from podvisor.registry.policy import Authorizer, parse_scopes

__all__ = ["TokenService", "SERVICE_NAME", "ISSUER"]

SERVICE_NAME = "podvisor-registry"
ISSUER = "podvisor-token-service"
log = logging.getLogger(__name__)


class TokenService:
    """The aiohttp application answering ``GET /token``; where it listens is the caller's choice."""

    def __init__(self, *, key: SigningKey, authenticator: TokenFileAuthenticator, authorizer: Authorizer,
                 service: str = SERVICE_NAME, issuer: str = ISSUER, ttl: int = 300) -> None:
        self.key, self.authenticator, self.authorizer = key, authenticator, authorizer
        self.service, self.issuer, self.ttl = service, issuer, ttl

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/token", self.handle_token)
        app.router.add_post("/token", self.handle_oauth)
        return app

    async def handle_token(self, request: web.Request) -> web.Response:
        return await self._answer(request, request.query.getall("scope", []), request.headers.get("Authorization"))

    async def handle_oauth(self, request: web.Request) -> web.Response:
        # The OAuth2 form some clients try first (grant_type=password / refresh_token); same rules.
        form = await request.post()
        scopes = [str(v) for v in form.getall("scope", [])]
        header = request.headers.get("Authorization")
        password, refresh = _field(form, "password"), _field(form, "refresh_token")
        if header is None and password:
            raw = f"{_field(form, 'username')}:{password}".encode()
            header = "Basic " + base64.b64encode(raw).decode()
        elif header is None and refresh:
            header = f"Bearer {refresh}"
        return await self._answer(request, scopes, header)

    async def _answer(self, request: web.Request, scope_values: list[str], header: str | None) -> web.Response:
        identity = self.authenticator.authenticate(header)
        if identity is None:
            return web.json_response(
                {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}, status=401,
                headers={"WWW-Authenticate": f'Basic realm="{self.service}"'})
        access: list[dict[str, Any]] = []
        for scope in parse_scopes(scope_values):
            granted = await self.authorizer.allowed(identity, scope)
            if "*" in scope.actions and identity.is_admin:
                granted = {"*"}
            access.append({"type": scope.type, "name": scope.name,
                           "actions": sorted(a for a in scope.actions if a in granted)})
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": identity.user, "aud": self.service, "exp": now + self.ttl,
                  "nbf": now - 5, "iat": now, "jti": secrets.token_hex(12), "access": access}
        token = self.key.sign_jwt(claims)
        log.debug("token for %s: %s", identity.user, access)
        issued = dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return web.json_response({"token": token, "access_token": token, "expires_in": self.ttl,
                                  "issued_at": issued})


def _field(form: Any, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""
