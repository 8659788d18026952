"""Stage a pulled image: unpack its layers into a scratch root, build the read-only disk, publish it.

Each layer is decompressed and applied in one pass, its uncompressed bytes hashed on the way and
checked against the config's ``diff_ids`` (a layer that is not what the config says fails the
staging). The scratch root lives in ``tmp/`` and is deleted after the disk is built; only the disk
and ``image.json`` move, by one rename, into ``disks/``. Times of the three phases are returned for
the benchmark and for ``Pulled`` events.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from podvisor.images.compression import LayerReader, detect_compression
from podvisor.images.disk import DEFAULT_FS, build_disk
from podvisor.images.errors import DigestMismatchError, StagingError
from podvisor.images.manifest import Descriptor, ImageConfig, layer_compression
from podvisor.images.puller import ResolvedImage
from podvisor.images.store import ImageStore, StagedImage
from podvisor.images.unpack import RootfsBuilder, UnpackStats

__all__ = ["Stager", "StageTimings", "unpack_layers"]


@dataclass
class StageTimings:
    unpack_seconds: float = 0.0
    build_seconds: float = 0.0
    unpacked_bytes: int = 0
    files: int = 0
    notes: list[str] = field(default_factory=list)


def unpack_layers(store: ImageStore, layers: tuple[Descriptor, ...], diff_ids: tuple[str, ...], root: Path, *,
                  as_root: bool | None = None) -> UnpackStats:
    """Apply ``layers`` (blobs already in ``store``) in order onto ``root``; synchronous."""
    builder = RootfsBuilder(root, as_root=as_root)
    for i, layer in enumerate(layers):
        compression = layer_compression(layer.media_type)
        with open(store.blob_path(layer.digest), "rb") as f:
            head = f.read(4)
            f.seek(0)
            sniffed = detect_compression(head)
            if compression == "none" and sniffed != "none":
                compression = sniffed      # compressed layers labelled as plain tar exist in the wild
            reader = LayerReader(f, compression)
            builder.apply(reader, layer=f"layer {i + 1} ({layer.digest[:19]})")  # type: ignore[arg-type]
            reader.drain()
        if i < len(diff_ids) and diff_ids[i] != f"sha256:{reader.hexdigest()}":
            raise DigestMismatchError(f"layer {i + 1} ({layer.digest}): uncompressed content is "
                                      f"sha256:{reader.hexdigest()}, the image config says {diff_ids[i]}")
    return builder.finish()


class Stager:
    def __init__(self, store: ImageStore, *, fs_type: str = DEFAULT_FS, as_root: bool | None = None) -> None:
        self.store, self.fs_type = store, fs_type
        self.as_root = os.geteuid() == 0 if as_root is None else as_root
        self._cleanups: set[asyncio.Task[None]] = set()

    async def stage(self, image: ResolvedImage) -> tuple[StagedImage, StageTimings]:
        config_bytes = await asyncio.to_thread(self.store.read_blob, image.manifest.config.digest)
        config = ImageConfig.from_bytes(config_bytes)
        if config.os != "linux":
            raise StagingError(f"{image.reference}: image is for {config.os}, not linux")
        layers = image.manifest.layers
        if config.diff_ids and len(config.diff_ids) != len(layers):
            raise StagingError(f"{image.reference}: config lists {len(config.diff_ids)} layers, manifest {len(layers)}")
        work = self.store.temp_path("stage")
        out_dir = work / "image"
        root = work / "rootfs"
        timings = StageTimings()
        try:
            await asyncio.to_thread(out_dir.mkdir, parents=True)
            t0 = time.perf_counter()
            stats = await asyncio.to_thread(unpack_layers, self.store, layers, config.diff_ids, root,
                                            as_root=self.as_root)
            t1 = time.perf_counter()
            disk = out_dir / "disk.img"
            disk_size = await build_disk(root, disk, fs=self.fs_type, content_bytes=stats.bytes,
                                         inodes=stats.files + stats.dirs + stats.symlinks + 16, as_root=self.as_root)
            t2 = time.perf_counter()
            timings = StageTimings(t1 - t0, t2 - t1, stats.bytes, stats.files, stats.notes[:20])
            staged = StagedImage(
                digest=image.digest, disk_path=disk, fs_type=self.fs_type, config=config, disk_size=disk_size,
                download_size=image.download_size, unpacked_size=stats.bytes,
                config_digest=image.manifest.config.digest, index_digest=image.index_digest,
                blobs=tuple(d.digest for d in image.blobs) + (image.digest,)
                + ((image.index_digest,) if image.index_digest else ()),
                built_at=time.time())
            published = await asyncio.to_thread(self.store.publish, out_dir, staged)
        finally:
            self._cleanup_later(work)
        return published, timings

    def _cleanup_later(self, work: Path) -> None:
        """Deleting a big scratch root takes a while; nobody needs to wait for it."""
        task = asyncio.ensure_future(asyncio.to_thread(shutil.rmtree, work, True))
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    async def drain(self) -> None:
        if self._cleanups:
            await asyncio.gather(*self._cleanups, return_exceptions=True)
