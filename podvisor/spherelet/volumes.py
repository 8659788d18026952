"""Pod volumes inside the VM: emptyDir, and files projected from ConfigMaps, Secrets, the downward API
and service account tokens.

Two steps, kept apart so the second can be repeated: `plan_volume` resolves a volume's sources into
the files it should hold (``project``), and `atomic_ops` turns those files into sandbox file
operations with Kubernetes' atomic-writer layout::

    volumes/cfg/..3f2a…/key          the payload, in a directory named by its content hash
    volumes/cfg/..data -> ..3f2a…    switched by one atomic rename
    volumes/cfg/key -> ..data/key    what containers see

A reader inside a container always sees one whole version: either the old ``..data`` or the new one.
Because the spherelet re-plans mounted volumes periodically (``resync``), a changed ConfigMap or
Secret reaches the mounted files within a resync period, as with a kubelet (subPath mounts excepted,
as in Kubernetes). The content-hash name makes a rewrite after a spherelet restart idempotent.

Where volumes live: configMap and downwardAPI volumes on the ephemeral disk (``volumes/<name>``);
secrets, projected volumes (they may carry a token) and ``medium: Memory`` emptyDirs on a tmpfs
inside the guest, so secret bytes never reach a disk; other emptyDirs on the ephemeral disk with
their ``sizeLimit`` enforced by the guest (project quota). Volumes that would reach into the host
(hostPath and friends) are refused before this point (`podvisor.spherelet.admission`).
"""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from podvisor.scheduler.quantity import quantity_value
from podvisor.spherelet.envvars import (
    ConfigError,
    Sources,
    configmap_bytes,
    field_value,
    resource_value,
    secret_bytes,
)
from podvisor.spherelet.runtime import FileOp

__all__ = [
    "MountError", "VolumeFile", "VolumePlan", "TokenSource", "plan_volume", "atomic_ops", "volume_dir",
    "PROJECTED_KINDS",
]

PROJECTED_KINDS = ("configMap", "secret", "downwardAPI", "projected")
_DEFAULT_MODE = 0o644

TokenSource = Callable[[Mapping[str, Any], str, int], Awaitable[str | None]]
"""(pod, audience, expirationSeconds) -> a token for the pod's service account, or None if unavailable."""


class MountError(Exception):
    """A volume cannot be set up (event FailedMount; the pod waits in ContainerCreating)."""


@dataclass(frozen=True)
class VolumeFile:
    path: str          # relative to the volume
    data: bytes
    mode: int = _DEFAULT_MODE


@dataclass
class VolumePlan:
    name: str
    kind: str                          # emptyDir, configMap, secret, downwardAPI, projected
    medium: str = ""                   # "" (the ephemeral disk) or "Memory"
    size_limit: int = 0
    files: list[VolumeFile] | None = None   # None for emptyDir
    warnings: list[str] = field(default_factory=list)

    @property
    def projected(self) -> bool:
        return self.files is not None


def volume_dir(name: str) -> str:
    """Where a disk-backed volume lives, relative to the ephemeral disk (the guest's own convention)."""
    return f"volumes/{name}"


def _clean_path(p: str) -> str:
    norm = posixpath.normpath(p)
    if not p or p.startswith("/") or norm.startswith("..") or norm == ".":
        raise MountError(f"invalid path {p!r} in volume items")
    return norm


def _mode(value: Any, default: int) -> int:
    try:
        return int(value) & 0o7777 if value is not None else default
    except (TypeError, ValueError):
        return default


def _keys(obj: Mapping[str, Any], *fields: str) -> list[str]:
    out: list[str] = []
    for f in fields:
        out += [str(k) for k in (obj.get(f) or {})]
    return sorted(set(out))


