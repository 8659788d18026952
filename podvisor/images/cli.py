"""`podvisor image push | pull | ls | rm | gc`: the host's image cache and the embedded registry.

``push SOURCE TARGET``: TARGET ``<namespace>/<repo>:<tag>`` goes to the embedded registry of the data
dir (with its admin credential); a reference naming a registry host goes there (credentials from
``--username``/``--password`` or the docker config). ``pull`` stages an image into the host's cache
exactly as a pod would get it (policy Always by default); ``docker.io`` images come from the embedded
registry unless ``--registry-mirror`` says otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO

from podvisor.images.auth import Credential, Keychain
from podvisor.images.disk import DEFAULT_FS, FS_TYPES
from podvisor.images.errors import ImageError
from podvisor.images.local import (
    default_data_dir,
    docker_config_keychain,
    local_keychain,
    local_registry_address,
)
from podvisor.images.mirrors import default_mirrors
from podvisor.images.reference import Reference, parse_reference
from podvisor.images.sources import ImageSettings, load_source, parse_command
from podvisor.images.store import StagedImage

__all__ = ["register", "ByteProgress"]


def register(sub: Any) -> None:
    p = sub.add_parser("image", help="push images to the registry, manage this host's image cache")
    isub = p.add_subparsers(dest="image_command", metavar="COMMAND")

    push = isub.add_parser("push", help="push a root file system, OCI layout or docker archive to a registry")
    _data_dir(push)
    push.add_argument("source", type=Path, help="rootfs directory or tarball, OCI layout (dir or tar), docker archive")
    push.add_argument("target", help="<namespace>/<repo>:<tag> in the embedded registry, or a full reference")
    push.add_argument("--cmd", help='command for a rootfs image: "sh -c \'...\'" or JSON ["sh","-c","..."]')
    push.add_argument("--entrypoint", help="entrypoint for a rootfs image (same forms as --cmd)")
    push.add_argument("--env", action="append", default=[], metavar="K=V", help="environment variable (repeatable)")
    push.add_argument("--workdir", default="", help="working directory for a rootfs image")
    push.add_argument("--user", default="", help="user for a rootfs image (uid[:gid] or name)")
    _credentials(push)
    push.add_argument("--chunk-size", type=int, default=16, metavar="MiB", help="upload blobs above this in chunks")
    push.set_defaults(func=cmd_push)

    pull = isub.add_parser("pull", help="pull and stage an image into this host's cache")
    _data_dir(pull)
    pull.add_argument("image", help="image reference (busybox, REGISTRY/ns/repo:tag, ...@sha256:...)")
    pull.add_argument("--policy", choices=("Always", "IfNotPresent", "Never"), default="Always")
    pull.add_argument("--fs", choices=FS_TYPES, default=DEFAULT_FS, help="disk image file system")
    pull.add_argument("--registry-mirror", action="append", default=[], metavar="REGISTRY=URL",
                      help="pull REGISTRY's images from URL (default: docker.io from the embedded registry)")
    pull.add_argument("--pull-secret", action="append", default=[], type=Path, metavar="FILE",
                      help="a .dockerconfigjson file (repeatable)")
    _credentials(pull)
    pull.set_defaults(func=cmd_pull)

    ls = isub.add_parser("ls", help="list this host's staged images")
    _data_dir(ls)
    ls.add_argument("--json", action="store_true", help="one JSON object per image")
    ls.set_defaults(func=cmd_ls)

    rm = isub.add_parser("rm", help="remove images from this host's cache")
    _data_dir(rm)
    rm.add_argument("images", nargs="+", help="names or digests")
    rm.add_argument("--force", action="store_true", help="remove even if a pod uses it")
    rm.set_defaults(func=cmd_rm)

    gc = isub.add_parser("gc", help="remove unused images when the disk is fuller than --high percent")
    _data_dir(gc)
    gc.add_argument("--high", type=float, default=85.0)
    gc.add_argument("--low", type=float, default=80.0)
    gc.add_argument("--min-age", type=float, default=120.0, metavar="SECONDS")
    gc.set_defaults(func=cmd_gc)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", type=Path, default=None,
                   help=f"Podvisor data directory (default {default_data_dir()})")


def _credentials(p: argparse.ArgumentParser) -> None:
    p.add_argument("--username", default="", help="registry user (default: the data dir's admin credential)")
    p.add_argument("--password", default="", help="registry password or token (or $PODVISOR_REGISTRY_PASSWORD)")


def _dir(args: argparse.Namespace) -> Path:
    return Path(args.data_dir) if args.data_dir else default_data_dir()


def _keychain(args: argparse.Namespace, data_dir: Path, registry: str) -> Keychain:
    password = args.password or os.environ.get("PODVISOR_REGISTRY_PASSWORD", "")
    chain = Keychain()
    if args.username or password:
        chain.add(registry, Credential(args.username or "admin", password))
    return chain.merged(local_keychain(data_dir)).merged(docker_config_keychain())


def _target(text: str, data_dir: Path) -> Reference:
    first = text.split("/", 1)[0]
    if "." in first or ":" in first or first == "localhost":
        return parse_reference(text)
    address = local_registry_address(data_dir)
    if not address:
        raise ImageError(f"no embedded registry recorded in {data_dir} (is `podvisor up --data-dir {data_dir}` "
                         "running?); give a full reference REGISTRY/namespace/repo:tag instead")
    ref = parse_reference(f"{address}/{text}")
    if "/" not in ref.repository:
        raise ImageError(f"{text!r}: name the project: <namespace>/<repo>:<tag> (e.g. library/{text})")
    return ref


class ByteProgress:
    """``label: 42% 12.3/29.1 MB`` on one line of stderr, redrawn at most five times a second."""

    def __init__(self, label: str, *, out: TextIO = sys.stderr) -> None:
        self.label, self.out, self._last = label, out, 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self._last < 0.2:
            return
        self._last = now
        pct = 100 if total == 0 else min(100, done * 100 // total)
        self.out.write(f"\r{self.label}: {pct:3d}% {done / 1e6:.1f}/{total / 1e6:.1f} MB")
        if done >= total:
            self.out.write("\n")
        self.out.flush()


def cmd_push(args: argparse.Namespace) -> int:
    return _run(_push(args))


async def _push(args: argparse.Namespace) -> int:
    from podvisor.images.push import PushHistory, push_image

    data_dir = _dir(args)
    target = _target(args.target, data_dir)
    settings = ImageSettings(cmd=parse_command(args.cmd), entrypoint=parse_command(args.entrypoint),
                             env=list(args.env), workdir=args.workdir, user=args.user)
    for item in settings.env:
        if "=" not in item:
            raise ImageError(f"--env wants K=V, got {item!r}")
    keychain = _keychain(args, data_dir, target.registry)
    with tempfile.TemporaryDirectory(prefix="pv-push-") as scratch:
        image = await asyncio.to_thread(load_source, args.source, Path(scratch), settings)
        for note in image.notes:
            print(f"note: {note}", file=sys.stderr)
        history = PushHistory(data_dir / "images" / "pushed.json" if data_dir.exists() else None)
        result = await push_image(image, target, credential=keychain.get(target.registry), history=history,
                                  progress=ByteProgress(f"pushing {target.familiar}"),
                                  chunk_size=max(1, args.chunk_size) << 20)
    print(f"pushed {target} {result.digest} ({image.kind}; {result.uploaded} uploaded, {result.mounted} mounted, "
          f"{result.skipped} already there)")
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    return _run(_pull(args))


async def _pull(args: argparse.Namespace) -> int:
    from podvisor.images.service import ImageService, PullEvent

    data_dir = _dir(args)
    ref = parse_reference(args.image)
    mirrors = default_mirrors(local_registry_address(data_dir), args.registry_mirror)
    keychain = _keychain(args, data_dir, ref.registry)
    for path in args.pull_secret:
        keychain = Keychain.from_file(path).merged(keychain)
    bar = ByteProgress(f"pulling {ref.familiar}")

    def progress(ev: PullEvent) -> None:
        if ev.phase == "downloading":
            bar(ev.done, ev.total)
        elif ev.phase in ("unpacking",):
            print(f"staging {ref.familiar} ({args.fs} disk)", file=sys.stderr)

    async with ImageService(data_dir, mirrors=mirrors, keychain=keychain, fs_type=args.fs) as service:
        image = await service.ensure_image(args.image, pull_policy=args.policy, progress=progress)
    state = f"pulled in {image.pull_seconds:.2f}s" if image.pulled else "already present"
    print(f"{ref} {image.digest} {state}: {image.fs_type} disk {image.disk_size / 1e6:.1f} MB at {image.disk_path}")
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    from podvisor.images.store import ImageStore

    root = _dir(args) / "images"
    images = ImageStore(root).images() if root.exists() else []
    store = ImageStore(root) if root.exists() else None
    if args.json:
        for img in images:
            print(json.dumps(_row_json(img, store.leases(img.digest) if store else [])))
        return 0
    rows = [("NAME", "DIGEST", "FS", "DISK", "LAST USED", "IN USE")]
    for img in images:
        names = img.names or ("<none>",)
        used = len(store.leases(img.digest)) if store else 0
        for name in names:
            rows.append((name, img.digest[:19], img.fs_type, f"{img.disk_size / 1e6:.1f}MB",
                         _ago(img.last_used), str(used) if used else "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    return _run(_rm(args))


async def _rm(args: argparse.Namespace) -> int:
    from podvisor.images.service import ImageService

    code = 0
    async with ImageService(_dir(args)) as service:
        for item in args.images:
            try:
                removed = await service.remove(item, force=args.force)
                print(f"removed {item}" + (f" ({', '.join(removed)})" if removed else " (name only)"))
            except ImageError as exc:
                print(f"error: {exc}", file=sys.stderr)
                code = 1
    return code


def cmd_gc(args: argparse.Namespace) -> int:
    return _run(_gc(args))


async def _gc(args: argparse.Namespace) -> int:
    from podvisor.images.service import ImageService

    async with ImageService(_dir(args)) as service:
        report = await service.gc(high_percent=args.high, low_percent=args.low, min_age=args.min_age)
    print(f"removed {len(report.removed_images)} images and {report.removed_blobs} blobs, "
          f"freed {report.freed_bytes / 1e6:.1f} MB; kept {len(report.skipped_in_use)} in use")
    return 0


def _run(coro: Any) -> int:
    try:
        return int(asyncio.run(coro))
    except ImageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _row_json(img: StagedImage, leases: list[str]) -> dict[str, Any]:
    return {"names": list(img.names), "digest": img.digest, "fs_type": img.fs_type, "disk": str(img.disk_path),
            "disk_size": img.disk_size, "download_size": img.download_size, "last_used": img.last_used,
            "in_use_by": leases, "config": img.config.to_json()}


def _ago(ts: float) -> str:
    if not ts:
        return "-"
    delta = max(0, time.time() - ts)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if delta >= size:
            return f"{int(delta // size)}{unit} ago"
    return f"{int(delta)}s ago"
