"""Running iproute2's ``ip`` against a network namespace.

Podvisor changes links, addresses and namespaces with the ``ip`` tool rather than its own netlink
code: ``ip`` is on every Linux host, its JSON output (``-j``) is stable, and its error messages are
the ones an administrator already knows. Each call costs one process (a few milliseconds), so the
per-pod hot path (tap creation) uses ioctls instead (see `podvisor.network.tap`); ``ip`` is for the
once-per-start work and for deletions.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

__all__ = ["NetworkError", "IP_BINARY", "ip", "ip_json"]

IP_BINARY = "ip"


class NetworkError(RuntimeError):
    """A network operation failed; the message carries the command and the kernel's answer."""


async def ip(*args: str, netns: str | None = None, ok: Sequence[str] = ()) -> str:
    """Run ``ip [-n NETNS] ARGS``; return stdout.

    ``ok`` lists substrings of stderr that mean "already in the wanted state" (``File exists``,
    ``Cannot find device``): such failures return ``""`` instead of raising `NetworkError`.
    """
    argv = [IP_BINARY]
    if netns is not None:
        argv += ["-n", netns]
    argv += list(args)
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    if proc.returncode != 0:
        message = err.decode(errors="replace").strip()
        if any(s in message for s in ok):
            return ""
        raise NetworkError(f"{' '.join(argv)}: {message or f'exit {proc.returncode}'}")
    return out.decode(errors="replace")


async def ip_json(*args: str, netns: str | None = None, ok: Sequence[str] = ()) -> list[dict[str, Any]]:
    """``ip -j ARGS`` parsed; an ``ok`` failure (e.g. no such device) gives ``[]``."""
    out = await ip("-j", *args, netns=netns, ok=ok)
    if not out.strip():
        return []
    parsed = json.loads(out)
    return [x for x in parsed if isinstance(x, dict) and x] if isinstance(parsed, list) else []