def _items(kind: str, obj: Mapping[str, Any] | None, src: Mapping[str, Any], namespace: str, default_mode: int,
           read: Callable[[Mapping[str, Any], str], bytes | None], key_fields: Sequence[str]) -> list[VolumeFile]:
    name = str(src.get("name", ""))
    label = "configmap" if kind == "configMap" else "secret"
    if obj is None:
        if src.get("optional"):
            return []
        raise MountError(f'{label} "{name}" not found')
    items = src.get("items") or []
    out: list[VolumeFile] = []
    if not items:
        for key in _keys(obj, *key_fields):
            data = read(obj, key)
            if data is not None:
                out.append(VolumeFile(_clean_path(key), data, default_mode))
        return out
    for item in items:
        key = str(item.get("key", ""))
        data = read(obj, key)
        if data is None:
            if src.get("optional"):
                continue
            raise MountError(f"{label} references non-existent {'config ' if kind == 'configMap' else 'secret '}key: {key}")
        out.append(VolumeFile(_clean_path(str(item.get("path") or key)), data, _mode(item.get("mode"), default_mode)))
    return out


def _downward(pod: Mapping[str, Any], src: Mapping[str, Any], default_mode: int, *, pod_ip: str, host_ip: str,
              allocatable: Mapping[str, Any] | None) -> list[VolumeFile]:
    out: list[VolumeFile] = []
    for item in src.get("items") or []:
        path = _clean_path(str(item.get("path", "")))
        try:
            if item.get("fieldRef"):
                value = field_value(pod, str(item["fieldRef"].get("fieldPath", "")), pod_ip=pod_ip, host_ip=host_ip)
            elif item.get("resourceFieldRef"):
                ref = item["resourceFieldRef"]
                value = resource_value(pod, str(ref.get("containerName", "")), str(ref.get("resource", "")),
                                       ref.get("divisor"), allocatable=allocatable)
            else:
                continue
        except (ValueError, ConfigError) as exc:
            raise MountError(str(exc)) from None
        out.append(VolumeFile(path, value.encode(), _mode(item.get("mode"), default_mode)))
    return out


async def plan_volume(pod: Mapping[str, Any], volume: Mapping[str, Any], *, sources: Sources,
                      tokens: TokenSource | None = None, pod_ip: str = "", host_ip: str = "",
                      allocatable: Mapping[str, Any] | None = None) -> VolumePlan:
    """What ``volume`` should contain now. Raises `MountError` with Kubernetes' wording."""
    name = str(volume.get("name", ""))
    namespace = str((pod.get("metadata") or {}).get("namespace") or "default")
    if "emptyDir" in volume:
        ed = volume.get("emptyDir") or {}
        medium = "Memory" if str(ed.get("medium") or "") == "Memory" else ""
        limit = 0
        if ed.get("sizeLimit"):
            try:
                limit = quantity_value(ed["sizeLimit"])
            except ValueError:
                raise MountError(f"invalid sizeLimit {ed['sizeLimit']!r}") from None
        return VolumePlan(name, "emptyDir", medium=medium, size_limit=limit)
    if "configMap" in volume:
        src = volume.get("configMap") or {}
        cm = await sources.configmap(namespace, str(src.get("name", "")))
        files = _items("configMap", cm, src, namespace, _mode(src.get("defaultMode"), _DEFAULT_MODE),
                       configmap_bytes, ("data", "binaryData"))
        return VolumePlan(name, "configMap", files=files)
    if "secret" in volume:
        src = dict(volume.get("secret") or {})
        src["name"] = src.get("secretName", "")
        secret = await sources.secret(namespace, str(src["name"]))
        files = _items("secret", secret, src, namespace, _mode(src.get("defaultMode"), _DEFAULT_MODE),
                       secret_bytes, ("data", "stringData"))
        return VolumePlan(name, "secret", medium="Memory", files=files)
    if "downwardAPI" in volume:
        src = volume.get("downwardAPI") or {}
        files = _downward(pod, src, _mode(src.get("defaultMode"), _DEFAULT_MODE), pod_ip=pod_ip, host_ip=host_ip,
                          allocatable=allocatable)
        return VolumePlan(name, "downwardAPI", files=files)
    if "projected" in volume:
        return await _projected(pod, name, volume.get("projected") or {}, namespace, sources=sources, tokens=tokens,
                                pod_ip=pod_ip, host_ip=host_ip, allocatable=allocatable)
    kinds = [k for k in volume if k != "name"]
    raise MountError(f"volume type {kinds[0] if kinds else '(none)'} is not supported on a Podvisor host")


