"""Who is asking, and may they: authentication and the authorization seam.

Two ways in, as a kube-apiserver configured with a static token file and a client CA:

- ``Authorization: Bearer <token>`` checked against a token file (CSV lines
  ``token,user,uid,"group1,group2"``, the format of kube's ``--token-auth-file``);
- an X.509 client certificate, verified by the TLS layer against the cluster CA (the server's SSL
  context asks for one but does not require it); CN is the user name, each O a group.

A certificate wins over a token when both are present, as in kube's union authenticator (x509 is
asked first). A token that is present but unknown fails the request with 401 even on public paths: a
client that sends wrong credentials should hear so. Requests with no credentials at all are
anonymous; they may read only `PUBLIC_PATHS` (health and version, what kube's
``system:public-info-viewer`` role grants), everything else answers 401 so kubectl prints "You must
be logged in to the server".

Authorization is a seam only: `Authorizer` is asked once per request with the request's attributes;
`AllowAuthenticated` lets every authenticated user do everything (RBAC comes later).
`access_review_authorizer` hands the same authorizer to the registry, so SelfSubjectAccessReviews
(``kubectl auth can-i``) answer with the decisions requests get.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from podvisor.apiserver.errors import ForbiddenError, UnauthorizedError
from podvisor.apiserver.rest import UserInfo

__all__ = [
    "ANONYMOUS",
    "PUBLIC_PATHS",
    "Attributes",
    "Authenticator",
    "Authorizer",
    "AllowAuthenticated",
    "access_review_authorizer",
    "Decision",
    "forbidden",
    "is_public_path",
    "parse_token_file",
]

AUTHENTICATED_GROUP = "system:authenticated"
ANONYMOUS = UserInfo(name="system:anonymous", groups=("system:unauthenticated",))

# paths an anonymous client may GET (prefix match on a path segment boundary)
PUBLIC_PATHS = ("/livez", "/readyz", "/healthz", "/version")


def is_public_path(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in PUBLIC_PATHS)


def _digest(token: str) -> bytes:
    # tokens are looked up by digest so the table never compares secrets byte by byte
    return hashlib.sha256(token.encode()).digest()


def parse_token_file(text: str, *, source: str = "token file") -> dict[str, UserInfo]:
    """Parse kube's static token file format into token -> user. Blank lines and lines starting with
    ``#`` are skipped; a line with fewer than three columns is an error naming the line."""
    out: dict[str, UserInfo] = {}
    for lineno, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or (len(row) == 1 and not row[0].strip()) or row[0].lstrip().startswith("#"):
            continue
        if len(row) < 3:
            raise ValueError(f"{source}: line {lineno}: want token,user,uid[,\"group1,group2\"]")
        token, user, uid = row[0].strip(), row[1].strip(), row[2].strip()
        if not token or not user:
            raise ValueError(f"{source}: line {lineno}: empty token or user name")
        groups: tuple[str, ...] = ()
        if len(row) > 3 and row[3].strip():
            groups = tuple(g.strip() for g in row[3].split(",") if g.strip())
        out[token] = UserInfo(name=user, groups=groups, uid=uid)
    return out


def _with_authenticated(user: UserInfo) -> UserInfo:
    if AUTHENTICATED_GROUP in user.groups:
        return user
    return UserInfo(name=user.name, groups=(*user.groups, AUTHENTICATED_GROUP), uid=user.uid)


def _user_from_peercert(cert: Mapping[str, Any]) -> UserInfo | None:
    """CN -> user, every O -> a group, from the dict `ssl.SSLSocket.getpeercert()` returns."""
    name = ""
    groups: list[str] = []
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName" and not name:
                name = value
            elif key == "organizationName":
                groups.append(value)
    if not name:
        return None
    return UserInfo(name=name, groups=tuple(groups))


