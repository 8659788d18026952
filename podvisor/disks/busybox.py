"""A minimal container image disk made from the host's busybox-static, for tests and `podvisor bench vm`.

Real pods get image disks from the image service (`podvisor.images`); this is the smallest thing that
looks like one: an ext4 image whose root holds /bin/busybox, its applet links, /etc/passwd and /etc/group.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from podvisor.disks.ephemeral import DiskError, ext4_image_from_dir

__all__ = ["make_busybox_image", "busybox_rootfs", "BUSYBOX_APPLETS"]

BUSYBOX_APPLETS = ("sh", "echo", "cat", "ls", "sleep", "id", "env", "ps", "mount", "hostname", "true", "false",
                   "wget", "httpd", "nc", "uname", "tty", "stty", "head", "tail", "dd", "mkdir", "rm", "touch",
                   "grep", "wc", "pwd", "test", "kill", "df", "du", "yes", "whoami", "stat", "date", "printf", "seq")


def busybox_rootfs(root: Path, *, busybox: Path = Path("/bin/busybox")) -> Path:
    if not busybox.exists():
        raise DiskError(f"{busybox} is missing: install busybox-static")
    for d in ("bin", "etc", "tmp", "root", "proc", "sys", "dev", "home"):
        (root / d).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "tmp", 0o1777)
    shutil.copy2(busybox, root / "bin" / "busybox")
    for applet in BUSYBOX_APPLETS:
        link = root / "bin" / applet
        if not link.exists():
            os.symlink("busybox", link)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n"
                                         "nobody:x:65534:65534:nobody:/home:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    return root


async def make_busybox_image(path: Path) -> Path:
    """An ext4 image disk at ``path`` holding a busybox root file system (made if missing)."""
    if _exists(path):
        return path
    with tempfile.TemporaryDirectory(prefix="pv-busybox-") as tmp:
        root = busybox_rootfs(Path(tmp) / "rootfs")
        return await ext4_image_from_dir(root, path, label="busybox")


def _exists(path: Path) -> bool:
    return path.exists()