async def _projected(pod: Mapping[str, Any], name: str, proj: Mapping[str, Any], namespace: str, *,
                     sources: Sources, tokens: TokenSource | None, pod_ip: str, host_ip: str,
                     allocatable: Mapping[str, Any] | None) -> VolumePlan:
    default_mode = _mode(proj.get("defaultMode"), _DEFAULT_MODE)
    plan = VolumePlan(name, "projected", medium="Memory", files=[])
    assert plan.files is not None
    for source in proj.get("sources") or []:
        if source.get("configMap") is not None:
            src = source["configMap"]
            cm = await sources.configmap(namespace, str(src.get("name", "")))
            plan.files += _items("configMap", cm, src, namespace, default_mode, configmap_bytes, ("data", "binaryData"))
        elif source.get("secret") is not None:
            src = source["secret"]
            secret = await sources.secret(namespace, str(src.get("name", "")))
            plan.files += _items("secret", secret, src, namespace, default_mode, secret_bytes, ("data", "stringData"))
        elif source.get("downwardAPI") is not None:
            plan.files += _downward(pod, source["downwardAPI"], default_mode, pod_ip=pod_ip, host_ip=host_ip,
                                    allocatable=allocatable)
        elif source.get("serviceAccountToken") is not None:
            sat = source["serviceAccountToken"]
            path = _clean_path(str(sat.get("path") or "token"))
            token = None
            if tokens is not None:
                token = await tokens(pod, str(sat.get("audience") or ""), int(sat.get("expirationSeconds") or 3600))
            if token is None:
                plan.warnings.append(f"no service account token for {path}: the API server does not issue tokens "
                                     f"(serviceaccounts/token)")
                continue
            plan.files.append(VolumeFile(path, token.encode(), default_mode))
        elif source.get("clusterTrustBundle") is not None:
            plan.warnings.append("clusterTrustBundle projections are not supported")
    return plan


def _version(files: Sequence[VolumeFile]) -> str:
    h = hashlib.sha256()
    for f in sorted(files, key=lambda f: f.path):
        h.update(f.path.encode() + b"\0" + f.mode.to_bytes(2, "big") + len(f.data).to_bytes(8, "big") + f.data)
    return h.hexdigest()[:16]


def atomic_ops(base: str, files: Sequence[VolumeFile], *, previous: Sequence[VolumeFile] | None = None,
               previous_version: str = "") -> tuple[list[FileOp], str]:
    """File operations that make ``base`` hold exactly ``files`` (atomic-writer layout), and the
    payload's version. ``previous`` (what was written before, if known) lets stale names be removed."""
    version = _version(files)
    data_dir = f"..{version}"
    ops: list[FileOp] = [FileOp(f"{base}/{data_dir}", kind="dir", mode=0o755)]
    for f in sorted(files, key=lambda f: f.path):
        ops.append(FileOp(f"{base}/{data_dir}/{f.path}", data=f.data, mode=f.mode))
    ops.append(FileOp(f"{base}/..data", kind="symlink", target=data_dir))
    tops = sorted({f.path.split("/", 1)[0] for f in files})
    for top in tops:
        ops.append(FileOp(f"{base}/{top}", kind="symlink", target=f"..data/{top}"))
    if previous is not None:
        old_tops = {f.path.split("/", 1)[0] for f in previous}
        for top in sorted(old_tops - set(tops)):
            ops.append(FileOp(f"{base}/{top}", kind="remove"))
    if previous_version and previous_version != version:
        ops.append(FileOp(f"{base}/..{previous_version}", kind="remove"))
    return ops, version
