"""`podvisor bench images`: pull and stage a generated image from the embedded registry, against plain tools.

The image (``--size-mb`` in ``--layers`` layers; half the bytes in many small files, half in a few big
ones, half-compressible content) is pushed to a real `docker-registry` behind our token service, started
for the run. Then, on the same blobs and in the same run:

- ours: `ImageService` pulls (token flow, digest checks) and stages: layers applied with whiteout rules
  and path checks, diff_ids verified, the disk built with the default file system;
- plain: ``tar -xzf`` of each layer blob in order, then ``mkfs.erofs`` and ``mkfs.ext4 -d`` of the tree
  (both file systems are measured: this is how the default was picked).

Headline ``ratio``: our staging time (unpack + disk build) over plain ``tar -x`` + ``mkfs`` of the same
file system. Also: MB/s of download, unpack and disk build, and the time to hand the same image to a
second pod (a cache hit).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from podvisor.bench.report import Progress, print_table

__all__ = ["HELP", "add_arguments", "run", "generate_tree"]

HELP = "pull + stage a generated image from the local registry vs tar -x + mkfs"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size-mb", type=int, default=200, help="uncompressed image size (default 200)")
    parser.add_argument("--layers", type=int, default=5, help="number of layers (default 5)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each side; the median is reported")
    parser.add_argument("--fs", choices=("erofs", "ext4"), default=None, help="disk file system (default: ours)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")


def generate_tree(root: Path, size_bytes: int, *, seed: int) -> int:
    """Write ``size_bytes`` of files under ``root``: half in 1-16 KiB files, half in 256 KiB-2 MiB ones,
    content half random, half repetitive (compresses about 2:1). Returns the number of files."""
    rng = random.Random(seed)
    filler = b"podvisor pod VM image layer content " * 2048
    written = files = 0
    small_budget = size_bytes // 2
    while written < size_bytes:
        small = written < small_budget
        size = rng.randint(1024, 16384) if small else rng.randint(256 << 10, 2 << 20)
        size = min(size, size_bytes - written) or 1
        d = root / f"d{files // 200:04d}" / f"s{(files // 20) % 10}"
        if files % 20 == 0:
            d.mkdir(parents=True, exist_ok=True)
        half = size // 2
        data = rng.randbytes(half) + (filler * (1 + (size - half) // len(filler)))[: size - half]
        (d / f"f{files:06d}.bin").write_bytes(data)
        written += size
        files += 1
    return files


def run(args: argparse.Namespace) -> dict[str, Any]:
    return asyncio.run(_run(args))


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    from podvisor.images.disk import DEFAULT_FS, build_disk

    fs = args.fs or DEFAULT_FS
    scratch = Path(tempfile.mkdtemp(prefix="pv-bench-images-"))
    progress = Progress("bench images", 5 + 2 * args.repeat)
    try:
        registry, ref, layer_paths, files = await _prepare(scratch, args)
        progress.advance()
        try:
            ours: list[dict[str, float]] = []
            plain: list[dict[str, float]] = []
            for i in range(args.repeat):      # interleaved, so both sides see the same machine
                ours.append(await _ours(scratch / f"ours-{i}", registry, ref))
                progress.advance()
                plain.append(await asyncio.to_thread(_plain, scratch / f"plain-{i}", layer_paths, i == 0))
                progress.advance()
            curl = await asyncio.to_thread(_curl_download, scratch / "curl", registry, ref)
            progress.advance()
            # the other file system, built by our builder from the same tree, for the record
            tree = scratch / "plain-tree"
            other = "ext4" if fs == "erofs" else "erofs"
            t = time.perf_counter()
            await build_disk(tree, scratch / f"other.{other}", fs=other, content_bytes=args.size_mb << 20,
                             inodes=files * 2)
            other_s = time.perf_counter() - t
            progress.advance()
        finally:
            await registry.stop()
        progress.advance()
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    progress.advance()

    def med(rows: list[dict[str, float]], key: str) -> float:
        return statistics.median(r[key] for r in rows)

    mb = args.size_mb
    download_mb = med(ours, "download_bytes") / 1e6
    ours_stage = med(ours, "unpack_s") + med(ours, "build_s")
    plain_stage = med(plain, "tar_s") + med(plain, f"mkfs_{fs}_s")
    result: dict[str, Any] = {
        "size_mb": mb, "layers": args.layers, "files": files, "fs": fs,
        "download_mb": round(download_mb, 1),
        "download_mb_s": round(download_mb / med(ours, "download_s"), 1),
        "curl_download_mb_s": round(download_mb / curl, 1) if curl else None,
        "unpack_mb_s": round(mb / med(ours, "unpack_s"), 1),
        "build_mb_s": round(mb / med(ours, "build_s"), 1),
        "ours_stage_s": round(ours_stage, 3),
        "plain_tar_s": round(med(plain, "tar_s"), 3),
        "plain_mkfs_erofs_s": round(med(plain, "mkfs_erofs_s"), 3),
        "plain_mkfs_ext4_s": round(med(plain, "mkfs_ext4_s"), 3),
        "plain_stage_s": round(plain_stage, 3),
        "ours_other_fs_build_s": round(other_s, 3),
        "erofs_size_mb": round(plain[0]["erofs_bytes"] / 1e6, 1),
        "ext4_size_mb": round(plain[0]["ext4_bytes"] / 1e6, 1),
        "pull_total_s": round(med(ours, "total_s"), 3),
        "cache_hit_ms": round(med(ours, "hit_ms"), 2),
        "cache_hit_new_process_ms": round(med(ours, "hit_cold_ms"), 2),
        "ratio": round(ours_stage / plain_stage, 3),
        "ratio_meaning": f"our staging (unpack + {fs} disk) / tar -x + mkfs.{fs} on the same layers; "
                         "lower is better, goal <= 1.2",
    }
    rows = [
        ("download (ours, token flow + sha256)", f"{result['download_mb_s']} MB/s", f"{med(ours, 'download_s'):.3f}s"),
        ("download (curl, same blobs)", f"{result['curl_download_mb_s']} MB/s", f"{curl:.3f}s"),
        ("unpack (ours)", f"{result['unpack_mb_s']} MB/s", f"{med(ours, 'unpack_s'):.3f}s"),
        ("unpack (tar -xzf)", f"{round(mb / med(plain, 'tar_s'), 1)} MB/s", f"{med(plain, 'tar_s'):.3f}s"),
        (f"disk build (ours, {fs})", f"{result['build_mb_s']} MB/s", f"{med(ours, 'build_s'):.3f}s"),
        ("mkfs.erofs (plain)", f"{round(mb / med(plain, 'mkfs_erofs_s'), 1)} MB/s",
         f"{med(plain, 'mkfs_erofs_s'):.3f}s  {result['erofs_size_mb']} MB image"),
        ("mkfs.ext4 -d (plain)", f"{round(mb / med(plain, 'mkfs_ext4_s'), 1)} MB/s",
         f"{med(plain, 'mkfs_ext4_s'):.3f}s  {result['ext4_size_mb']} MB image"),
        ("staging: ours / plain", f"{result['ratio']:.3f}x", f"{ours_stage:.3f}s / {plain_stage:.3f}s"),
        ("second pod, same image (cache hit)", f"{result['cache_hit_ms']} ms",
         f"{result['cache_hit_new_process_ms']} ms from a fresh service"),
    ]
    print_table(f"podvisor bench images: {mb} MB in {args.layers} layers, {files} files", ("phase", "speed", "time"),
                rows)
    return result


async def _prepare(scratch: Path, args: argparse.Namespace) -> tuple[Any, str, list[Path], int]:
    from podvisor.images.build import (
        BlobDir,
        image_config,
        layer_from_directory,
        write_image,
        write_oci_layout,
    )
    from podvisor.images.push import push_image
    from podvisor.images.reference import parse_reference
    from podvisor.images.sources import load_source
    from podvisor.registry.component import EmbeddedRegistry

    reg_dir = scratch / "registry-data"
    (reg_dir / "pki").mkdir(parents=True)
    token = secrets.token_hex(16)
    (reg_dir / "pki" / "admin-token").write_text(token)
    registry = EmbeddedRegistry(reg_dir, port=_free_port())
    await registry.start()
    layout = scratch / "layout"
    blobs = BlobDir(layout / "blobs" / "sha256")
    per_layer = (args.size_mb << 20) // max(1, args.layers)
    built, files = [], 0
    for i in range(args.layers):
        tree = scratch / f"gen-{i}"
        files += await asyncio.to_thread(generate_tree, tree / f"layer{i}", per_layer, seed=i)
        built.append(await asyncio.to_thread(layer_from_directory, blobs, tree))
        await asyncio.to_thread(shutil.rmtree, tree)
    digest, body = write_image(blobs, built, image_config(built, cmd=["/bin/sh"]))
    write_oci_layout(layout, [(digest, body)])
    ref = f"{registry.address}/library/bench:1"
    from podvisor.images.auth import Credential

    image = await asyncio.to_thread(load_source, layout, scratch / "push-scratch")
    await push_image(image, parse_reference(ref), credential=Credential("admin", token))
    registry.bench_token = token  # type: ignore[attr-defined]
    return registry, ref, [blobs.file(layer.digest) for layer in built], files


async def _ours(data_dir: Path, registry: Any, ref: str) -> dict[str, float]:
    from podvisor.images.auth import Credential, Keychain
    from podvisor.images.reference import parse_reference
    from podvisor.images.service import ImageService

    keychain = Keychain({registry.address: Credential("admin", registry.bench_token)})
    async with ImageService(data_dir, keychain=keychain) as svc:
        t0 = time.perf_counter()
        resolved = await svc.puller.resolve(parse_reference(ref))
        await svc.puller.fetch(resolved)
        t1 = time.perf_counter()
        image = await svc.ensure_image(ref, pull_policy="IfNotPresent")
        t2 = time.perf_counter()
        assert svc.last_timings is not None
        timings = svc.last_timings
        h0 = time.perf_counter()
        hit = await svc.ensure_image(ref, pull_policy="IfNotPresent")
        h1 = time.perf_counter()
        assert not hit.pulled
    async with ImageService(data_dir, keychain=keychain) as fresh:
        c0 = time.perf_counter()
        await fresh.ensure_image(ref, pull_policy="IfNotPresent")
        c1 = time.perf_counter()
    return {"download_s": t1 - t0, "download_bytes": float(resolved.download_size), "unpack_s": timings.unpack_seconds,
            "build_s": timings.build_seconds, "total_s": t2 - t0, "hit_ms": (h1 - h0) * 1000,
            "hit_cold_ms": (c1 - c0) * 1000, "disk_bytes": float(image.disk_size)}


def _plain(work: Path, layers: list[Path], keep_tree: bool) -> dict[str, float]:
    tree = work / "tree"
    tree.mkdir(parents=True)
    t0 = time.perf_counter()
    for layer in layers:
        subprocess.run(["tar", "-xzf", str(layer), "-C", str(tree), "--numeric-owner"], check=True)
    t1 = time.perf_counter()
    subprocess.run(["mkfs.erofs", "--quiet", str(work / "plain.erofs"), str(tree)], check=True,
                   stdout=subprocess.DEVNULL)
    t2 = time.perf_counter()
    size = sum(f.stat().st_size for f in tree.rglob("*") if f.is_file())
    from podvisor.images.disk import estimate_ext4_bytes

    ext4_bytes = estimate_ext4_bytes(size, sum(1 for _ in tree.rglob("*")) + 16)
    t3 = time.perf_counter()
    subprocess.run(["mkfs.ext4", "-q", "-F", "-b", "4096", "-m", "0", "-O", "^has_journal,^resize_inode",
                    "-E", "lazy_itable_init=0", "-d", str(tree), str(work / "plain.ext4"), f"{ext4_bytes // 1024}k"],
                   check=True, stdout=subprocess.DEVNULL)
    t4 = time.perf_counter()
    out = {"tar_s": t1 - t0, "mkfs_erofs_s": t2 - t1, "mkfs_ext4_s": t4 - t3,
           "erofs_bytes": float(os.stat(work / "plain.erofs").st_size), "ext4_bytes": float(_used(work / "plain.ext4"))}
    if keep_tree:
        os.replace(tree, work.parent / "plain-tree")
    shutil.rmtree(work, ignore_errors=True)
    return out


def _used(path: Path) -> int:
    return os.stat(path).st_blocks * 512


def _curl_download(work: Path, registry: Any, ref: str) -> float:
    """The same blobs fetched by curl with a bearer token: the transport's ceiling."""
    import json
    import urllib.request

    work.mkdir(parents=True)
    repo = ref.split("/", 1)[1].rsplit(":", 1)[0]
    realm = registry.token_realm + f"?service=podvisor-registry&scope=repository:{repo}:pull"
    req = urllib.request.Request(realm)
    import base64

    req.add_header("Authorization", "Basic " + base64.b64encode(f"admin:{registry.bench_token}".encode()).decode())
    with urllib.request.urlopen(req) as resp:  # noqa: S310 - loopback token service
        token = json.loads(resp.read())["token"]
    mreq = urllib.request.Request(f"http://{registry.address}/v2/{repo}/manifests/1")
    mreq.add_header("Authorization", f"Bearer {token}")
    mreq.add_header("Accept", "application/vnd.oci.image.manifest.v1+json")
    with urllib.request.urlopen(mreq) as resp:  # noqa: S310
        manifest = json.loads(resp.read())
    digests = [manifest["config"]["digest"]] + [layer["digest"] for layer in manifest["layers"]]
    t0 = time.perf_counter()
    for i, digest in enumerate(digests):
        subprocess.run(["curl", "-sf", "-L", "-H", f"Authorization: Bearer {token}", "-o", str(work / f"b{i}"),
                        f"http://{registry.address}/v2/{repo}/blobs/{digest}"], check=True)
    return time.perf_counter() - t0


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
