"""Network namespaces: where they live, whether one is real, and running code inside one.

A named namespace is a bind mount of an ``nsfs`` inode on ``/run/netns/NAME`` (what ``ip netns add``
makes). After a crash or a reboot the file can remain without the mount behind it; `is_netns_mounted`
tells the two apart by the device number (nsfs inodes all share one, a plain file on tmpfs does not).

`run_in_netns` runs a function in a *dedicated* thread that ``setns(2)``-es into the namespace. A
network namespace belongs to a thread, not to the process, so the rest of the process (the event
loop, the executor's threads) never changes namespace, and a thread that could not switch back dies
with its namespace instead of going back to a pool. Anything the function opens (a tap's file
descriptor, a socket) stays bound to that namespace after the thread is gone: that is how the root
namespace's QEMU gets a tap that lives in a Podvisor namespace. (``os.setns`` arrives only in Python
3.12; we call libc's ``setns`` through ctypes.)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import ctypes.util
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

__all__ = ["NETNS_DIR", "netns_path", "is_netns_mounted", "run_in_netns", "run_in_netns_sync"]

NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000

T = TypeVar("T")

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


def netns_path(name: str) -> Path:
    """The bind mount of a named namespace (an absolute path is taken as it is)."""
    return Path(name) if name.startswith("/") else NETNS_DIR / name


def is_netns_mounted(path: Path) -> bool:
    """Is ``path`` a live namespace handle (an nsfs inode), not a leftover empty file?"""
    try:
        return os.stat(path).st_dev == os.stat("/proc/self/ns/net").st_dev
    except OSError:
        return False


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def _run(path: Path, fn: Callable[[], T], result: concurrent.futures.Future[T]) -> None:
    try:
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                _setns(target)
            finally:
                os.close(target)
            try:
                value = fn()
            finally:
                _setns(own)  # if this fails the thread still ends here, and its namespace with it
        finally:
            os.close(own)
    except BaseException as e:  # delivered to the caller
        result.set_exception(e)
    else:
        result.set_result(value)


def _start(path: Path, fn: Callable[[], T]) -> concurrent.futures.Future[T]:
    result: concurrent.futures.Future[T] = concurrent.futures.Future()
    threading.Thread(target=_run, args=(path, fn, result), name=f"netns:{path.name}", daemon=True).start()
    return result


async def run_in_netns(path: Path, fn: Callable[[], T]) -> T:
    """Run ``fn()`` inside the namespace at ``path`` (in a thread of its own); return its result."""
    return await asyncio.wrap_future(_start(path, fn))


def run_in_netns_sync(path: Path, fn: Callable[[], T]) -> T:
    """`run_in_netns` for callers without an event loop (blocks until ``fn`` returns)."""
    return _start(path, fn).result()
