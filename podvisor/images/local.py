"""Where this host's Podvisor keeps things, as the `podvisor image` commands and the node agent find them.

The data dir defaults like `podvisor up`'s (``/var/lib/podvisor`` as root, else
``~/.local/share/podvisor``). The embedded registry's address is what `podvisor up` published in
``DATA/status.json`` (``registry``), else what the registry itself recorded in
``DATA/registry/state.json``. Its administrator credential is the admin bearer token
(``DATA/pki/admin-token``) as the password of user ``admin``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from podvisor.images.auth import Credential, Keychain

__all__ = ["default_data_dir", "local_registry_address", "local_keychain", "docker_config_keychain"]


def default_data_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/podvisor")
    return Path.home() / ".local" / "share" / "podvisor"


def local_registry_address(data_dir: Path) -> str | None:
    try:
        status = json.loads((data_dir / "status.json").read_text())
        reg = status.get("registry")
        if isinstance(reg, dict):
            reg = reg.get("registry") or reg.get("address") or reg.get("host")
        if isinstance(reg, str) and reg and reg != "none":
            return reg.removeprefix("http://").removeprefix("https://").rstrip("/")
    except (FileNotFoundError, ValueError, AttributeError):
        pass
    try:
        state = json.loads((data_dir / "registry" / "state.json").read_text())
        address = state.get("address")
        return str(address) if address else None
    except (FileNotFoundError, ValueError):
        return None


def local_keychain(data_dir: Path) -> Keychain:
    """Credentials for the embedded registry of ``data_dir`` (empty if it has none)."""
    keychain = Keychain()
    address = local_registry_address(data_dir)
    token_path = data_dir / "pki" / "admin-token"
    if address and token_path.exists():
        keychain.add(address, Credential("admin", token_path.read_text().strip()))
    return keychain


def docker_config_keychain() -> Keychain:
    """``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json``, as docker and crane read them."""
    base = Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker")
    return Keychain.from_file(base / "config.json")
