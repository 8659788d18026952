"""The image service the node agent calls: make an image ready for a pod, once per host.

``ensure_image(ref, pull_policy=...)`` honours Kubernetes' policies: ``Never`` uses only what is cached
(else `ImageNeverPullError`), ``IfNotPresent`` pulls when the name is not cached, ``Always`` asks the
registry what the name points at now (one ``HEAD``) and pulls only a digest it does not have. Work is
single-flight: concurrent calls for one name share one resolution, calls for one digest share one
staging, and layers are fetched once (`Puller`). A cache hit reads two small files.

Images in use are leased (`mark_in_use` / `release`, files under ``leases/`` so every process sharing
the cache sees them); `remove` refuses a leased image and `gc` never picks one. `gc` acts like the
kubelet's image GC: above ``high_percent`` disk use it removes images unused for at least ``min_age``,
least recently used first, until use is at ``low_percent``, then drops blobs no image needs.
"""

from __future__ import annotations

import asyncio
import builtins
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from podvisor.images.auth import Keychain
from podvisor.images.disk import DEFAULT_FS
from podvisor.images.errors import (
    ImageError,
    ImageInUseError,
    ImageNeverPullError,
    ImageNotFoundError,
)
from podvisor.images.mirrors import MirrorConfig
from podvisor.images.puller import Puller, ResolvedImage, single_flight
from podvisor.images.reference import Reference, parse_reference
from podvisor.images.stager import Stager, StageTimings
from podvisor.images.store import ImageStore, StagedImage

__all__ = ["ImageService", "PullEvent", "GCReport", "PULL_POLICIES", "pulled_message"]

PULL_POLICIES = ("Always", "IfNotPresent", "Never")


@dataclass(frozen=True, slots=True)
class PullEvent:
    """Progress of one ``ensure_image``: phase is resolving, downloading, unpacking, building or done."""

    phase: str
    reference: str
    done: int = 0
    total: int = 0


ProgressCallback = Callable[[PullEvent], None]


@dataclass
class GCReport:
    removed_images: list[str] = field(default_factory=list)
    removed_blobs: int = 0
    freed_bytes: int = 0
    skipped_in_use: list[str] = field(default_factory=list)


def pulled_message(image: StagedImage, reference: str) -> str:
    """The text of the pod event, worded as the kubelet words it."""
    if not image.pulled:
        return f'Container image "{reference}" already present on machine'
    return (f'Successfully pulled image "{reference}" in {image.pull_seconds:.3f}s. '
            f"Image size: {image.download_size} bytes.")


