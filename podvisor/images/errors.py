"""The image service's errors, each carrying the Kubernetes reason a pod shows for it.

    ImageError                       reason
    ├── InvalidReferenceError        InvalidImageName
    ├── ImageNeverPullError          ErrImageNeverPull   (policy Never, not cached)
    ├── ImagePullError               ErrImagePull
    │   ├── RegistryUnauthorizedError   (401/403: wrong or missing credentials)
    │   ├── ManifestUnknownError        (404: no such repository, tag or digest)
    │   ├── DigestMismatchError         (a blob or manifest does not hash to its digest)
    │   └── UnsupportedImageError       (no linux/amd64, unknown media type or compression)
    ├── UnsafeLayerError             ErrImagePull        (path traversal, links escaping the root)
    ├── StagingError                 ErrImagePull        (the disk image could not be built)
    └── ImageInUseError              (remove/GC refused: a pod uses it)
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "ImageError",
    "InvalidReferenceError",
    "ImageNeverPullError",
    "ImagePullError",
    "RegistryUnauthorizedError",
    "ManifestUnknownError",
    "DigestMismatchError",
    "UnsupportedImageError",
    "UnsafeLayerError",
    "StagingError",
    "ImageInUseError",
    "ImageNotFoundError",
]


class ImageError(Exception):
    reason: ClassVar[str] = "ErrImagePull"


class InvalidReferenceError(ImageError):
    reason = "InvalidImageName"


class ImageNeverPullError(ImageError):
    reason = "ErrImageNeverPull"


class ImagePullError(ImageError):
    reason = "ErrImagePull"


class RegistryUnauthorizedError(ImagePullError):
    pass


class ManifestUnknownError(ImagePullError):
    pass


class DigestMismatchError(ImagePullError):
    pass


class UnsupportedImageError(ImagePullError):
    pass


class UnsafeLayerError(ImageError):
    pass


class StagingError(ImageError):
    pass


class ImageInUseError(ImageError):
    reason = "ImageInUse"


class ImageNotFoundError(ImageError):
    reason = "ImageNotFound"
