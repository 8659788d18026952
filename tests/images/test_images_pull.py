"""Pull and stage from the real registry: policies, credentials, digests, single flight, cache, GC."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
from pathlib import Path

import pytest

from podvisor.images.auth import keychain_from_secrets
from podvisor.images.build import BlobDir, image_config, layer_from_tar, write_image, write_oci_layout
from podvisor.images.errors import (
    DigestMismatchError,
    ImageInUseError,
    ImageNeverPullError,
    ManifestUnknownError,
    RegistryUnauthorizedError,
    UnsafeLayerError,
)
from podvisor.images.mirrors import default_mirrors
from podvisor.images.service import ImageService, PullEvent, pulled_message
from tests.imagebuild import (
    MULTILAYER_ABSENT,
    MULTILAYER_PRESENT,
    TarEntry,
    build_layout,
    build_multilayer_layout,
    busybox_rootfs,
    push_layout,
    tar_entries,
)
from tests.registry.harness import RunningRegistry, dockerconfig_secret


def _extract(disk: Path, dest: Path) -> Path:
    """Read a staged erofs disk back without mounting it."""
    subprocess.run(["fsck.erofs", f"--extract={dest}", str(disk)], check=True, capture_output=True)
    return dest


async def test_pull_stages_a_disk_with_the_config_beside_it(registry: RunningRegistry, busybox_layout: Path,
                                                            data_dir: Path, tmp_path: Path) -> None:
    ref = f"{registry.address}/default/bbox:1"
    await push_layout(busybox_layout, ref, password=registry.admin_token)
    events: list[PullEvent] = []
    async with ImageService(data_dir, keychain=registry.keychain()) as svc:
        image = await svc.ensure_image(ref, pull_policy="IfNotPresent", progress=events.append)
    assert image.pulled and image.fs_type == "erofs"
    assert image.disk_path.is_file() and image.disk_path.parent.name == image.digest.split(":")[1]
    assert image.config.cmd == ("/bin/sh",)
    assert {e.phase for e in events} >= {"resolving", "downloading", "unpacking", "done"}
    assert "Successfully pulled image" in pulled_message(image, ref)
    root = _extract(image.disk_path, tmp_path / "x")
    assert (root / "www/index.html").read_text() == "hello from podvisor\n"
    assert (root / "bin/sh").is_symlink()


async def test_cache_reuse_and_pull_policies(registry: RunningRegistry, busybox_layout: Path, data_dir: Path,
                                             tmp_path: Path) -> None:
    ref = f"{registry.address}/default/policy:1"
    async with ImageService(data_dir, keychain=registry.keychain()) as svc:
        with pytest.raises(ImageNeverPullError):
            await svc.ensure_image(ref, pull_policy="Never")
        await push_layout(busybox_layout, ref, password=registry.admin_token)
        first = await svc.ensure_image(ref, pull_policy="IfNotPresent")
        again = await svc.ensure_image(ref, pull_policy="IfNotPresent")
        never = await svc.ensure_image(ref, pull_policy="Never")
        always = await svc.ensure_image(ref, pull_policy="Always")
        assert first.pulled and not again.pulled and not never.pulled and not always.pulled
        assert len({i.disk_path for i in (first, again, never, always)}) == 1
        assert 'already present on machine' in pulled_message(again, ref)
        # the tag moves: Always follows it, IfNotPresent keeps what it has
        other = build_layout(tmp_path / "v2", [tar_entries([TarEntry("v2", data=b"2")])])
        await push_layout(other, ref, password=registry.admin_token)
        kept = await svc.ensure_image(ref, pull_policy="IfNotPresent")
        moved = await svc.ensure_image(ref, pull_policy="Always")
        assert kept.digest == first.digest and moved.digest != first.digest and moved.pulled
        by_digest = await svc.ensure_image(f"{registry.address}/default/policy@{first.digest}", pull_policy="Never")
        assert by_digest.digest == first.digest


async def test_credentials_and_pull_secrets(registry: RunningRegistry, busybox_layout: Path, data_dir: Path) -> None:
    ref = f"{registry.address}/team1/secret:1"
    await push_layout(busybox_layout, ref, username="dev", password=registry.tokens["dev"])
    async with ImageService(data_dir) as svc:
        with pytest.raises(RegistryUnauthorizedError, match="anonymous"):
            await svc.ensure_image(ref)
        wrong = keychain_from_secrets([dockerconfig_secret(registry.address, "other", registry.tokens["other"])])
        with pytest.raises(RegistryUnauthorizedError):
            await svc.ensure_image(ref, credentials=wrong)
        secret = dockerconfig_secret(registry.address, "dev", registry.tokens["dev"])
        image = await svc.ensure_image(ref, credentials=keychain_from_secrets([secret]))
        assert image.pulled
    assert not list((data_dir / "images" / "tmp").iterdir())


async def test_missing_image(registry: RunningRegistry, data_dir: Path) -> None:
    async with ImageService(data_dir, keychain=registry.keychain()) as svc:
        with pytest.raises(ManifestUnknownError, match="MANIFEST_UNKNOWN|manifest unknown|NAME_UNKNOWN"):
            await svc.ensure_image(f"{registry.address}/default/nothing:here")


async def test_tampered_blob_fails_and_leaves_nothing(registry: RunningRegistry, data_dir: Path,
                                                      tmp_path: Path) -> None:
    layout = build_layout(tmp_path / "t", [tar_entries([TarEntry("secret", data=b"original contents\n" * 100)])])
    ref = f"{registry.address}/default/tampered:1"
    await push_layout(layout, ref, password=registry.admin_token)
    manifest = _manifest(layout)
    layer = manifest["layers"][0]["digest"].split(":")[1]
    data = registry.storage / "blobs" / "sha256" / layer[:2] / layer / "data"
    original = data.read_bytes()
    data.write_bytes(original[:-8] + bytes(b ^ 0xFF for b in original[-8:]))   # same size, other bytes
    try:
        async with ImageService(data_dir, keychain=registry.keychain()) as svc:
            with pytest.raises(DigestMismatchError):
                await svc.ensure_image(ref)
            assert svc.list() == []
        images = data_dir / "images"
        assert not list((images / "blobs/sha256").iterdir())
        assert not list((images / "disks/sha256").iterdir())
        assert not list((images / "tmp").iterdir())
    finally:
        data.write_bytes(original)


def _found(directory: Path, name: str) -> bool:
    return any(directory.rglob(name))


def _dump_ext4(disk: Path, root: Path) -> tuple[Path, list[str]]:
    """Copy the top directories out of an ext4 image with debugfs (no mount needed); list its root."""
    root.mkdir()
    for top in ("etc", "data", "cache", "bin"):
        subprocess.run(["debugfs", "-R", f"rdump /{top} {root}", str(disk)], check=True, capture_output=True)
    listing = subprocess.run(["debugfs", "-R", "ls -l /", str(disk)], check=True, capture_output=True,
                             text=True).stdout.split()
    return root, listing


def _manifest(layout: Path) -> dict:
    index = json.loads((layout / "index.json").read_text())
    digest = index["manifests"][0]["digest"].split(":")[1]
    return json.loads((layout / "blobs/sha256" / digest).read_text())


async def test_path_traversal_image_is_refused(registry: RunningRegistry, data_dir: Path, tmp_path: Path) -> None:
    evil = tar_entries([TarEntry("etc", kind="dir"), TarEntry("etc/../../../escaped", data=b"pwned\n")])
    layout = build_layout(tmp_path / "evil", [evil])
    ref = f"{registry.address}/default/evil:1"
    await push_layout(layout, ref, password=registry.admin_token)
    async with ImageService(data_dir, keychain=registry.keychain()) as svc:
        with pytest.raises(UnsafeLayerError, match="escapes the image root"):
            await svc.ensure_image(ref)
        assert svc.list() == []
    assert not _found(data_dir, "escaped")


async def test_whiteouts_end_to_end_with_zstd(registry: RunningRegistry, data_dir: Path, tmp_path: Path) -> None:
    layout = build_multilayer_layout(tmp_path / "multi", compression="zstd")
    ref = f"{registry.address}/default/multi:zstd"
    await push_layout(layout, ref, password=registry.admin_token)
    async with ImageService(data_dir, keychain=registry.keychain(), fs_type="ext4") as svc:
        image = await svc.ensure_image(ref)
    assert image.fs_type == "ext4"
    root, listing = _dump_ext4(image.disk_path, tmp_path / "ext")
    for rel, content in MULTILAYER_PRESENT.items():
        if content is not None:
            assert (root / rel).read_text() == content, rel
    for rel in MULTILAYER_ABSENT:
        assert not (root / rel).exists(), rel
    assert "gone" not in listing and "etc" in listing


async def test_concurrent_pulls_happen_once(registry: RunningRegistry, busybox_layout: Path, data_dir: Path) -> None:
    ref = f"{registry.address}/default/together:1"
    await push_layout(busybox_layout, ref, password=registry.admin_token)
    async with ImageService(data_dir, keychain=registry.keychain()) as svc:
        images = await asyncio.gather(*(svc.ensure_image(ref) for _ in range(6)))
        assert len({i.digest for i in images}) == 1
        assert all(n == 1 for n in svc.puller.downloads.values())
        assert len(svc.puller.downloads) == 2          # one layer + the config, each once
        assert len(svc.list()) == 1


async def test_layers_shared_by_images_are_fetched_once(registry: RunningRegistry, data_dir: Path,
                                                        tmp_path: Path) -> None:
    base = busybox_rootfs(tmp_path / "base")
    blobs = BlobDir(tmp_path / "shared" / "blobs" / "sha256")
    from podvisor.images.build import layer_from_directory

    base_layer = layer_from_directory(blobs, base)
    manifests = []
    for name in ("one", "two"):
        extra = layer_from_tar(blobs, io.BytesIO(tar_entries([TarEntry(name, data=name.encode())])))
        manifests.append(write_image(blobs, [base_layer, extra], image_config([base_layer, extra], cmd=["/bin/sh"])))
    for i, name in enumerate(("one", "two")):
        layout = tmp_path / f"layout-{name}"
        layout.mkdir()
        (layout / "blobs").symlink_to(tmp_path / "shared" / "blobs")
        write_oci_layout(layout, [manifests[i]])
        await push_layout(layout, f"{registry.address}/default/shared-{name}:1", password=registry.admin_token)
    async with ImageService(data_dir, keychain=registry.keychain()) as svc:
        await asyncio.gather(svc.ensure_image(f"{registry.address}/default/shared-one:1"),
                             svc.ensure_image(f"{registry.address}/default/shared-two:1"))
        assert svc.puller.downloads[base_layer.digest] == 1
        assert len(svc.list()) == 2


async def test_manifest_list_picks_linux_amd64(registry: RunningRegistry, data_dir: Path, tmp_path: Path) -> None:
    blobs = BlobDir(tmp_path / "ml" / "blobs" / "sha256")
    entries = []
    for arch in ("arm64", "amd64"):
        layer = layer_from_tar(blobs, io.BytesIO(tar_entries([TarEntry("arch", data=arch.encode())])))
        cfg = json.loads(image_config([layer], cmd=["/bin/sh"]))
        cfg["architecture"] = arch
        entries.append(write_image(blobs, [layer], json.dumps(cfg).encode()))
    write_oci_layout(tmp_path / "ml", entries, platforms=[{"os": "linux", "architecture": "arm64"},
                                                          {"os": "linux", "architecture": "amd64"}])
    ref = f"{registry.address}/default/multiarch:1"
    await push_layout(tmp_path / "ml", ref, password=registry.admin_token)
    async with ImageService(data_dir, keychain=registry.keychain()) as svc:
        image = await svc.ensure_image(ref)
        assert image.digest == entries[1][0] and image.index_digest
        assert image.config.architecture == "amd64"
        assert (await svc.ensure_image(f"{registry.address}/default/multiarch@{image.index_digest}",
                                       pull_policy="Never")).digest == image.digest
    root = _extract(image.disk_path, tmp_path / "x")
    assert (root / "arch").read_text() == "amd64"


async def test_docker_hub_names_come_from_the_mirror(registry: RunningRegistry, busybox_layout: Path,
                                                     data_dir: Path) -> None:
    await push_layout(busybox_layout, f"{registry.address}/library/busybox:latest", password=registry.admin_token)
    mirrors = default_mirrors(registry.address)
    async with ImageService(data_dir, mirrors=mirrors, keychain=registry.keychain("node")) as svc:
        image = await svc.ensure_image("busybox")
        assert image.names == ("docker.io/library/busybox:latest",)


async def test_gc_never_removes_an_image_in_use(registry: RunningRegistry, busybox_layout: Path, data_dir: Path,
                                                tmp_path: Path) -> None:
    a, b = f"{registry.address}/default/gc-a:1", f"{registry.address}/default/gc-b:1"
    await push_layout(busybox_layout, a, password=registry.admin_token)
    await push_layout(build_layout(tmp_path / "b", [tar_entries([TarEntry("b", data=b"b")])]), b,
                      password=registry.admin_token)
    full = (100 << 30, 99 << 30)          # what the disk reports: 99% used
    async with ImageService(data_dir, keychain=registry.keychain()) as svc:
        ia, ib = await svc.ensure_image(a), await svc.ensure_image(b)
        svc.mark_in_use(ia.digest, "pod-uid-1")
        untouched = await svc.gc(usage=lambda: (100 << 30, 10 << 30), min_age=0)   # disk not short: nothing
        assert untouched.removed_images == []
        report = await svc.gc(usage=lambda: full, min_age=0)
        assert report.removed_images == [ib.digest] and ia.digest in report.skipped_in_use
        assert [i.digest for i in svc.list()] == [ia.digest]
        with pytest.raises(ImageInUseError):
            await svc.remove(a)
        svc.release(ia.digest, "pod-uid-1")
        recent = await svc.gc(usage=lambda: full, min_age=3600)      # used just now: too young to go
        assert recent.removed_images == []
        await svc.gc(usage=lambda: full, min_age=0)
        assert svc.list() == []
    assert not list((data_dir / "images" / "blobs" / "sha256").iterdir())


async def test_a_crashed_build_leaves_nothing_usable(data_dir: Path) -> None:
    images = data_dir / "images"
    half = images / "tmp" / "stage-999999-deadbeef" / "image"      # a dead process's build
    half.mkdir(parents=True)
    (half / "disk.img").write_bytes(b"\0" * 4096)
    torn = images / "disks" / "sha256" / ("b" * 64)               # a directory without image.json
    torn.mkdir(parents=True)
    async with ImageService(data_dir) as svc:
        assert svc.list() == []
        assert svc.lookup(f"127.0.0.1:1/x/y@sha256:{'b' * 64}") is None
    assert not (images / "tmp" / "stage-999999-deadbeef").exists()