class ImageService:
    def __init__(self, data_dir: Path, *, mirrors: MirrorConfig | None = None, keychain: Keychain | None = None,
                 fs_type: str = DEFAULT_FS, max_downloads: int = 3, as_root: bool | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.data_dir = Path(data_dir)
        self.store = ImageStore(self.data_dir / "images")
        self.mirrors = mirrors or MirrorConfig()
        self.puller = Puller(self.store, mirrors=self.mirrors, keychain=keychain, max_downloads=max_downloads)
        self.stager = Stager(self.store, fs_type=fs_type, as_root=as_root)
        self.clock = clock
        self._name_flights: dict[str, asyncio.Task[StagedImage]] = {}
        self._stage_flights: dict[str, asyncio.Task[tuple[StagedImage, StageTimings]]] = {}
        self.last_timings: StageTimings | None = None

    async def close(self) -> None:
        await self.stager.drain()
        await self.puller.close()

    async def __aenter__(self) -> ImageService:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- the node agent's entry point -----------------------------------------------------------
    async def ensure_image(self, ref: str, *, pull_policy: str = "IfNotPresent", credentials: Keychain | None = None,
                           progress: ProgressCallback | None = None) -> StagedImage:
        if pull_policy not in PULL_POLICIES:
            raise ValueError(f"pull policy must be one of {', '.join(PULL_POLICIES)}, not {pull_policy!r}")
        reference = parse_reference(ref)
        if pull_policy != "Always":
            cached = self.lookup(reference)
            if cached is not None:
                return cached
            if pull_policy == "Never":
                raise ImageNeverPullError(f'Container image "{ref}" is not present with pull policy of Never')
        key = f"{pull_policy}|{reference}"
        return await single_flight(self._name_flights, key,
                                   lambda: self._pull(reference, credentials, progress, always=pull_policy == "Always"))

    async def pull(self, ref: str, *, credentials: Keychain | None = None,
                   progress: ProgressCallback | None = None) -> StagedImage:
        """Ask the registry (policy Always): pull and stage what the name points at now, unless cached."""
        return await self.ensure_image(ref, pull_policy="Always", credentials=credentials, progress=progress)

    def lookup(self, reference: Reference | str) -> StagedImage | None:
        """The staged image a name or digest points at on this host, or None. Marks it used."""
        ref = parse_reference(reference) if isinstance(reference, str) else reference
        digest = self._local_digest(ref)
        if digest is None:
            return None
        image = self.store.load(digest)
        if image is not None:
            self.store.touch(digest)
        return image

    # --- inventory ------------------------------------------------------------------------------
    def list(self) -> builtins.list[StagedImage]:
        return self.store.images()

    async def remove(self, ref_or_digest: str, *, force: bool = False) -> builtins.list[str]:
        """Remove a name (the image goes with its last name) or, given a digest, the image and all its
        names. `ImageInUseError` if a pod uses it, unless ``force``. Returns the digests removed."""
        digest, name = self._find(ref_or_digest)
        image = self.store.load(digest)
        if image is None:
            raise ImageNotFoundError(f"image {ref_or_digest!r} is not on this host")
        holders = self.store.leases(digest)
        remaining = [n for n in image.names if n != name] if name else []
        if name and remaining:
            await asyncio.to_thread(self.store.update_refs, lambda refs: refs["names"].pop(name, None))
            return []
        if holders and not force:
            raise ImageInUseError(f"image {ref_or_digest} is in use by {', '.join(holders)}")
        await asyncio.to_thread(self.store.delete_image, digest)
        await asyncio.to_thread(self._drop_unused_blobs)
        return [digest]

    # --- leases and GC ---------------------------------------------------------------------------
    def mark_in_use(self, digest: str, holder: str) -> None:
        self.store.add_lease(digest, holder)

    def release(self, digest: str, holder: str) -> None:
        self.store.remove_lease(digest, holder)

    def in_use(self, digest: str) -> builtins.list[str]:
        return self.store.leases(digest)

    def holders(self) -> dict[str, builtins.list[str]]:
        return self.store.all_leases()

    async def gc(self, *, high_percent: float = 85.0, low_percent: float = 80.0, min_age: float = 120.0,
                 usage: Callable[[], tuple[int, int]] | None = None) -> GCReport:
        """Free disk as the kubelet does; ``usage`` returns (total, used) bytes of the cache's disk."""
        report = GCReport()
        total, used = (usage or self._disk_usage)()
        if total > 0 and used * 100 / total >= high_percent:
            to_free = used - int(total * low_percent / 100)
            now = self.clock()
            staging = set(self._stage_flights)
            for image in sorted(self.store.images(), key=lambda i: i.last_used):
                if report.freed_bytes >= to_free:
                    break
                if self.store.leases(image.digest):
                    report.skipped_in_use.append(image.digest)
                    continue
                if image.digest in staging or now - image.last_used < min_age:
                    continue
                await asyncio.to_thread(self.store.delete_image, image.digest)
                report.removed_images.append(image.digest)
                report.freed_bytes += image.disk_size
                blobs, freed = await asyncio.to_thread(self._drop_unused_blobs)
                report.removed_blobs += blobs
                report.freed_bytes += freed
        blobs, freed = await asyncio.to_thread(self._drop_unused_blobs)
        report.removed_blobs += blobs
        report.freed_bytes += freed
        return report

    # --- internals ------------------------------------------------------------------------------
    def _disk_usage(self) -> tuple[int, int]:
        du = shutil.disk_usage(self.store.root)
        return du.total, du.used

    def _local_digest(self, ref: Reference) -> str | None:
        if ref.digest:
            if self.store.image_dir(ref.digest).exists():
                return ref.digest
            return self.store.resolve_name(ref.digest)
        return self.store.resolve_name(f"{ref.name}:{ref.tag}")

    def _find(self, text: str) -> tuple[str, str]:
        """(digest, name or "") for a digest, a digest prefix or an image name."""
        if text.startswith("sha256:") and len(text) == 71:
            return text, ""
        if all(c in "0123456789abcdef" for c in text.removeprefix("sha256:")) and len(text.removeprefix("sha256:")) >= 6:
            hexpart = text.removeprefix("sha256:")
            matches = [i.digest for i in self.store.images() if i.digest[7:].startswith(hexpart)]
            if len(matches) == 1:
                return matches[0], ""
        ref = parse_reference(text)
        name = f"{ref.name}:{ref.tag}" if not ref.digest else ""
        digest = self._local_digest(ref)
        if digest is None:
            raise ImageNotFoundError(f"image {text!r} is not on this host")
        return digest, name

    def _drop_unused_blobs(self) -> tuple[int, int]:
        keep: set[str] = set(self.puller.pinned)
        for image in self.store.images():
            keep.update(image.blobs)
        removed = freed = 0
        for digest in self.store.all_blobs():
            if digest in keep or digest in self.puller._blob_flights:
                continue
            try:
                size = self.store.blob_path(digest).stat().st_size
            except FileNotFoundError:
                continue
            self.store.remove_blob(digest)
            removed += 1
            freed += size
        return removed, freed

    async def _pull(self, ref: Reference, credentials: Keychain | None, progress: ProgressCallback | None, *,
                    always: bool) -> StagedImage:
        started = time.perf_counter()
        name = str(ref)

        def emit(phase: str, done: int = 0, total: int = 0) -> None:
            if progress is not None:
                progress(PullEvent(phase, name, done, total))

        emit("resolving")
        if always and not ref.digest:
            # cheap path: the registry's current digest may already be staged here
            head = await self._head(ref, credentials)
            if head:
                local = self.store.image_dir(head).exists() and head or self.store.resolve_name(head)
                if local and self.store.load(local) is not None:
                    await asyncio.to_thread(self.store.set_name, f"{ref.name}:{ref.tag}", local)
                    image = self.lookup(ref)
                    if image is not None:
                        emit("done")
                        return image
        resolved = await self.puller.resolve(ref, credentials=credentials)
        image = await self._fetch_and_stage(resolved, credentials, emit)
        if not ref.digest:
            await asyncio.to_thread(self.store.set_name, f"{ref.name}:{ref.tag}", image.digest,
                                    index_digest=resolved.index_digest)
        elif resolved.index_digest:
            await asyncio.to_thread(self.store.update_refs,
                                    lambda refs: refs["aliases"].__setitem__(resolved.index_digest, image.digest))
        emit("done")
        loaded = self.store.load(image.digest) or image
        return _with(loaded, pulled=image.pulled, pull_seconds=time.perf_counter() - started)

    async def _head(self, ref: Reference, credentials: Keychain | None) -> str:
        try:
            return await self.puller.head_digest(ref, credentials=credentials)
        except ImageError:
            return ""

    async def _fetch_and_stage(self, resolved: ResolvedImage, credentials: Keychain | None,
                               emit: Callable[..., None]) -> StagedImage:
        existing = self.store.load(resolved.digest)
        if existing is not None:
            return existing
        pins = [d.digest for d in resolved.blobs] + [resolved.digest, resolved.index_digest]
        self.puller.pinned.update(pins)
        total = sum(d.size for d in resolved.blobs)
        done = 0

        def on_bytes(n: int) -> None:
            nonlocal done
            done += n
            emit("downloading", done, total)

        failed = False
        try:
            await self.puller.fetch(resolved, credentials=credentials, progress=on_bytes)
            emit("unpacking", 0, len(resolved.manifest.layers))
            staged, timings = await single_flight(self._stage_flights, resolved.digest,
                                                  lambda: self.stager.stage(resolved))
            self.last_timings = timings
            return _with(staged, pulled=True)
        except ImageError:
            failed = True
            raise
        finally:
            self.puller.pinned.subtract(pins)
            self.puller.pinned = +self.puller.pinned
            if failed:
                # a failed pull leaves nothing behind that no image needs
                await asyncio.to_thread(self._drop_unused_blobs)


def _with(image: StagedImage, *, pulled: bool, pull_seconds: float | None = None) -> StagedImage:
    return replace(image, pulled=pulled, pull_seconds=image.pull_seconds if pull_seconds is None else pull_seconds)
