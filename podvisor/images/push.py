"""Push a local image (see `sources`) to a registry with the OCI distribution API.

Per blob: skip it when the registry has it (``HEAD``), else mount it from another repository of the
same registry that we pushed it to before (``POST ?mount=&from=``, no bytes move), else upload it:
one monolithic ``PUT`` for small blobs, ``PATCH`` chunks then a closing ``PUT`` for big ones. Manifests
go last, children before an index, the top one under the tag. Where each blob went is remembered in
``DATA/images/pushed.json`` to find mount sources next time.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from podvisor.images.auth import Credential
from podvisor.images.client import RegistryClient
from podvisor.images.mirrors import Endpoint, upstream_endpoint
from podvisor.images.puller import first_error
from podvisor.images.reference import Reference
from podvisor.images.sources import LocalImage

__all__ = ["push_image", "PushResult", "PushHistory"]


@dataclass
class PushResult:
    reference: str
    digest: str
    uploaded: int = 0
    skipped: int = 0
    mounted: int = 0
    bytes_uploaded: int = 0


class PushHistory:
    """digest -> repositories (``registry/repo``) it was pushed to; a hint for cross-repository mounts."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.data: dict[str, list[str]] = {}
        if path is not None and path.exists():
            try:
                self.data = json.loads(path.read_text())
            except ValueError:
                self.data = {}

    def sources(self, digest: str, registry: str, exclude: str) -> list[str]:
        prefix = registry + "/"
        return [r[len(prefix):] for r in self.data.get(digest, []) if r.startswith(prefix) and r[len(prefix):] != exclude]

    def record(self, digest: str, registry: str, repository: str) -> None:
        repos = self.data.setdefault(digest, [])
        name = f"{registry}/{repository}"
        if name not in repos:
            repos.append(name)
            del repos[:-8]

    def save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data))
        os.replace(tmp, self.path)


async def push_image(image: LocalImage, target: Reference, *, credential: Credential | None = None,
                     endpoint: Endpoint | None = None, history: PushHistory | None = None,
                     progress: Callable[[int, int], None] | None = None, chunk_size: int = 16 << 20,
                     parallel: int = 3, session: aiohttp.ClientSession | None = None) -> PushResult:
    """Push ``image`` as ``target``; ``progress(done_bytes, total_bytes)`` is called as bytes go out."""
    endpoint = endpoint or upstream_endpoint(target.registry)
    history = history or PushHistory(None)
    own = session is None
    session = session or aiohttp.ClientSession()
    try:
        client = RegistryClient(session, endpoint, credential=credential)
        order = image.blob_order()
        sizes = {d: image.blobs[d].stat().st_size for d in order}
        total = sum(sizes.values())
        done = 0
        result = PushResult(str(target), image.top[0])
        limit = asyncio.Semaphore(parallel)

        def advance(n: int) -> None:
            nonlocal done
            done += n
            if progress is not None:
                progress(done, total)

        async def one(digest: str) -> None:
            async with limit:
                if await client.blob_exists(target.repository, digest):
                    result.skipped += 1
                    advance(sizes[digest])
                    return
                for source in history.sources(digest, target.registry, target.repository):
                    if await client.mount_blob(target.repository, digest, source):
                        result.mounted += 1
                        advance(sizes[digest])
                        return
                await client.upload_blob(target.repository, digest, image.blobs[digest], chunk_size=chunk_size,
                                         progress=advance)
                result.uploaded += 1
                result.bytes_uploaded += sizes[digest]

        await client.blob_exists(target.repository, order[0]) if order else None  # learn auth once
        try:
            async with asyncio.TaskGroup() as tg:
                for digest in order:
                    tg.create_task(one(digest))
        except BaseExceptionGroup as group:
            raise first_error(group) from None
        for digest in order:
            history.record(digest, target.registry, target.repository)
        for i, (digest, body, media) in enumerate(image.manifests):
            is_top = i == len(image.manifests) - 1
            reference = (target.tag or target.digest or digest) if is_top else digest
            await client.put_manifest(target.repository, reference, body, media)
        if progress is not None and total == 0:
            progress(0, 0)
        history.save()
        return result
    finally:
        if own:
            await session.close()