class Authenticator:
    """Turns a request into a `UserInfo`, or raises `UnauthorizedError`.

    ``tokens`` maps bearer tokens to users. ``client_certs`` says whether a verified TLS client
    certificate is trusted as an identity (the TLS layer did the verification against the CA the
    server's SSL context was built with; this class only reads the result)."""

    def __init__(
        self,
        *,
        tokens: Mapping[str, UserInfo] | None = None,
        client_certs: bool = True,
        token_file: Path | None = None,
    ) -> None:
        self._tokens: dict[bytes, UserInfo] = {}
        self._client_certs = client_certs
        self._token_file = token_file
        if tokens:
            self.add_tokens(tokens)
        if token_file is not None:
            self.reload()

    @classmethod
    def from_files(cls, *, token_file: Path | None = None, client_ca: Path | None = None) -> Authenticator:
        """The usual server set-up: a static token file and, when the server has a client CA,
        client certificates. ``client_ca`` only switches certificate authentication on: the CA itself
        is loaded into the SSL context (`make_server_ssl_context`)."""
        return cls(token_file=token_file, client_certs=client_ca is not None)

    def add_tokens(self, tokens: Mapping[str, UserInfo]) -> None:
        for token, user in tokens.items():
            self._tokens[_digest(token)] = user

    def reload(self) -> None:
        """Re-read the token file (tokens added with `add_tokens` are kept)."""
        if self._token_file is None:
            return
        text = self._token_file.read_text(encoding="utf-8")
        self.add_tokens(parse_token_file(text, source=str(self._token_file)))

    def authenticate(self, request: web.BaseRequest) -> UserInfo | None:
        """The user making ``request``; None when it carries no credentials at all (anonymous).
        Raises `UnauthorizedError` for credentials that do not check out."""
        if self._client_certs:
            transport = request.transport
            cert = transport.get_extra_info("peercert") if transport is not None else None
            if cert:
                user = _user_from_peercert(cert)
                if user is not None:
                    return _with_authenticated(user)
        header = request.headers.get("Authorization", "")
        if header:
            scheme, _, value = header.partition(" ")
            token = value.strip()
            if scheme.lower() != "bearer" or not token:
                raise UnauthorizedError("Unauthorized")
            user = self._tokens.get(_digest(token))
            if user is None:
                raise UnauthorizedError("Unauthorized")
            return _with_authenticated(user)
        return None


@dataclass(frozen=True, slots=True)
class Attributes:
    """What a request wants to do, in kube's authorizer vocabulary. ``verb`` is a resource verb
    (get, list, watch, create, update, patch, delete, deletecollection) for resource requests and
    the lower-cased HTTP method for others (paths such as /apis or /openapi/v3)."""

    user: UserInfo
    verb: str
    path: str
    resource_request: bool
    api_group: str = ""
    api_version: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str = ""


class Authorizer(Protocol):
    async def authorize(self, attrs: Attributes) -> Decision: ...


class AllowAuthenticated:
    """Every authenticated user may do everything; anonymous users nothing beyond public paths."""

    async def authorize(self, attrs: Attributes) -> Decision:
        if AUTHENTICATED_GROUP in attrs.user.groups:
            return Decision(True)
        return Decision(False, "anonymous requests are not allowed")


def access_review_authorizer(
    authorizer: Authorizer,
) -> Callable[[UserInfo, dict[str, Any]], Awaitable[tuple[bool, str]]]:
    """The same decisions for (Self)SubjectAccessReviews: adapts ``authorizer`` to the registry's
    ``(user, review spec) -> (allowed, reason)`` seam, so ``kubectl auth can-i`` answers what the
    server would actually do. Pass the result to ``build_registry(..., authorizer=...)``."""

    async def review(user: UserInfo, spec: dict[str, Any]) -> tuple[bool, str]:
        res = spec.get("resourceAttributes")
        non = spec.get("nonResourceAttributes")
        if isinstance(res, dict):
            attrs = Attributes(
                user=user, verb=str(res.get("verb", "")), path="", resource_request=True,
                api_group=str(res.get("group", "")), api_version=str(res.get("version", "")),
                resource=str(res.get("resource", "")), subresource=str(res.get("subresource", "")),
                namespace=str(res.get("namespace", "")), name=str(res.get("name", "")),
            )
        else:
            non = non if isinstance(non, dict) else {}
            attrs = Attributes(user=user, verb=str(non.get("verb", "")), path=str(non.get("path", "")),
                               resource_request=False)
        decision = await authorizer.authorize(attrs)
        return decision.allowed, decision.reason

    return review


def forbidden(attrs: Attributes, reason: str = "") -> ForbiddenError:
    """The 403 with kube's wording: ``pods "p" is forbidden: User "u" cannot get resource "pods" in
    API group "" in the namespace "ns"``."""
    user = attrs.user.name
    if not attrs.resource_request:
        msg = f'forbidden: User "{user}" cannot {attrs.verb} path "{attrs.path}"'
        err_kind = ""
    else:
        qualified = f"{attrs.resource}.{attrs.api_group}" if attrs.api_group else attrs.resource
        what = f'{qualified} "{attrs.name}"' if attrs.name else qualified
        res = f"{attrs.resource}/{attrs.subresource}" if attrs.subresource else attrs.resource
        scope = f'in the namespace "{attrs.namespace}"' if attrs.namespace else "at the cluster scope"
        msg = (
            f'{what} is forbidden: User "{user}" cannot {attrs.verb} resource "{res}" '
            f'in API group "{attrs.api_group}" {scope}'
        )
        err_kind = attrs.resource
    if reason:
        msg += f": {reason}"
    return ForbiddenError(msg, name=attrs.name, group=attrs.api_group, kind=err_kind)
