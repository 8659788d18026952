"""Where Podvisor keeps its state: one data dir per installation, chosen the same way by every command."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["default_data_dir", "status_file"]


def default_data_dir() -> Path:
    """``/var/lib/podvisor`` as root, else ``~/.local/share/podvisor`` (overridable with PODVISOR_DATA_DIR)."""
    env = os.environ.get("PODVISOR_DATA_DIR")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/podvisor")
    return Path.home() / ".local" / "share" / "podvisor"


def status_file(data_dir: Path) -> Path:
    """The endpoints `podvisor up` publishes for `podvisor status` and other local commands."""
    return data_dir / "status.json"
