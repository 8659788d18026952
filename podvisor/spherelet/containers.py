"""From a container of the pod spec to a runtime container, and the attempts of each container.

Naming is the runtime's memory: attempt N of container ``web`` is ``web-N`` in the sandbox, its log
``logs/web/N.log`` on the ephemeral disk. After a restart the spherelet reads restart counts, the
current and the last state back from the runtime's list (`attempts`), the way kubelet reads them
from its runtime's container labels. Only the current and the previous attempt are kept; older
ones are removed (their logs stay on the disk until the pod goes).

`build_spec` assembles what the guest runs: argv from command/args against the image's
entrypoint/cmd, the image's environment overlaid with the pod's, working directory, user (pod and
container securityContext over the image's ``USER``), volume mounts, log path and limits.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from podvisor.spherelet.envvars import ConfigError, command_line
from podvisor.spherelet.runtime import ContainerInfo, ContainerSpec, Mount
from podvisor.spherelet.sizing import container_limits

__all__ = [
    "container_name_id", "parse_container_id", "attempts", "build_spec", "log_path", "image_disk_id",
    "DEFAULT_PATH", "hosts_file",
]

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_ID = re.compile(r"^(?P<name>[a-z0-9]([-a-z0-9]*[a-z0-9])?)-(?P<n>\d+)$")


def container_name_id(name: str, attempt: int) -> str:
    return f"{name}-{attempt}"


def parse_container_id(cid: str) -> tuple[str, int] | None:
    m = _ID.match(cid)
    return (m.group("name"), int(m.group("n"))) if m else None


def log_path(name: str, attempt: int) -> str:
    return f"logs/{name}/{attempt}.log"


def image_disk_id(digest: str) -> str:
    """The disk id (virtio serial, at most 20 characters) of an image: ``img-`` + 12 hex digits."""
    return "img-" + digest.removeprefix("sha256:")[:12]


def attempts(infos: Sequence[ContainerInfo], name: str) -> list[tuple[int, ContainerInfo]]:
    """Attempts of container ``name``, oldest first."""
    out = []
    for info in infos:
        parsed = parse_container_id(info.id)
        if parsed is not None and parsed[0] == name:
            out.append((parsed[1], info))
    return sorted(out, key=lambda x: x[0])


def _user(pod: Mapping[str, Any], container: Mapping[str, Any], image_user: str) -> tuple[int | None, int | None, str]:
    psc = (pod.get("spec") or {}).get("securityContext") or {}
    csc = container.get("securityContext") or {}
    uid = csc.get("runAsUser", psc.get("runAsUser"))
    gid = csc.get("runAsGroup", psc.get("runAsGroup"))
    name = ""
    if uid is None and image_user:
        user, _, group = image_user.partition(":")
        if user.isdigit():
            uid = int(user)
        elif user:
            name = user
        if gid is None and group.isdigit():
            gid = int(group)
    if uid is not None and gid is None and not name:
        gid = 0 if uid == 0 else None
    if (csc.get("runAsNonRoot") if csc.get("runAsNonRoot") is not None else psc.get("runAsNonRoot")) and \
            uid in (None, 0) and not name:
        if uid == 0:
            raise ConfigError("container's runAsUser breaks non-root policy (pod: runAsNonRoot, container: 0)")
        if not image_user:
            raise ConfigError("container has runAsNonRoot and image will run as root")
    return (int(uid) if uid is not None else None, int(gid) if gid is not None else None, name)


def _mounts(container: Mapping[str, Any], volume_sources: Mapping[str, str]) -> tuple[Mount, ...]:
    out: list[Mount] = []
    for vm in container.get("volumeMounts") or []:
        vol = str(vm.get("name", ""))
        if vol not in volume_sources:
            raise ConfigError(f'volume "{vol}" is not set up for mount {vm.get("mountPath")}')
        source = volume_sources[vol]
        sub = str(vm.get("subPath") or "")
        if sub:
            if sub.startswith("/") or ".." in sub.split("/"):
                raise ConfigError(f"subPath {sub!r} must be a relative path without '..'")
            source = f"{source.rstrip('/')}/{sub}"
        out.append(Mount(source=source, destination=str(vm.get("mountPath", "")), read_only=bool(vm.get("readOnly"))))
    return tuple(out)


def build_spec(pod: Mapping[str, Any], container: Mapping[str, Any], *, attempt: int, image_id: str,
               image_config: Any, env: Sequence[tuple[str, str]], volume_sources: Mapping[str, str],
               hostname: str) -> ContainerSpec:
    """The runtime container for ``container``'s attempt ``attempt``. Raises `ConfigError`."""
    name = str(container.get("name", ""))
    argv = command_line(container, entrypoint=tuple(getattr(image_config, "entrypoint", ()) or ()),
                        cmd=tuple(getattr(image_config, "cmd", ()) or ()), env=env)
    if not argv:
        raise ConfigError("no command specified")
    merged: dict[str, str] = {}
    for item in getattr(image_config, "env", ()) or ():
        k, _, v = str(item).partition("=")
        merged[k] = v
    merged.setdefault("PATH", DEFAULT_PATH)
    merged["HOSTNAME"] = hostname
    for k, v in env:
        merged[k] = v
    uid, gid, user_name = _user(pod, container, str(getattr(image_config, "user", "") or ""))
    psc = (pod.get("spec") or {}).get("securityContext") or {}
    groups = [int(g) for g in psc.get("supplementalGroups") or [] if isinstance(g, int)]
    if isinstance(psc.get("fsGroup"), int):
        groups.append(int(psc["fsGroup"]))
    csc = container.get("securityContext") or {}
    caps = csc.get("capabilities") or {}
    mem, cpu = container_limits(dict(container))
    return ContainerSpec(
        id=container_name_id(name, attempt),
        name=name,
        image=image_id,
        args=tuple(argv),
        env=tuple(f"{k}={v}" for k, v in merged.items()),
        working_dir=str(container.get("workingDir") or getattr(image_config, "workdir", "") or ""),
        uid=uid,
        gid=gid,
        user_name=user_name,
        supplemental_groups=tuple(sorted(set(groups))),
        mounts=_mounts(container, volume_sources),
        tty=bool(container.get("tty")),
        stdin=bool(container.get("stdin")),
        stdin_once=bool(container.get("stdin")) and bool(container.get("stdinOnce")),
        log_path=log_path(name, attempt),
        memory_limit_bytes=mem,
        cpu_limit_millis=cpu,
        capabilities_add=tuple(str(c) for c in caps.get("add") or []),
        capabilities_drop=tuple(str(c) for c in caps.get("drop") or []),
        no_new_privileges=csc.get("allowPrivilegeEscalation") is False,
    )


def hosts_file(pod: Mapping[str, Any], *, hostname: str, pod_ip: str) -> str:
    """The pod's /etc/hosts, as kubelet writes it (with hostAliases)."""
    spec = pod.get("spec") or {}
    lines = ["# Kubernetes-managed hosts file.", "127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback",
             "fe00::0\tip6-localnet", "fe00::0\tip6-mcastprefix", "fe00::1\tip6-allnodes", "fe00::2\tip6-allrouters"]
    if pod_ip:
        sub = spec.get("subdomain")
        ns = (pod.get("metadata") or {}).get("namespace") or "default"
        names = [f"{hostname}.{sub}.{ns}.svc.cluster.local", hostname] if sub else [hostname]
        lines.append(f"{pod_ip}\t" + "\t".join(names))
    aliases = spec.get("hostAliases") or []
    if aliases:
        lines.append("")
        lines.append("# Entries added by HostAliases.")
        for a in aliases:
            lines.append(f"{a.get('ip', '')}\t" + "\t".join(str(h) for h in a.get("hostnames") or []))
    return "\n".join(lines) + "\n"
