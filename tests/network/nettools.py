"""Shell helpers for the network tests (bounded commands, nothing outside our namespaces)."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

needs_root = pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/dev/net/tun")
                                or not shutil.which("ip"),
                                reason="needs root, /dev/net/tun and iproute2")


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=30)


def netns_exists(name: str) -> bool:
    return Path("/run/netns", name).exists()


def leave_stale_mount_point(name: str) -> None:
    """An empty /run/netns/NAME with no namespace mounted on it."""
    Path("/run/netns").mkdir(exist_ok=True)
    Path("/run/netns", name).touch()


def root_has_link(name: str) -> bool:
    return sh("ip", "link", "show", "dev", name, check=False).returncode == 0


def ping_from(netns: str, ip: str) -> bool:
    """One bounded ping from inside ``netns`` (busybox: no ping binary on these hosts)."""
    return sh("ip", "netns", "exec", netns, "busybox", "ping", "-c", "1", "-W", "2", ip,
              check=False).returncode == 0


def new_host_name() -> str:
    return "tn" + uuid.uuid4().hex[:10]


