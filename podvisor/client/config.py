"""Where a client finds its cluster: a kubeconfig file, turned into an address, TLS context and headers.

Only what Podvisor's own components and tools need: the current (or a named) context, CA data or
file, client certificate data or files, or a bearer token. Certificate data is written to a private
temporary directory because Python's ssl module loads client keys only from files.
"""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["ClientConfig", "load_kubeconfig"]


@dataclass(frozen=True)
class ClientConfig:
    server: str
    ssl_context: ssl.SSLContext | None
    headers: dict[str, str] = field(default_factory=dict)
    user_agent: str = "podvisor"


def _material(entry: dict[str, Any], key: str, base_dir: Path, tmp: list[Path]) -> Path | None:
    if entry.get(f"{key}-data"):
        if not tmp:
            tmp.append(Path(tempfile.mkdtemp(prefix="podvisor-client-")))
        path = tmp[0] / key
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(base64.b64decode(entry[f"{key}-data"]))
        return path
    if entry.get(key):
        p = Path(entry[key])
        return p if p.is_absolute() else base_dir / p
    return None


def load_kubeconfig(path: Path, *, context: str | None = None, user_agent: str = "podvisor") -> ClientConfig:
    cfg = yaml.safe_load(Path(path).read_text()) or {}
    name = context or cfg.get("current-context")
    try:
        ctx = next(c["context"] for c in cfg.get("contexts", []) if c["name"] == name)
        cluster = next(c["cluster"] for c in cfg.get("clusters", []) if c["name"] == ctx["cluster"])
        user: dict[str, Any] = next((u["user"] for u in cfg.get("users", []) if u["name"] == ctx.get("user")), {})
    except StopIteration:
        raise ValueError(f"{path}: context {name!r} is incomplete") from None
    base = Path(path).parent
    tmp: list[Path] = []
    server = str(cluster["server"]).rstrip("/")
    sslctx: ssl.SSLContext | None = None
    if server.startswith("https://"):
        ca = _material(cluster, "certificate-authority", base, tmp)
        sslctx = ssl.create_default_context(cafile=str(ca) if ca else None)
        cert = _material(user, "client-certificate", base, tmp)
        key = _material(user, "client-key", base, tmp)
        if cert and key:
            sslctx.load_cert_chain(cert, key)
    headers = {"User-Agent": user_agent}
    if user.get("token"):
        headers["Authorization"] = f"Bearer {user['token']}"
    return ClientConfig(server=server, ssl_context=sslctx, headers=headers, user_agent=user_agent)
