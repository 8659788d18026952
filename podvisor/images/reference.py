"""Image references with Docker's defaults: ``busybox`` is ``docker.io/library/busybox:latest``.

The first path component is a registry host when it contains ``.`` or ``:`` or is ``localhost``;
otherwise the image lives on Docker Hub, and a single-component name goes under ``library/``.
A reference may carry a tag, a digest or both (then the digest wins when pulling; the tag is kept
for display).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from podvisor.images.errors import InvalidReferenceError

__all__ = ["Reference", "parse_reference", "DOCKER_HUB", "DOCKER_HUB_API"]

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}$")


@dataclass(frozen=True, slots=True)
class Reference:
    registry: str          # "docker.io", "127.0.0.1:5000"
    repository: str        # "library/busybox", "default/bbox"
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}"

    @property
    def reference(self) -> str:
        """What goes after ``/manifests/``: the digest if known, else the tag."""
        return self.digest or self.tag or "latest"

    def with_digest(self, digest: str) -> Reference:
        return Reference(self.registry, self.repository, self.tag, digest)

    def __str__(self) -> str:
        out = self.name
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out

    @property
    def familiar(self) -> str:
        """The short form people type (``busybox:latest``, ``127.0.0.1:5000/default/bbox:1``)."""
        name = self.repository
        if self.registry != DOCKER_HUB:
            name = f"{self.registry}/{name}"
        elif name.startswith("library/"):
            name = name[len("library/"):]
        return name + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")


def parse_reference(text: str, *, default_registry: str = DOCKER_HUB) -> Reference:
    """Parse and normalise ``[registry/]name[:tag][@digest]``; a bare name gets tag ``latest``."""
    raw = text.strip()
    if not raw or raw != text or any(c.isspace() for c in raw):
        raise InvalidReferenceError(f"invalid image reference {text!r}")
    name, _, digest = raw.partition("@")
    if digest and not _DIGEST.match(digest):
        raise InvalidReferenceError(f"invalid digest in image reference {text!r}")
    tag: str | None = None
    last_slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > last_slash:
        name, tag = name[:colon], name[colon + 1:]
        if not _TAG.match(tag):
            raise InvalidReferenceError(f"invalid tag in image reference {text!r}")
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        registry, path = first, rest
    else:
        registry, path = default_registry, name
    if registry in ("index.docker.io", "registry-1.docker.io"):
        registry = DOCKER_HUB
    if registry == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    if not path or any(not _COMPONENT.match(part) for part in path.split("/")):
        raise InvalidReferenceError(f"invalid repository name in image reference {text!r} "
                                    "(lower-case letters, digits and separators only)")
    if tag is None and not digest:
        tag = "latest"
    return Reference(registry, path, tag, digest or None)
