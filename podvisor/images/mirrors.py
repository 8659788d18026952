"""Registry mirrors and rewrites, as containerd's ``hosts.toml`` configures them.

For each upstream registry (``docker.io``, ``quay.io`` ...) a list of endpoints is tried in order for
pulls: the mirrors, then the server (the upstream itself unless ``server`` overrides it). The
`podvisor up --registry-mirror REGISTRY=URL[,URL...]` flag makes the listed URLs *replace* the
upstream (air-gapped: nothing is ever sent to the real registry); a ``hosts.toml`` without ``server``
keeps the upstream as the last resort, as containerd does. A URL path (``http://mirror:5000/hub``) is
a repository prefix: ``docker.io/library/busybox`` is then pulled as ``hub/library/busybox`` from that
mirror (the rewrite). By default `podvisor up` mirrors ``docker.io`` to the embedded registry, so
``image: busybox`` is ``library/busybox`` there.

Plain HTTP is used for loopback hosts and URLs that say ``http://``; everything else is HTTPS.
"""

from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from podvisor.images.reference import DOCKER_HUB, DOCKER_HUB_API

__all__ = ["Endpoint", "RegistryHosts", "MirrorConfig", "parse_mirror_flag", "default_mirrors", "is_loopback_host"]


def is_loopback_host(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 or host.startswith("[") else host
    name = name.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One place to fetch from: ``base`` is ``scheme://host[:port]``; ``prefix`` prepends to repositories."""

    base: str
    prefix: str = ""
    capabilities: frozenset[str] = frozenset({"pull", "resolve"})
    skip_verify: bool = False

    @property
    def host(self) -> str:
        return urlsplit(self.base).netloc

    def repository(self, repository: str) -> str:
        return f"{self.prefix}/{repository}" if self.prefix else repository

    @classmethod
    def from_url(cls, url: str, *, capabilities: frozenset[str] | None = None, skip_verify: bool = False) -> Endpoint:
        text = url.strip()
        if "://" not in text:
            host = text.split("/", 1)[0]
            text = ("http://" if is_loopback_host(host) else "https://") + text
        parts = urlsplit(text)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"invalid registry endpoint {url!r}")
        prefix = parts.path.strip("/")
        if prefix == "v2" or prefix.startswith("v2/"):
            prefix = prefix[2:].strip("/")
        return cls(f"{parts.scheme}://{parts.netloc}", prefix, capabilities or frozenset({"pull", "resolve"}),
                   skip_verify)


def upstream_endpoint(registry: str) -> Endpoint:
    if registry == DOCKER_HUB:
        return Endpoint(f"https://{DOCKER_HUB_API}", capabilities=frozenset({"pull", "resolve", "push"}))
    scheme = "http" if is_loopback_host(registry) else "https"
    return Endpoint(f"{scheme}://{registry}", capabilities=frozenset({"pull", "resolve", "push"}))


@dataclass(frozen=True, slots=True)
class RegistryHosts:
    mirrors: tuple[Endpoint, ...] = ()
    server: Endpoint | None = None        # None: the upstream itself
    fallback_to_upstream: bool = True


@dataclass
class MirrorConfig:
    registries: dict[str, RegistryHosts] = field(default_factory=dict)

    def endpoints(self, registry: str) -> list[Endpoint]:
        """Where to pull ``registry``'s images from, in order."""
        hosts = self.registries.get(registry) or self.registries.get("_default")
        if hosts is None:
            return [upstream_endpoint(registry)]
        out = list(hosts.mirrors)
        if hosts.server is not None:
            out.append(hosts.server)
        elif hosts.fallback_to_upstream:
            out.append(upstream_endpoint(registry))
        return out

    def add_mirror(self, registry: str, endpoints: list[Endpoint], *, replace_upstream: bool = True) -> None:
        prior = self.registries.get(registry, RegistryHosts())
        self.registries[registry] = RegistryHosts(prior.mirrors + tuple(endpoints), prior.server,
                                                  prior.fallback_to_upstream and not replace_upstream)

    def merged(self, other: MirrorConfig) -> MirrorConfig:
        """``other``'s registries override ours."""
        return MirrorConfig({**self.registries, **other.registries})

    def to_json(self) -> dict[str, object]:
        return {reg: {"mirrors": [e.base + (f"/{e.prefix}" if e.prefix else "") for e in h.mirrors],
                      "server": h.server.base if h.server else None, "fallback": h.fallback_to_upstream}
                for reg, h in self.registries.items()}

    @classmethod
    def from_flags(cls, values: list[str]) -> MirrorConfig:
        config = cls()
        for value in values:
            registry, endpoints = parse_mirror_flag(value)
            config.add_mirror(registry, endpoints)
        return config

    @classmethod
    def from_hosts_dir(cls, directory: Path) -> MirrorConfig:
        """Read containerd's layout: ``DIR/<registry>/hosts.toml`` (``_default`` for every registry)."""
        config = cls()
        if not directory.is_dir():
            return config
        for path in sorted(directory.glob("*/hosts.toml")):
            registry = path.parent.name
            if registry in ("index.docker.io", "registry-1.docker.io"):
                registry = DOCKER_HUB
            config.registries[registry] = _parse_hosts_toml(path.read_text())
        return config


def _parse_hosts_toml(text: str) -> RegistryHosts:
    doc = tomllib.loads(text)
    server = Endpoint.from_url(str(doc["server"])) if doc.get("server") else None
    mirrors: list[Endpoint] = []
    for url, table in (doc.get("host") or {}).items():
        caps = frozenset(table.get("capabilities") or ("pull", "resolve"))
        mirrors.append(Endpoint.from_url(url, capabilities=caps, skip_verify=bool(table.get("skip_verify"))))
    return RegistryHosts(tuple(mirrors), server, True)


def parse_mirror_flag(value: str) -> tuple[str, list[Endpoint]]:
    """``docker.io=http://127.0.0.1:5000[,URL...]`` -> (``docker.io``, endpoints). ``ValueError`` if malformed."""
    registry, sep, urls = value.partition("=")
    registry = registry.strip()
    if not sep or not registry or not urls.strip():
        raise ValueError(f"--registry-mirror wants REGISTRY=URL[,URL...], got {value!r}")
    if registry in ("index.docker.io", "registry-1.docker.io"):
        registry = DOCKER_HUB
    return registry, [Endpoint.from_url(u) for u in urls.split(",") if u.strip()]


def default_mirrors(embedded_registry: str | None, extra: list[str] | None = None) -> MirrorConfig:
    """What `podvisor up` uses: ``docker.io`` served by the embedded registry (if any), then the flags."""
    config = MirrorConfig()
    flags = MirrorConfig.from_flags(extra or [])
    if embedded_registry and DOCKER_HUB not in flags.registries:
        config.add_mirror(DOCKER_HUB, [Endpoint.from_url(embedded_registry)])
    return config.merged(flags)
