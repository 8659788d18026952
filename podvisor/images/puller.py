"""Resolve a reference to one linux/amd64 image manifest and bring its blobs into the store.

Endpoints come from the mirror configuration and are tried in order, as containerd does: a mirror
that does not have the image (or refuses us) hands over to the next. Everything read is checked
against its digest before it is stored: a manifest asked for by digest must hash to it; a manifest
asked for by tag must hash to what the registry says (``Docker-Content-Digest``); every blob must hash
to its descriptor. Blob downloads are single-flight by digest (two images sharing a layer, or two pods
pulling the same image, fetch it once) and at most ``max_downloads`` run at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import aiohttp

from podvisor.images.auth import Credential, Keychain
from podvisor.images.client import BytesProgress, RegistryClient
from podvisor.images.errors import (
    DigestMismatchError,
    ImagePullError,
    ManifestUnknownError,
    RegistryUnauthorizedError,
    UnsupportedImageError,
)
from podvisor.images.manifest import (
    Descriptor,
    ImageIndex,
    ImageManifest,
    parse_manifest,
    sha256_digest,
    verify_digest,
)
from podvisor.images.mirrors import Endpoint, MirrorConfig
from podvisor.images.reference import Reference
from podvisor.images.store import ImageStore

__all__ = ["Puller", "ResolvedImage", "single_flight", "first_error"]

T = TypeVar("T")


async def single_flight(table: dict[str, asyncio.Task[T]], key: str, work: Callable[[], Awaitable[T]]) -> T:
    """Run ``work`` once per ``key`` at a time; concurrent callers share its result. A caller being
    cancelled does not cancel the shared work (others may still wait for it)."""
    task = table.get(key)
    if task is None:
        async def run() -> T:
            return await work()
        task = asyncio.ensure_future(run())
        table[key] = task

        def forget(_: object, key: str = key, task: asyncio.Task[T] = task) -> None:
            if table.get(key) is task:
                del table[key]
            if not task.cancelled():
                task.exception()   # retrieved: no "never retrieved" warning when all waiters left
        task.add_done_callback(forget)
    return await asyncio.shield(task)


def first_error(group: BaseExceptionGroup) -> BaseException:
    """The first leaf of an exception group (what a caller of one pull wants to see)."""
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


@dataclass(frozen=True)
class ResolvedImage:
    reference: Reference
    endpoint: Endpoint
    digest: str                 # of the platform manifest
    manifest: ImageManifest
    manifest_bytes: bytes
    index_digest: str = ""

    @property
    def blobs(self) -> tuple[Descriptor, ...]:
        return (self.manifest.config, *self.manifest.layers)

    @property
    def download_size(self) -> int:
        return sum(d.size for d in self.blobs) + len(self.manifest_bytes)


class Puller:
    def __init__(self, store: ImageStore, *, mirrors: MirrorConfig, keychain: Keychain | None = None,
                 max_downloads: int = 3, session: aiohttp.ClientSession | None = None) -> None:
        self.store, self.mirrors, self.keychain = store, mirrors, keychain or Keychain()
        self._session = session
        self._own_session = session is None
        self._clients: dict[tuple[str, Credential | None], RegistryClient] = {}
        self._blob_flights: dict[str, asyncio.Task[None]] = {}
        self._limit = asyncio.Semaphore(max_downloads)
        self.pinned: Counter[str] = Counter()    # blobs an in-flight pull relies on (GC keeps them)
        self.downloads: Counter[str] = Counter() # blob digest -> times downloaded by this process

    async def close(self) -> None:
        if self._session is not None and self._own_session:
            await self._session.close()
        self._session = None
        self._clients.clear()

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=16))
        return self._session

    def client(self, endpoint: Endpoint, registry: str, credentials: Keychain | None) -> RegistryClient:
        cred = None
        for chain in (credentials, self.keychain):
            if chain:
                cred = chain.get(endpoint.host) or chain.get(registry)
                if cred is not None:
                    break
        key = (endpoint.base, cred)
        client = self._clients.get(key)
        if client is None:
            client = self._clients[key] = RegistryClient(self._get_session(), endpoint, credential=cred)
        return client

    # --- resolve ---------------------------------------------------------------------------------
    async def resolve(self, ref: Reference, *, credentials: Keychain | None = None) -> ResolvedImage:
        errors: list[tuple[Endpoint, ImagePullError]] = []
        for endpoint in self.mirrors.endpoints(ref.registry):
            client = self.client(endpoint, ref.registry, credentials)
            try:
                return await self._resolve_at(client, endpoint, ref)
            except (DigestMismatchError, UnsupportedImageError):
                raise
            except ImagePullError as exc:
                errors.append((endpoint, exc))
        return self._raise_all(ref, errors)

    async def head_digest(self, ref: Reference, *, credentials: Keychain | None = None) -> str:
        """The digest the tag names now at the first endpoint that answers; "" if none says."""
        for endpoint in self.mirrors.endpoints(ref.registry):
            with contextlib.suppress(ImagePullError):
                return await self.client(endpoint, ref.registry, credentials).head_manifest(ref.repository,
                                                                                            ref.reference)
        return ""

    async def _resolve_at(self, client: RegistryClient, endpoint: Endpoint, ref: Reference) -> ResolvedImage:
        body, ctype, said = await client.get_manifest(ref.repository, ref.reference)
        digest = self._check_manifest(body, ref.digest or said, what=f"manifest {ref}")
        parsed = parse_manifest(body, ctype)
        index_digest = ""
        if isinstance(parsed, ImageIndex):
            index_digest = digest
            self.store.write_blob(digest, body)
            desc = parsed.select()
            body, ctype, _ = await client.get_manifest(ref.repository, desc.digest)
            digest = self._check_manifest(body, desc.digest, what=f"manifest {desc.digest} of {ref}")
            parsed = parse_manifest(body, ctype or desc.media_type)
            if not isinstance(parsed, ImageManifest):
                raise UnsupportedImageError(f"{ref}: the linux/amd64 entry is itself a list")
        self.store.write_blob(digest, body)
        return ResolvedImage(ref, endpoint, digest, parsed, body, index_digest)

    @staticmethod
    def _check_manifest(body: bytes, expected: str, *, what: str) -> str:
        if expected:
            verify_digest(body, expected, what=what)
            return expected if expected.startswith("sha256:") else sha256_digest(body)
        return sha256_digest(body)

    @staticmethod
    def _raise_all(ref: Reference, errors: list[tuple[Endpoint, ImagePullError]]) -> ResolvedImage:
        if not errors:
            raise ImagePullError(f"{ref}: no registry endpoint configured")
        detail = "; ".join(f"{e.base}: {exc}" for e, exc in errors)
        # the most telling failure decides the class: missing image, then refused, then unreachable
        for cls in (ManifestUnknownError, RegistryUnauthorizedError):
            if any(isinstance(exc, cls) for _, exc in errors):
                raise cls(f"pulling {ref.familiar}: {detail}")
        raise ImagePullError(f"pulling {ref.familiar}: {detail}")

    # --- fetch -----------------------------------------------------------------------------------
    async def fetch(self, image: ResolvedImage, *, credentials: Keychain | None = None,
                    progress: BytesProgress | None = None) -> list[str]:
        """Bring every blob of ``image`` into the store; returns the digests that were downloaded now."""
        client = self.client(image.endpoint, image.reference.registry, credentials)
        fetched: list[str] = []

        async def one(desc: Descriptor) -> None:
            if self.store.has_blob(desc.digest):
                if progress is not None:
                    progress(desc.size)
                return
            await single_flight(self._blob_flights, desc.digest,
                                lambda: self._download(client, image.reference.repository, desc, progress))
            fetched.append(desc.digest)

        # every download runs to its end even when one fails: a shared download cannot be cancelled
        # for one waiter, and the caller cleans up only once nothing is still landing in the store
        results = await asyncio.gather(*(one(desc) for desc in image.blobs), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return fetched

    async def _download(self, client: RegistryClient, repository: str, desc: Descriptor,
                        progress: BytesProgress | None) -> None:
        async with self._limit:
            if self.store.has_blob(desc.digest):
                return
            tmp = self.store.temp_path("blob")
            self.downloads[desc.digest] += 1
            await client.fetch_blob(repository, desc.digest, desc.size, tmp, progress=progress)
            self.store.commit_blob(tmp, desc.digest)
