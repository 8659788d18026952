"""Builders of the local test images every test suite shares (no internet: made from Debian's busybox).

    busybox_rootfs(dir) -> Path            a root file system: /bin/busybox + applet links, /www/index.html
    build_busybox_layout(dir) -> Path      that root as a one-layer OCI image layout (cmd /bin/sh)
    build_httpd_layout(dir) -> Path        a tiny static HTTP server image (busybox httpd on :80 serving /www)
    build_multilayer_layout(dir) -> Path   a shell image in 3 layers with a whiteout and an opaque directory;
                                           MULTILAYER_PRESENT / MULTILAYER_ABSENT say what its root must show
    build_layout(dir, layers, ...) -> Path an OCI layout from layer tars (bytes, e.g. from `tar_entries`) or
                                           root directories
    push_layout(layout, ref, ...)          push any of these with Podvisor's own push code

The layouts can be pushed with ``podvisor image push LAYOUT ns/repo:tag`` as well.
"""

from __future__ import annotations

import io
import shutil
from collections.abc import Sequence
from pathlib import Path

from podvisor.images.auth import Credential
from podvisor.images.build import (
    BlobDir,
    BuiltLayer,
    TarEntry,
    image_config,
    layer_from_directory,
    layer_from_tar,
    tar_entries,
    write_image,
    write_oci_layout,
)
from podvisor.images.push import PushResult, push_image
from podvisor.images.reference import parse_reference
from podvisor.images.sources import load_source

__all__ = [
    "BUSYBOX", "APPLETS", "busybox_rootfs", "httpd_rootfs", "build_layout", "build_busybox_layout",
    "build_httpd_layout", "build_multilayer_layout", "multilayer_layers", "MULTILAYER_PRESENT", "MULTILAYER_ABSENT",
    "push_layout", "TarEntry", "tar_entries",
]

BUSYBOX = Path("/bin/busybox")
APPLETS = ("sh", "echo", "cat", "ls", "sleep", "httpd", "wget", "env", "id", "hostname", "nslookup", "uname", "tar",
           "test", "true", "tty", "ps", "mount")


def busybox_rootfs(directory: Path) -> Path:
    """A tiny root file system from Debian's busybox-static (as the acceptance scripts make it)."""
    root = Path(directory)
    for sub in ("bin", "tmp", "etc", "www"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    for applet in APPLETS:
        link = root / "bin" / applet
        if not link.is_symlink():
            link.symlink_to("busybox")
    (root / "tmp").chmod(0o1777)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n")
    (root / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    (root / "www" / "index.html").write_text("hello from podvisor\n")
    return root


def httpd_rootfs(directory: Path) -> Path:
    root = busybox_rootfs(directory)
    (root / "www" / "health").write_text("ok\n")
    return root


def build_layout(directory: Path, layers: Sequence[bytes | Path], *, cmd: Sequence[str] = ("/bin/sh",),
                 entrypoint: Sequence[str] = (), env: Sequence[str] = (), workdir: str = "",
                 exposed_ports: Sequence[str] = (), compression: str = "gzip", tag: str = "latest") -> Path:
    """An OCI image layout at ``directory`` from layers given as uncompressed tar bytes or directories."""
    layout = Path(directory)
    blobs = BlobDir(layout / "blobs" / "sha256")
    built: list[BuiltLayer] = []
    for layer in layers:
        if isinstance(layer, bytes):
            built.append(layer_from_tar(blobs, io.BytesIO(layer), compression=compression))
        else:
            built.append(layer_from_directory(blobs, layer, compression=compression))
    config = image_config(built, cmd=cmd, entrypoint=entrypoint, env=env, workdir=workdir,
                          exposed_ports=exposed_ports)
    digest, body = write_image(blobs, built, config)
    return write_oci_layout(layout, [(digest, body)], tag=tag)


def build_busybox_layout(directory: Path, *, cmd: Sequence[str] = ("/bin/sh",), compression: str = "gzip") -> Path:
    directory = Path(directory)
    root = busybox_rootfs(directory.with_name(directory.name + "-rootfs"))
    return build_layout(directory, [root], cmd=cmd, compression=compression)


def build_httpd_layout(directory: Path, *, port: int = 80) -> Path:
    directory = Path(directory)
    root = httpd_rootfs(directory.with_name(directory.name + "-rootfs"))
    return build_layout(directory, [root], cmd=("/bin/httpd", "-f", "-v", "-p", str(port), "-h", "/www"),
                        exposed_ports=(f"{port}/tcp",))


# What the multi-layer image's merged root shows (path -> content, or None for "exists")...
MULTILAYER_PRESENT: dict[str, str | None] = {
    "bin/busybox": None,
    "etc/motd": "layer three\n",              # overwritten by a later layer
    "data/keep.txt": "kept\n",
    "data/new.txt": "added in layer 3\n",
    "cache/fresh.txt": "after the opaque marker\n",
    "data/hard.txt": "kept\n",               # a hard link to keep.txt
    "data/link": None,                      # a symlink to keep.txt
}
# ...and what its whiteouts removed.
MULTILAYER_ABSENT = ("data/remove-me.txt", "cache/old1.txt", "cache/old2.txt", "gone")


def multilayer_layers(busybox_root: Path) -> list[bytes | Path]:
    """Layer 1: busybox. Layer 2: files to keep and to delete. Layer 3: whiteouts, an opaque dir, changes."""
    layer2 = tar_entries([
        TarEntry("etc/motd", data=b"layer two\n"),
        TarEntry("data", kind="dir", mode=0o755),
        TarEntry("data/keep.txt", data=b"kept\n", mode=0o640, uid=1000, gid=1000),
        TarEntry("data/remove-me.txt", data=b"to be whited out\n"),
        TarEntry("data/hard.txt", kind="hardlink", target="data/keep.txt"),
        TarEntry("data/link", kind="symlink", target="keep.txt"),
        TarEntry("cache", kind="dir", mode=0o755),
        TarEntry("cache/old1.txt", data=b"old\n"),
        TarEntry("cache/old2.txt", data=b"old\n"),
        TarEntry("gone", kind="dir"),
        TarEntry("gone/inside", data=b"x\n"),
    ])
    layer3 = tar_entries([
        TarEntry("etc/motd", data=b"layer three\n"),
        TarEntry("data/.wh.remove-me.txt"),
        TarEntry("data/new.txt", data=b"added in layer 3\n"),
        TarEntry("cache/fresh.txt", data=b"after the opaque marker\n"),   # same layer: kept despite .opq after it
        TarEntry("cache/.wh..wh..opq"),
        TarEntry(".wh.gone"),
    ])
    return [busybox_root, layer2, layer3]


def build_multilayer_layout(directory: Path, *, compression: str = "gzip") -> Path:
    directory = Path(directory)
    root = busybox_rootfs(directory.with_name(directory.name + "-rootfs"))
    return build_layout(directory, multilayer_layers(root), cmd=("/bin/sh", "-c", "cat /etc/motd"),
                        compression=compression)


async def push_layout(layout: Path, reference: str, *, username: str = "admin", password: str = "",
                      scratch: Path | None = None) -> PushResult:
    """Push an OCI layout (or any push source) to ``reference`` with Podvisor's own push code."""
    image = load_source(Path(layout), scratch or Path(layout).with_name(Path(layout).name + "-push"))
    cred = Credential(username, password) if (username or password) else None
    return await push_image(image, parse_reference(reference), credential=cred)
