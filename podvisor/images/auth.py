"""Registry credentials and the two ways a registry asks for them.

A registry answers ``401`` with ``WWW-Authenticate``: ``Basic realm=...`` (send the credentials with
every request) or ``Bearer realm=...,service=...,scope=...`` (trade the credentials, or nothing, at
the realm for a short-lived token carrying that scope, then send the token). `Keychain` maps registry
hosts to credentials; it reads Kubernetes ``kubernetes.io/dockerconfigjson`` pull secrets (and
``~/.docker/config.json``), whose keys may be bare hosts or URLs (``https://index.docker.io/v1/``).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

__all__ = ["Credential", "Keychain", "Challenge", "parse_challenges", "keychain_from_secrets"]


@dataclass(frozen=True, slots=True)
class Credential:
    username: str = ""
    password: str = ""
    identity_token: str = ""    # an OAuth2 refresh token (``identitytoken`` in docker config)
    registry_token: str = ""    # a bearer token sent as-is (``registrytoken``)

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")


def _host_key(key: str) -> str:
    """``https://index.docker.io/v1/`` -> ``docker.io``; ``127.0.0.1:5000`` stays."""
    text = key.strip()
    host = urlsplit(text).netloc if "://" in text else text.split("/", 1)[0]
    if host in ("index.docker.io", "registry-1.docker.io", "docker.io"):
        return "docker.io"
    return host


class Keychain:
    """Credentials by registry host, from any number of docker configs; the first match wins."""

    def __init__(self, entries: Mapping[str, Credential] | None = None) -> None:
        self._by_host: dict[str, Credential] = {}
        for host, cred in (entries or {}).items():
            self.add(host, cred)

    def add(self, host: str, cred: Credential) -> None:
        self._by_host.setdefault(_host_key(host), cred)

    def get(self, host: str) -> Credential | None:
        return self._by_host.get(_host_key(host))

    def merged(self, other: Keychain | None) -> Keychain:
        """A keychain trying ours first, then ``other``'s."""
        out = Keychain(self._by_host)
        if other is not None:
            for host, cred in other._by_host.items():
                out.add(host, cred)
        return out

    def __bool__(self) -> bool:
        return bool(self._by_host)

    def hosts(self) -> list[str]:
        return sorted(self._by_host)

    @classmethod
    def from_docker_config(cls, data: bytes | str | Mapping[str, Any]) -> Keychain:
        """Parse a ``.dockerconfigjson`` (``{"auths": {...}}``) or legacy ``.dockercfg`` (hosts at top)."""
        obj: Any = json.loads(data) if isinstance(data, bytes | str) else data
        if not isinstance(obj, Mapping):
            raise ValueError("docker config is not a JSON object")
        auths = obj.get("auths") if "auths" in obj else obj
        keychain = cls()
        if not isinstance(auths, Mapping):
            return keychain
        for key, entry in auths.items():
            if not isinstance(entry, Mapping):
                continue
            user, password = str(entry.get("username") or ""), str(entry.get("password") or "")
            if entry.get("auth"):
                decoded = base64.b64decode(str(entry["auth"])).decode("utf-8")
                user, _, password = decoded.partition(":")
            keychain.add(key, Credential(user, password, str(entry.get("identitytoken") or ""),
                                         str(entry.get("registrytoken") or "")))
        return keychain

    @classmethod
    def from_file(cls, path: Path) -> Keychain:
        try:
            return cls.from_docker_config(path.read_bytes())
        except (FileNotFoundError, ValueError):
            return cls()


def keychain_from_secrets(secrets: Iterable[Mapping[str, Any]]) -> Keychain:
    """A keychain from Kubernetes Secret objects (``imagePullSecrets`` resolved by the node agent):
    ``kubernetes.io/dockerconfigjson`` (``.dockerconfigjson``) and ``kubernetes.io/dockercfg``, with
    ``data`` base64-encoded as the API returns it, or ``stringData``."""
    keychain = Keychain()
    for secret in secrets:
        data = secret.get("data") or {}
        string_data = secret.get("stringData") or {}
        for field_name in (".dockerconfigjson", ".dockercfg"):
            raw: bytes | None = None
            if field_name in string_data:
                raw = str(string_data[field_name]).encode()
            elif field_name in data:
                raw = base64.b64decode(str(data[field_name]))
            if raw is not None:
                keychain = keychain.merged(Keychain.from_docker_config(raw))
    return keychain


@dataclass(frozen=True, slots=True)
class Challenge:
    scheme: str                 # "basic" or "bearer"
    params: dict[str, str]

    @property
    def realm(self) -> str:
        return self.params.get("realm", "")


_PARAM = re.compile(r'\s*([A-Za-z][\w-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))\s*,?')


def parse_challenges(header: str) -> list[Challenge]:
    """Parse ``WWW-Authenticate`` (possibly several challenges) into scheme + parameters."""
    out: list[Challenge] = []
    pos, text = 0, header.strip()
    while pos < len(text):
        m = re.match(r"\s*([A-Za-z][\w-]*)\s*", text[pos:])
        if not m:
            break
        scheme = m.group(1).lower()
        pos += m.end()
        params: dict[str, str] = {}
        while pos < len(text):
            pm = _PARAM.match(text, pos)
            if not pm or pm.end() == pos:
                break
            # a bare token followed by another token starts the next challenge
            params[pm.group(1).lower()] = pm.group(2).replace('\\"', '"') if pm.group(2) is not None else pm.group(3)
            pos = pm.end()
        out.append(Challenge(scheme, params))
    return out
