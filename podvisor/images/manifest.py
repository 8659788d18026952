"""OCI and Docker schema2 manifests, indexes and image configs: just the fields we act on.

A registry answers a tag with either an image manifest (config + layers) or a list of them per
platform (Docker manifest list / OCI index); we pick ``linux/amd64`` (any variant) from the latter.
Layer media types tell the compression: gzip, zstd, or none; foreign ("non-distributable") layers with
URLs are refused, since an offline host cannot fetch them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from podvisor.images.errors import DigestMismatchError, UnsupportedImageError

__all__ = [
    "Descriptor", "ImageManifest", "ImageIndex", "ImageConfig", "parse_manifest", "sha256_digest",
    "verify_digest", "layer_compression", "MANIFEST_ACCEPT", "OCI_MANIFEST", "OCI_INDEX", "DOCKER_MANIFEST",
    "DOCKER_LIST", "OCI_CONFIG", "DOCKER_CONFIG", "OCI_LAYER_GZIP", "OCI_LAYER", "OCI_LAYER_ZSTD",
    "DOCKER_LAYER_GZIP", "PLATFORM",
]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
MANIFEST_ACCEPT = ", ".join([OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST])
PLATFORM = ("linux", "amd64")

_COMPRESSION = {
    OCI_LAYER: "none", DOCKER_LAYER: "none",
    OCI_LAYER_GZIP: "gzip", DOCKER_LAYER_GZIP: "gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": "gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": "gzip",
    OCI_LAYER_ZSTD: "zstd",
}


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def verify_digest(data: bytes, digest: str, *, what: str) -> None:
    algo, _, want = digest.partition(":")
    if algo not in ("sha256", "sha512"):
        raise UnsupportedImageError(f"{what}: unsupported digest algorithm {algo!r}")
    got = hashlib.new(algo, data).hexdigest()
    if got != want:
        raise DigestMismatchError(f"{what}: content is {algo}:{got}, expected {digest}")


def layer_compression(media_type: str) -> str:
    try:
        return _COMPRESSION[media_type]
    except KeyError:
        raise UnsupportedImageError(f"unsupported layer media type {media_type!r}") from None


@dataclass(frozen=True, slots=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: dict[str, Any] = field(default_factory=dict)
    urls: tuple[str, ...] = ()
    annotations: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Descriptor:
        try:
            return cls(str(obj["mediaType"]), str(obj["digest"]), int(obj["size"]), dict(obj.get("platform") or {}),
                       tuple(obj.get("urls") or ()), dict(obj.get("annotations") or {}))
        except (KeyError, TypeError, ValueError) as exc:
            raise UnsupportedImageError(f"malformed descriptor: {exc}") from None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.platform:
            out["platform"] = self.platform
        if self.annotations:
            out["annotations"] = self.annotations
        return out


@dataclass(frozen=True, slots=True)
class ImageManifest:
    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]


@dataclass(frozen=True, slots=True)
class ImageIndex:
    media_type: str
    manifests: tuple[Descriptor, ...]

    def select(self, os_name: str = PLATFORM[0], arch: str = PLATFORM[1]) -> Descriptor:
        for d in self.manifests:
            p = d.platform
            if p.get("os") == os_name and p.get("architecture") == arch:
                return d
        found = ", ".join(f"{d.platform.get('os')}/{d.platform.get('architecture')}" for d in self.manifests)
        raise UnsupportedImageError(f"no {os_name}/{arch} image in the manifest list (has: {found or 'none'})")


def parse_manifest(data: bytes, content_type: str = "") -> ImageManifest | ImageIndex:
    try:
        obj = json.loads(data)
    except ValueError as exc:
        raise UnsupportedImageError(f"manifest is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise UnsupportedImageError("manifest is not a JSON object")
    media_type = str(obj.get("mediaType") or content_type.split(";")[0].strip())
    if obj.get("schemaVersion") == 1 or "signed" in media_type or media_type.endswith("v1+prettyjws"):
        raise UnsupportedImageError("Docker schema 1 manifests are not supported; re-push the image")
    if "manifests" in obj or media_type in (OCI_INDEX, DOCKER_LIST):
        return ImageIndex(media_type or OCI_INDEX,
                          tuple(Descriptor.from_json(m) for m in obj.get("manifests") or ()))
    if "config" in obj and "layers" in obj:
        layers = tuple(Descriptor.from_json(layer) for layer in obj["layers"])
        for layer in layers:
            if layer.urls:
                raise UnsupportedImageError(f"layer {layer.digest} is foreign (has URLs): not available offline")
            layer_compression(layer.media_type)
        return ImageManifest(media_type or OCI_MANIFEST, Descriptor.from_json(obj["config"]), layers)
    raise UnsupportedImageError(f"unsupported manifest media type {media_type!r}")


@dataclass(frozen=True, slots=True)
class ImageConfig:
    """What the container runtime needs from the image config."""

    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    workdir: str = ""
    user: str = ""
    exposed_ports: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    diff_ids: tuple[str, ...] = ()
    os: str = "linux"
    architecture: str = "amd64"

    @classmethod
    def from_bytes(cls, data: bytes) -> ImageConfig:
        try:
            obj = json.loads(data)
        except ValueError as exc:
            raise UnsupportedImageError(f"image config is not JSON: {exc}") from None
        cfg = obj.get("config") or {}
        return cls(
            entrypoint=tuple(cfg.get("Entrypoint") or ()), cmd=tuple(cfg.get("Cmd") or ()),
            env=tuple(cfg.get("Env") or ()), workdir=str(cfg.get("WorkingDir") or ""),
            user=str(cfg.get("User") or ""), exposed_ports=tuple(sorted(cfg.get("ExposedPorts") or {})),
            labels=dict(cfg.get("Labels") or {}), diff_ids=tuple((obj.get("rootfs") or {}).get("diff_ids") or ()),
            os=str(obj.get("os") or "linux"), architecture=str(obj.get("architecture") or "amd64"))

    def to_json(self) -> dict[str, Any]:
        return {"entrypoint": list(self.entrypoint), "cmd": list(self.cmd), "env": list(self.env),
                "workdir": self.workdir, "user": self.user, "exposed_ports": list(self.exposed_ports),
                "labels": self.labels, "diff_ids": list(self.diff_ids), "os": self.os,
                "architecture": self.architecture}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> ImageConfig:
        return cls(entrypoint=tuple(obj.get("entrypoint") or ()), cmd=tuple(obj.get("cmd") or ()),
                   env=tuple(obj.get("env") or ()), workdir=str(obj.get("workdir") or ""),
                   user=str(obj.get("user") or ""), exposed_ports=tuple(obj.get("exposed_ports") or ()),
                   labels=dict(obj.get("labels") or {}), diff_ids=tuple(obj.get("diff_ids") or ()),
                   os=str(obj.get("os") or "linux"), architecture=str(obj.get("architecture") or "amd64"))
