"""Per-pod disks: the ephemeral disk (sparse ext4 image, deleted with the pod) and helpers to read it."""

from podvisor.disks.busybox import busybox_rootfs, make_busybox_image
from podvisor.disks.ephemeral import (
    DEFAULT_EPHEMERAL_BYTES,
    DiskError,
    DiskFileNotFound,
    create_ephemeral_disk,
    delete_disk,
    disk_usage,
    ext4_image_from_dir,
    read_disk_file,
)

__all__ = [
    "busybox_rootfs",
    "make_busybox_image",
    "DEFAULT_EPHEMERAL_BYTES",
    "DiskError",
    "DiskFileNotFound",
    "create_ephemeral_disk",
    "delete_disk",
    "disk_usage",
    "ext4_image_from_dir",
    "read_disk_file",
]
