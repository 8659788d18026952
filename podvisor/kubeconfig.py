"""Writing the admin kubeconfig and merging it into ``~/.kube/config`` the way kind does.

The data dir's kubeconfig is ours alone and rewritten on every start (the server address may change
with ``--port``/``--listen``). The user's ``~/.kube/config`` is shared with other tools: we replace only
our own cluster, user and context entries (all named ``podvisor``), keep every other entry and the
file's other keys, set ``current-context`` to ours as kind does, and write atomically with 0600.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import yaml

from podvisor.pki import ClusterPKI

__all__ = ["CONTEXT", "build_kubeconfig", "write_kubeconfig", "merge_into_user_kubeconfig", "default_user_kubeconfig"]

CONTEXT = "podvisor"


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def build_kubeconfig(server: str, pki: ClusterPKI, *, name: str = CONTEXT) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [{"name": name, "cluster": {"server": server, "certificate-authority-data": _b64(pki.ca_cert)}}],
        "users": [{"name": name, "user": {
            "client-certificate-data": _b64(pki.admin_cert),
            "client-key-data": _b64(pki.admin_key),
        }}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "current-context": name,
    }


def write_kubeconfig(path: Path, config: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(config, f, default_flow_style=False, sort_keys=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def default_user_kubeconfig() -> Path:
    first = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
    return Path(first) if first else Path.home() / ".kube" / "config"


def merge_into_user_kubeconfig(ours: dict[str, Any], target: Path | None = None) -> Path:
    """Merge our entries into the user's kubeconfig, keeping everyone else's."""
    target = target or default_user_kubeconfig()
    existing: dict[str, Any] = {}
    if target.exists():
        loaded = yaml.safe_load(target.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{target} is not a kubeconfig (not a mapping); not touching it")
        existing = loaded
    merged = dict(existing)
    merged.setdefault("apiVersion", "v1")
    merged.setdefault("kind", "Config")
    merged.setdefault("preferences", {})
    for section in ("clusters", "users", "contexts"):
        entries = [e for e in (existing.get(section) or []) if isinstance(e, dict)]
        ours_names = {e["name"] for e in ours[section]}
        merged[section] = [e for e in entries if e.get("name") not in ours_names] + ours[section]
    merged["current-context"] = ours["current-context"]
    write_kubeconfig(target, merged)
    return target
