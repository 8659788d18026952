"""One registry endpoint spoken to over the OCI distribution API (Docker registry v2), pull and push.

Authentication is lazy and per scope, as registries expect: a request goes out with whatever
authorization we hold for its scope; a ``401`` names the scheme. For ``Bearer`` we fetch a token
for ``repository:<name>:<actions>`` at the realm (with the keychain's credentials, or anonymously) and
retry once; for ``Basic`` we send the credentials. Uploads learn the challenge first (``GET /v2/``),
so a request body is never streamed twice. Every byte read is checked by the caller against its
digest; this module only moves bytes and maps HTTP failures to `ImagePullError` subclasses.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urljoin

import aiohttp

from podvisor.images.auth import Challenge, Credential, parse_challenges
from podvisor.images.errors import (
    DigestMismatchError,
    ImagePullError,
    ManifestUnknownError,
    RegistryUnauthorizedError,
)
from podvisor.images.manifest import MANIFEST_ACCEPT
from podvisor.images.mirrors import Endpoint

__all__ = ["RegistryClient", "BytesProgress", "USER_AGENT"]

USER_AGENT = "podvisor/0.1"
BytesProgress = Callable[[int], None]
_CHUNK = 1 << 20


class RegistryClient:
    """Talks to one endpoint; ``repository`` arguments are upstream names (the endpoint prefix is added)."""

    def __init__(self, session: aiohttp.ClientSession, endpoint: Endpoint, *, credential: Credential | None = None,
                 timeout: float = 300.0) -> None:
        self.session, self.endpoint, self.credential = session, endpoint, credential
        self._tokens: dict[str, str] = {}
        self._challenge: Challenge | None = None
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=timeout)
        self._ssl = not endpoint.skip_verify

    # --- pull -----------------------------------------------------------------------------------
    async def get_manifest(self, repository: str, reference: str) -> tuple[bytes, str, str]:
        """(body, media type, Docker-Content-Digest or "") of a manifest or index."""
        url = self._url(repository, f"manifests/{reference}")
        async with self._request("GET", url, repository, "pull", headers={"Accept": MANIFEST_ACCEPT}) as resp:
            await self._raise_for(resp, what=f"manifest {repository}:{reference}")
            body = await resp.read()
            return body, resp.headers.get("Content-Type", ""), resp.headers.get("Docker-Content-Digest", "")

    async def head_manifest(self, repository: str, reference: str) -> str:
        """The digest a tag points at now (one cheap request), or "" if the registry does not say."""
        url = self._url(repository, f"manifests/{reference}")
        async with self._request("HEAD", url, repository, "pull", headers={"Accept": MANIFEST_ACCEPT}) as resp:
            await self._raise_for(resp, what=f"manifest {repository}:{reference}")
            return resp.headers.get("Docker-Content-Digest", "")

    async def fetch_blob(self, repository: str, digest: str, size: int, dest: Path, *,
                         progress: BytesProgress | None = None) -> None:
        """Stream a blob into ``dest`` (fsynced); `DigestMismatchError` if its bytes do not hash to
        ``digest`` or its length is not ``size`` (``dest`` is then removed)."""
        algo, _, want = digest.partition(":")
        hasher = hashlib.new(algo if algo in ("sha256", "sha512") else "sha256")
        url = self._url(repository, f"blobs/{digest}")
        got = 0
        try:
            async with self._request("GET", url, repository, "pull") as resp:
                await self._raise_for(resp, what=f"blob {digest}")
                fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                try:
                    async for chunk in resp.content.iter_chunked(_CHUNK):
                        got += len(chunk)
                        if size >= 0 and got > size:
                            raise DigestMismatchError(f"blob {digest}: longer than the {size} bytes announced")
                        hasher.update(chunk)
                        _write_all(fd, chunk)
                        if progress is not None:
                            progress(len(chunk))
                    os.fsync(fd)
                finally:
                    os.close(fd)
            if size >= 0 and got != size:
                raise DigestMismatchError(f"blob {digest}: got {got} bytes, expected {size}")
            if hasher.hexdigest() != want:
                raise DigestMismatchError(f"blob {digest}: content hashes to {algo}:{hasher.hexdigest()}")
        except BaseException:
            _unlink(dest)
            raise

    # --- push -----------------------------------------------------------------------------------
    async def blob_exists(self, repository: str, digest: str) -> bool:
        async with self._request("HEAD", self._url(repository, f"blobs/{digest}"), repository, "pull,push") as resp:
            if resp.status == 404:
                return False
            await self._raise_for(resp, what=f"blob {digest}")
            return True

    async def mount_blob(self, repository: str, digest: str, from_repository: str) -> bool:
        """Cross-repository mount; True if the registry linked the blob (201), False if it wants an upload."""
        query = urlencode({"mount": digest, "from": self.endpoint.repository(from_repository)})
        url = self._url(repository, "blobs/uploads/") + "?" + query
        extra = f"repository:{self.endpoint.repository(from_repository)}:pull"
        async with self._request("POST", url, repository, "pull,push", extra_scope=extra) as resp:
            if resp.status == 201:
                return True
            if resp.status in (401, 403, 404):
                return False     # no right to read the source (or it is gone): upload instead
            await self._raise_for(resp, what=f"mount {digest}")
            return False

    async def upload_blob(self, repository: str, digest: str, path: Path, *, chunk_size: int = 16 << 20,
                          progress: BytesProgress | None = None) -> None:
        """Upload a blob from a file: one monolithic PUT when it fits ``chunk_size``, else PATCH chunks."""
        await self._prepare(repository, "pull,push")
        size = _size(path)
        async with self._request("POST", self._url(repository, "blobs/uploads/"), repository, "pull,push") as resp:
            if resp.status != 202:
                await self._raise_for(resp, what=f"upload {digest}")
            location = self._location(resp)
        if size > chunk_size:
            offset = 0
            with open(path, "rb") as f:  # noqa: ASYNC230 - local disk reads between network round trips
                while offset < size:
                    data = f.read(chunk_size)
                    headers = {"Content-Type": "application/octet-stream",
                               "Content-Range": f"{offset}-{offset + len(data) - 1}", "Content-Length": str(len(data))}
                    async with self._request("PATCH", location, repository, "pull,push", data=data,
                                             headers=headers) as resp:
                        if resp.status != 202:
                            await self._raise_for(resp, what=f"upload chunk of {digest}")
                        location = self._location(resp)
                    offset += len(data)
                    if progress is not None:
                        progress(len(data))
            body: Any = b""
        else:
            body = _read(path)
        sep = "&" if "?" in location else "?"
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(len(body))}
        async with self._request("PUT", f"{location}{sep}{urlencode({'digest': digest})}", repository, "pull,push",
                                 data=body, headers=headers) as resp:
            if resp.status != 201:
                await self._raise_for(resp, what=f"upload {digest}")
        if progress is not None and size <= chunk_size:
            progress(size)

    async def put_manifest(self, repository: str, reference: str, body: bytes, media_type: str) -> str:
        url = self._url(repository, f"manifests/{reference}")
        async with self._request("PUT", url, repository, "pull,push", data=body,
                                 headers={"Content-Type": media_type}) as resp:
            if resp.status not in (200, 201):
                await self._raise_for(resp, what=f"manifest {repository}:{reference}")
            return resp.headers.get("Docker-Content-Digest", "")

    # --- plumbing -------------------------------------------------------------------------------
    def _url(self, repository: str, rest: str) -> str:
        return f"{self.endpoint.base}/v2/{self.endpoint.repository(repository)}/{rest}"

    def _location(self, resp: aiohttp.ClientResponse) -> str:
        loc = resp.headers.get("Location", "")
        if not loc:
            raise ImagePullError(f"{self.endpoint.base}: upload started without a Location")
        return urljoin(str(resp.url), loc)

    def _scope(self, repository: str, actions: str) -> str:
        return f"repository:{self.endpoint.repository(repository)}:{actions}"

    async def _prepare(self, repository: str, actions: str) -> None:
        """Learn the auth scheme (and get a token) before a request whose body can't be re-sent."""
        if self._challenge is None:
            try:
                async with self.session.get(f"{self.endpoint.base}/v2/", timeout=self._timeout, ssl=self._ssl) as r:
                    if r.status == 401:
                        self._challenge = _pick(parse_challenges(r.headers.get("WWW-Authenticate", "")))
            except aiohttp.ClientError as exc:
                raise ImagePullError(f"registry {self.endpoint.base} unreachable: {exc}") from None
        scope = self._scope(repository, actions)
        if self._challenge is not None and self._challenge.scheme == "bearer" and scope not in self._tokens:
            self._tokens[scope] = await self._fetch_token(self._challenge, scope)

    def _auth_header(self, scope: str) -> str | None:
        if self._challenge is None:
            return None
        if self._challenge.scheme == "basic":
            return self.credential.basic_header() if self.credential else None
        token = self._tokens.get(scope)
        return f"Bearer {token}" if token else None

    @contextlib.asynccontextmanager
    async def _request(self, method: str, url: str, repository: str, actions: str, *, data: Any = None,
                       headers: dict[str, str] | None = None,
                       extra_scope: str = "") -> AsyncIterator[aiohttp.ClientResponse]:
        scope = self._scope(repository, actions) + (f" {extra_scope}" if extra_scope else "")
        hdrs = {"User-Agent": USER_AGENT, **(headers or {})}
        for attempt in (0, 1):
            auth = self._auth_header(scope)
            if auth:
                hdrs["Authorization"] = auth
            try:
                resp = await self.session.request(method, url, data=data, headers=hdrs, timeout=self._timeout,
                                                  ssl=self._ssl, allow_redirects=True)
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise ImagePullError(f"registry {self.endpoint.base} unreachable: {exc or type(exc).__name__}") from None
            if resp.status == 401 and attempt == 0:
                challenge = _pick(parse_challenges(resp.headers.get("WWW-Authenticate", "")))
                resp.release()
                if challenge is None:
                    raise RegistryUnauthorizedError(f"{self.endpoint.base}: 401 without a usable challenge")
                self._challenge = challenge
                if challenge.scheme == "bearer":
                    self._tokens[scope] = await self._fetch_token(challenge, scope)
                elif self.credential is None:
                    raise RegistryUnauthorizedError(f"{self.endpoint.host}: authentication required "
                                                    "(no credentials for this registry)")
                continue
            try:
                yield resp
            finally:
                resp.release()
            return

    async def _fetch_token(self, challenge: Challenge, scope: str) -> str:
        realm = challenge.realm
        if not realm:
            raise RegistryUnauthorizedError(f"{self.endpoint.base}: bearer challenge without a realm")
        cred = self.credential
        if cred is not None and cred.registry_token:
            return cred.registry_token
        params: list[tuple[str, str]] = []
        if challenge.params.get("service"):
            params.append(("service", challenge.params["service"]))
        for s in scope.split():
            params.append(("scope", s))
        headers = {"User-Agent": USER_AGENT}
        try:
            if cred is not None and cred.identity_token:
                form = {"grant_type": "refresh_token", "refresh_token": cred.identity_token, "client_id": "podvisor",
                        "service": challenge.params.get("service", ""), "scope": scope}
                req = self.session.post(realm, data=form, headers=headers, timeout=self._timeout, ssl=self._ssl)
            else:
                if cred is not None and (cred.username or cred.password):
                    headers["Authorization"] = cred.basic_header()
                    params.append(("account", cred.username))
                req = self.session.get(realm + ("&" if "?" in realm else "?") + urlencode(params), headers=headers,
                                       timeout=self._timeout, ssl=self._ssl)
            async with req as resp:
                if resp.status in (401, 403):
                    who = f"user {cred.username!r}" if cred and cred.username else "anonymous access"
                    raise RegistryUnauthorizedError(f"{self.endpoint.host}: token service refused {who} "
                                                    f"for {scope} ({resp.status})")
                if resp.status != 200:
                    raise ImagePullError(f"{self.endpoint.host}: token service answered {resp.status}")
                body = await resp.json(content_type=None)
        except aiohttp.ClientError as exc:
            raise ImagePullError(f"token service {realm} unreachable: {exc}") from None
        token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
        if not token:
            raise ImagePullError(f"{self.endpoint.host}: token service answered no token")
        return str(token)

    async def _raise_for(self, resp: aiohttp.ClientResponse, *, what: str) -> None:
        if resp.status < 300:
            return
        detail = ""
        with contextlib.suppress(Exception):
            body = json.loads(await resp.read())
            detail = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in body.get("errors") or ())
        msg = f"{self.endpoint.host}: {what}: HTTP {resp.status}" + (f" ({detail})" if detail else "")
        if resp.status in (401, 403):
            raise RegistryUnauthorizedError(msg)
        if resp.status == 404:
            raise ManifestUnknownError(msg)
        raise ImagePullError(msg)


def _pick(challenges: list[Challenge]) -> Challenge | None:
    for scheme in ("bearer", "basic"):
        for c in challenges:
            if c.scheme == scheme:
                return c
    return None


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _size(path: Path) -> int:
    return os.stat(path).st_size


def _read(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]

