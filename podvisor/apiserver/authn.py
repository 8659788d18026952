"""Who is asking, and may they: authentication and the authorization seam.

Three ways in, as a kube-apiserver configured with a static token file, a client CA and a
service-account key:

- ``Authorization: Bearer <token>`` checked against a token file (CSV lines
  ``token,user,uid,"group1,group2"``, the format of kube's ``--token-auth-file``);
- ``Authorization: Bearer <jwt>``, a service account token this cluster signed (TokenRequest):
  `ServiceAccountAuthenticator` checks its signature, times and audience, and that the account, and
  the pod or secret it is bound to, still exist with the uids it names. The user is
  ``system:serviceaccount:<ns>:<name>`` in groups ``system:serviceaccounts`` and
  ``system:serviceaccounts:<ns>``;
- an X.509 client certificate, verified by the TLS layer against the cluster CA (the server's SSL
  context asks for one but does not require it); CN is the user name, each O a group.

A certificate wins over a token when both are present, as in kube's union authenticator (x509 is
asked first). A token that is present but unknown fails the request with 401 even on public paths: a
client that sends wrong credentials should hear so. Requests with no credentials at all are
anonymous; they may read only `PUBLIC_PATHS` (health and version, what kube's
``system:public-info-viewer`` role grants), everything else answers 401 so kubectl prints "You must
be logged in to the server".

Authentication is synchronous (the HTTP layer asks once per request, before anything else), so the
existence checks read local maps kept current by watches on the registry, as kube's validator reads
informer caches: `Authenticator.start` lists and watches ServiceAccounts, Pods and Secrets, and
returns once the first lists are in; `Authenticator.stop` ends the watches.

Authorization is a seam only: `Authorizer` is asked once per request with the request's attributes;
`AllowAuthenticated` lets every authenticated user do everything (RBAC comes later).
`access_review_authorizer` hands the same authorizer to the registry, so SelfSubjectAccessReviews
(``kubectl auth can-i``) answer with the decisions requests get.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import hashlib
import io
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from podvisor.apiserver.errors import ForbiddenError, GoneError, UnauthorizedError
from podvisor.apiserver.meta import parse_time
from podvisor.apiserver.rest import ListOptions, ResourceStore, UserInfo
from podvisor.apiserver.strategies.sa_tokens import (
    DEFAULT_AUDIENCES,
    DEFAULT_ISSUER,
    LEEWAY_SECONDS,
    SERVICE_ACCOUNTS_GROUP,
    InvalidToken,
    ObjectRef,
    TokenClaims,
    TokenVerifier,
    load_public_keys,
)

__all__ = [
    "ANONYMOUS",
    "PUBLIC_PATHS",
    "Attributes",
    "Authenticator",
    "ServiceAccountAuthenticator",
    "StoreLookup",
    "Authorizer",
    "AllowAuthenticated",
    "access_review_authorizer",
    "Decision",
    "forbidden",
    "is_public_path",
    "parse_token_file",
]

log = logging.getLogger("podvisor.apiserver.authn")

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
        service_accounts: ServiceAccountAuthenticator | None = None,
    ) -> None:
        self._tokens: dict[bytes, UserInfo] = {}
        self._client_certs = client_certs
        self._token_file = token_file
        self.service_accounts = service_accounts
        if tokens:
            self.add_tokens(tokens)
        if token_file is not None:
            self.reload()

    @classmethod
    def from_files(
        cls,
        *,
        token_file: Path | None = None,
        client_ca: Path | None = None,
        service_account_key_files: Sequence[Path] = (),
        registry: StoreLookup | None = None,
        service_account_issuer: str = DEFAULT_ISSUER,
        api_audiences: Sequence[str] = DEFAULT_AUDIENCES,
    ) -> Authenticator:
        """The usual server set-up: a static token file and, when the server has a client CA,
        client certificates. ``client_ca`` only switches certificate authentication on: the CA itself
        is loaded into the SSL context (`make_server_ssl_context`). With ``service_account_key_files``
        (public keys, kube's ``--service-account-key-file``) and the ``registry`` to check accounts
        against, service account tokens from ``service_account_issuer`` for ``api_audiences`` are
        accepted too; call `start` before serving."""
        service_accounts = None
        if service_account_key_files:
            if registry is None:
                raise ValueError("service account tokens need the registry: accounts are checked against it")
            verifier = TokenVerifier(load_public_keys(service_account_key_files), issuers=(service_account_issuer,),
                                     audiences=api_audiences)
            service_accounts = ServiceAccountAuthenticator(verifier, registry)
        return cls(token_file=token_file, client_certs=client_ca is not None, service_accounts=service_accounts)

    async def start(self) -> None:
        """Start what token checks need (the service-account watches); returns once they are synced."""
        if self.service_accounts is not None:
            await self.service_accounts.start()

    async def stop(self) -> None:
        if self.service_accounts is not None:
            await self.service_accounts.stop()

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
            if user is None and self.service_accounts is not None:
                user = self.service_accounts.authenticate_token(token)
            if user is None:
                raise UnauthorizedError("Unauthorized")
            return _with_authenticated(user)
        return None


_INITIAL_EVENTS_END = "k8s.io/initial-events-end"


class StoreLookup(Protocol):
    """The part of `podvisor.apiserver.rest.Registry` token checks use."""

    def lookup(self, group: str, version: str, plural: str) -> ResourceStore | None: ...


class _Presence:
    """(namespace, name) -> (uid, deletion time) of every object of one resource, kept current by a
    watch through the registry: a relist replaces the map only once its initial events are all in,
    so lookups never see a half-filled one."""

    def __init__(self, store: ResourceStore, *, retry_delay: float) -> None:
        self.store = store
        self.objects: dict[tuple[str, str], tuple[str, float | None]] = {}
        self.synced = asyncio.Event()
        self._retry_delay = retry_delay

    def get(self, namespace: str, name: str) -> tuple[str, float | None] | None:
        return self.objects.get((namespace, name))

    @staticmethod
    def _entry(meta: dict[str, Any]) -> tuple[str, float | None]:
        deleted = parse_time(meta.get("deletionTimestamp"))
        return str(meta.get("uid") or ""), deleted.timestamp() if deleted is not None else None

    async def run(self) -> None:
        rv = ""
        while True:
            fresh: dict[tuple[str, str], tuple[str, float | None]] | None = None if rv else {}
            opts = (ListOptions(resource_version=rv, allow_bookmarks=True) if rv
                    else ListOptions(send_initial_events=True, allow_bookmarks=True))
            try:
                async for ev in self.store.watch("", opts):
                    typ = ev.get("type")
                    m = (ev.get("object") or {}).get("metadata") or {}
                    if typ == "BOOKMARK":
                        if fresh is not None and (m.get("annotations") or {}).get(_INITIAL_EVENTS_END) == "true":
                            self.objects, fresh = fresh, None
                            self.synced.set()
                        if fresh is None:
                            rv = str(m.get("resourceVersion") or rv)
                        continue
                    target = fresh if fresh is not None else self.objects
                    key = (str(m.get("namespace") or ""), str(m.get("name") or ""))
                    if typ == "DELETED":
                        target.pop(key, None)
                    elif typ in ("ADDED", "MODIFIED"):
                        target[key] = self._entry(m)
                    if fresh is None:
                        rv = str(m.get("resourceVersion") or rv)
            except GoneError:
                rv = ""
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # storage trouble: keep what we know, try again
                log.info("watching %s for token checks: %s; retrying", self.store.resource.plural, exc)
            if fresh is not None:
                rv = ""  # the initial list broke off: list again
            await asyncio.sleep(self._retry_delay)


class ServiceAccountAuthenticator:
    """Accepts the service account tokens ``verifier`` verifies, as long as the account (and the pod
    or secret the token is bound to) still exists with the uid the token names; a deletion counts
    once it is older than the leeway, as in kube."""

    def __init__(self, verifier: TokenVerifier, registry: StoreLookup, *, clock: Callable[[], float] = time.time,
                 retry_delay: float = 1.0) -> None:
        self.verifier = verifier
        self.clock = clock
        self._presence: dict[str, _Presence] = {}
        for plural in ("serviceaccounts", "pods", "secrets"):
            store = registry.lookup("", "v1", plural)
            if store is not None:
                self._presence[plural] = _Presence(store, retry_delay=retry_delay)
        if "serviceaccounts" not in self._presence:
            raise ValueError("the registry does not serve serviceaccounts")
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def synced(self) -> bool:
        return all(p.synced.is_set() for p in self._presence.values())

    async def start(self) -> None:
        if not self._tasks:
            self._tasks = [asyncio.create_task(p.run(), name=f"token-authn-{plural}")
                           for plural, p in self._presence.items()]
        await asyncio.gather(*(p.synced.wait() for p in self._presence.values()))

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t

    def authenticate_token(self, token: str) -> UserInfo | None:
        """The account ``token`` authenticates; None when it is not a service account token of ours.
        Raises `UnauthorizedError` for one of ours that does not (the reason goes to the log)."""
        now = self.clock()
        try:
            claims = self.verifier.verify(token, now=now)
            if claims is None:
                return None
            self._check_live(claims, now)
        except InvalidToken as exc:
            log.info("service account token refused: %s", exc)
            raise UnauthorizedError("Unauthorized") from None
        ns = claims.namespace
        return UserInfo(name=claims.username, uid=claims.service_account.uid,
                        groups=(SERVICE_ACCOUNTS_GROUP, f"{SERVICE_ACCOUNTS_GROUP}:{ns}", AUTHENTICATED_GROUP))

    def _check_live(self, claims: TokenClaims, now: float) -> None:
        if not self.synced:
            raise InvalidToken("service accounts are not known yet (the API server is starting)")
        deleted_before = now - LEEWAY_SECONDS
        ns, sa = claims.namespace, claims.service_account
        found = self._presence["serviceaccounts"].get(ns, sa.name)
        if found is None or (found[1] is not None and found[1] < deleted_before):
            raise InvalidToken(f"service account {ns}/{sa.name} has been deleted")
        if found[0] != sa.uid:
            raise InvalidToken(f"service account UID ({found[0]}) does not match claim ({sa.uid})")
        bound: list[tuple[str, ObjectRef]] = []
        if claims.secret is not None:
            bound.append(("secrets", claims.secret))
        if claims.pod is not None:
            bound.append(("pods", claims.pod))
        for plural, ref in bound:
            presence = self._presence.get(plural)
            obj = presence.get(ns, ref.name) if presence is not None else None
            if obj is None or (obj[1] is not None and obj[1] < deleted_before):
                raise InvalidToken(f"service account token has been invalidated: bound {plural} {ns}/{ref.name} is gone")
            if obj[0] != ref.uid:
                raise InvalidToken(f"{plural} UID ({obj[0]}) does not match service account token claim ({ref.uid})")


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
