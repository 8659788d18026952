"""Apply image layers, in order, onto one root directory: the merged file system of an image.

Rules (OCI image spec, "Applying changesets", and what Docker and containerd do):

- ``.wh.NAME`` removes ``NAME`` from lower layers; ``.wh..wh..opq`` empties its directory of lower
  layers' entries. Neither touches what the same layer adds, whatever the order inside the tar.
- Paths are resolved inside the root as ``chroot`` would: a symlink met on the way (``var/run ->
  /run``) is followed *within* the root, never onto the host. A member name that climbs out
  (``../x``), a hard link whose target climbs out, and a relative symlink whose target climbs above the
  root are refused with `UnsafeLayerError` naming the member. Absolute symlink targets are fine: they
  mean the image's own root.
- Owners, modes (setuid included), mtimes and ``SCHILY.xattr`` extended attributes are kept when we run
  as root; without root, files are ours. Device nodes are skipped (a pod VM gets its own /dev); FIFOs
  are made. A non-directory replacing a directory (or the reverse) replaces it whole.
- Directory modes and times are applied at the end, so read-only directories can still be filled.

All work is synchronous (os calls); the service runs it in a worker thread. Creating a file is the
costly step on most hosts (more so in nested VMs), and it parallelises: small regular files are read
from the stream in order and created by a few threads, while everything that depends on them (the
same path again, a hard link to it, a directory through it, a removal, the end of a layer) first
waits for the pending creations it could race with.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tarfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_all
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, cast

from podvisor.images.errors import StagingError, UnsafeLayerError

__all__ = ["RootfsBuilder", "UnpackStats", "clean_member_path"]

_COPY = 1 << 20
_INLINE_MAX = 1 << 20         # files up to this size are created by the worker threads
_IN_FLIGHT = 64               # at most this many files (so at most 64 MiB) wait for a worker
_OPAQUE = ".wh..wh..opq"
_WH = ".wh."


@dataclass
class UnpackStats:
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    hardlinks: int = 0
    whiteouts: int = 0
    skipped_devices: int = 0
    bytes: int = 0
    notes: list[str] = field(default_factory=list)


def clean_member_path(name: str, *, what: str = "") -> list[str]:
    """The components of a member name relative to the root; `UnsafeLayerError` if it climbs out."""
    parts: list[str] = []
    for comp in name.split("/"):
        if comp in ("", "."):
            continue
        if comp == "..":
            if not parts:
                raise UnsafeLayerError(f"{what or f'layer member {name!r}'} escapes the image root (path traversal)")
            parts.pop()
            continue
        parts.append(comp)
    return parts


class RootfsBuilder:
    """Builds one merged root in ``root`` from layer tar streams applied with `apply`."""

    def __init__(self, root: Path, *, as_root: bool | None = None, workers: int = 4) -> None:
        self.root = str(root)
        os.makedirs(self.root, mode=0o755, exist_ok=True)
        self.as_root = os.geteuid() == 0 if as_root is None else as_root
        self.stats = UnpackStats()
        self._umask = _current_umask()
        self._uid, self._gid = os.geteuid(), os.getegid()
        self._dirs: dict[str, str] = {"": self.root}          # rel dir -> host path (resolved)
        self._dir_meta: dict[str, tarfile.TarInfo] = {}       # host dir path -> its last header
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="pv-unpack") if workers > 1 else None
        self._pending: dict[str, Future[None]] = {}           # host path -> its creation in a worker
        self._slots = threading.Semaphore(_IN_FLIGHT)

    # --- public ---------------------------------------------------------------------------------
    def apply(self, stream: BinaryIO, *, layer: str = "layer") -> None:
        """Apply one uncompressed tar stream on top of what is there."""
        added: set[str] = set()
        try:
            # "r:" reads straight from our stream (it only seeks forward); tarfile's own stream mode
            # ("r|") re-copies its buffer on every header read, several times slower
            tf = tarfile.open(fileobj=stream, mode="r:", errorlevel=2)
        except tarfile.TarError as exc:
            raise StagingError(f"{layer}: not a tar archive: {exc}") from None
        ok = False
        with tf:
            try:
                while (member := tf.next()) is not None:
                    self._member(tf, member, added, layer)
                    cast(Any, tf).members.clear()   # stream mode keeps every header otherwise
                ok = True
            except tarfile.TarError as exc:
                raise StagingError(f"{layer}: broken tar archive: {exc}") from None
            finally:
                if ok:
                    self._drain()
                else:   # failing anyway: let the workers stop before the caller removes the root
                    wait_all(list(self._pending.values()))
                    self._pending.clear()

    def finish(self) -> UnpackStats:
        """Apply directory modes, owners and times (deepest first) once every layer is in."""
        self._drain()
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        for host, info in sorted(self._dir_meta.items(), key=lambda kv: kv[0].count("/"), reverse=True):
            try:
                st = os.lstat(host)
            except FileNotFoundError:
                continue
            if not stat.S_ISDIR(st.st_mode):
                continue
            self._owner_mode(host, info, None)
            os.utime(host, (info.mtime, info.mtime), follow_symlinks=False)
        return self.stats

    # --- members --------------------------------------------------------------------------------
    def _member(self, tf: tarfile.TarFile, m: tarfile.TarInfo, added: set[str], layer: str) -> None:
        parts = clean_member_path(m.name)
        if not parts:
            if m.isdir():
                self._dir_meta[self.root] = m
            return
        base = parts[-1]
        parent_rel = "/".join(parts[:-1])
        rel = "/".join(parts)
        if base.startswith(_WH):
            self.stats.whiteouts += 1
            if base == _OPAQUE:
                self._opaque(parent_rel, added, m.name)
            elif not base.startswith(_WH + _WH):
                self._whiteout(parent_rel, base[len(_WH):], added, m.name)
            return
        if m.ischr() or m.isblk():
            self.stats.skipped_devices += 1
            return
        parent = self._resolve_dir(parent_rel, m.name)
        path = parent + "/" + base
        added.add(rel)
        if m.isdir():
            self._make_dir(path, rel, m)
            return
        self._wait(path)
        if m.isreg():
            self.stats.files += 1
            self.stats.bytes += m.size
            if self._pool is None or m.size > _INLINE_MAX or m.issparse():
                self._write_file(tf, m, path, rel)
                self._set_xattrs(path, m)
            else:
                data = tf.fileobj.read(m.size) if m.size else b""  # type: ignore[union-attr]
                if len(data) != m.size:
                    raise StagingError(f"layer member {m.name!r} is truncated")
                self._slots.acquire()
                self._pending[path] = self._pool.submit(self._create_small, path, rel, m, data)
            return
        self._clear(path, rel)
        if m.issym():
            self._check_symlink(m, parts)
            os.symlink(m.linkname, path)
            self.stats.symlinks += 1
            if self.as_root:
                os.lchown(path, m.uid, m.gid)
            os.utime(path, (m.mtime, m.mtime), follow_symlinks=False)
        elif m.islnk():
            target = self._link_target(m)
            try:
                os.link(target, path, follow_symlinks=False)
            except FileNotFoundError:
                raise StagingError(f"{layer}: hard link {m.name!r} -> {m.linkname!r}: target missing") from None
            self.stats.hardlinks += 1
        elif m.isfifo():
            os.mkfifo(path, m.mode & 0o7777)
            self._owner_mode(path, m, None)
        else:
            self.stats.notes.append(f"skipped {m.name!r} (tar type {m.type!r})")
            return
        self._set_xattrs(path, m)

    def _create(self, path: str, rel: str, m: tarfile.TarInfo, *, in_worker: bool = False) -> int:
        """Open a new file for ``m`` at ``path``, replacing what a lower layer left there. Few system
        calls (they dominate): the final mode at creation when the umask lets it through, no lstat
        unless the name is taken."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        mode = self._create_mode(m)
        try:
            return os.open(path, flags, mode)
        except FileExistsError:
            if in_worker:
                if stat.S_ISDIR(os.lstat(path).st_mode):
                    raise _Clash() from None        # a directory: the main thread replaces it
                os.unlink(path)
            else:
                self._clear(path, rel)
            return os.open(path, flags, mode)

    def _create_mode(self, m: tarfile.TarInfo) -> int:
        mode = m.mode & 0o7777
        return mode if not (mode & 0o7000) and (mode & ~self._umask) == mode else 0o600

    def _finish_file(self, fd: int, m: tarfile.TarInfo) -> None:
        mode = m.mode & 0o7777
        if self.as_root and (m.uid != self._uid or m.gid != self._gid):
            os.fchown(fd, m.uid, m.gid)     # (clears set-id bits: the fchmod below comes after)
        if self._create_mode(m) != mode:
            os.fchmod(fd, mode)
        os.utime(fd, (m.mtime, m.mtime))

    def _write_file(self, tf: tarfile.TarFile, m: tarfile.TarInfo, path: str, rel: str) -> None:
        """Stream a (big or sparse) member into place from the main thread."""
        fd = self._create(path, rel, m)
        try:
            if m.size:
                # the raw stream is the fastest reader; sparse members need tarfile's hole map
                src = tf.extractfile(m) if m.issparse() else tf.fileobj
                if src is None:
                    raise StagingError(f"cannot read {m.name!r}")
                remaining = m.size
                while remaining > 0:
                    data = src.read(min(_COPY, remaining))
                    if not data:
                        raise StagingError(f"layer member {m.name!r} is truncated")
                    _write_all(fd, data)
                    remaining -= len(data)
            self._finish_file(fd, m)
        finally:
            os.close(fd)

    def _create_small(self, path: str, rel: str, m: tarfile.TarInfo, data: bytes) -> None:
        """A worker thread's job: one small file, whole."""
        try:
            try:
                fd = self._create(path, rel, m, in_worker=True)
            except _Clash:
                raise _Clash(rel, m, data) from None
            try:
                if data:
                    _write_all(fd, data)
                self._finish_file(fd, m)
            finally:
                os.close(fd)
            self._set_xattrs(path, m)
        finally:
            self._slots.release()

    def _wait(self, path: str) -> None:
        """Settle a pending creation of ``path`` before anything else touches that name."""
        fut = self._pending.pop(path, None)
        if fut is not None:
            self._settle(path, fut)

    def _settle(self, path: str, fut: Future[None]) -> None:
        try:
            fut.result()
        except _Clash as clash:
            self._clear(path, clash.rel)
            fd = self._create(path, clash.rel, clash.member)
            try:
                _write_all(fd, clash.data)
                self._finish_file(fd, clash.member)
            finally:
                os.close(fd)
            self._set_xattrs(path, clash.member)

    def _drain(self) -> None:
        """Wait for every pending creation (before removals and at the end of a layer)."""
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        wait_all(list(pending.values()))
        for path, fut in pending.items():
            self._settle(path, fut)

    def _make_dir(self, path: str, rel: str, m: tarfile.TarInfo) -> None:
        self._wait(path)
        try:
            os.mkdir(path, 0o755)
        except FileExistsError:
            st = os.lstat(path)
            if not stat.S_ISDIR(st.st_mode):
                self._remove(path)
                os.mkdir(path, 0o755)
        self._dirs[rel] = path
        self._dir_meta[path] = m
        self._set_xattrs(path, m)
        self.stats.dirs += 1

    def _owner_mode(self, path: str, m: tarfile.TarInfo, fd: int | None) -> None:
        mode = m.mode & 0o7777
        if fd is not None:
            if self.as_root:
                os.fchown(fd, m.uid, m.gid)
            os.fchmod(fd, mode)
            return
        if self.as_root:
            os.lchown(path, m.uid, m.gid)
        os.chmod(path, mode)

    def _set_xattrs(self, path: str, m: tarfile.TarInfo) -> None:
        if not m.pax_headers:
            return
        for key, value in m.pax_headers.items():
            if not key.startswith("SCHILY.xattr."):
                continue
            name = key[len("SCHILY.xattr."):]
            if not self.as_root and not name.startswith("user."):
                continue
            try:
                os.setxattr(path, name, value.encode("utf-8", "surrogateescape"), follow_symlinks=False)
            except OSError as exc:
                if exc.errno not in (errno.ENOTSUP, errno.EPERM, errno.EOPNOTSUPP):
                    raise
                self.stats.notes.append(f"xattr {name} on {m.name!r} not kept: {exc.strerror}")

    # --- whiteouts ------------------------------------------------------------------------------
    def _whiteout(self, parent_rel: str, name: str, added: set[str], member: str) -> None:
        rel = f"{parent_rel}/{name}" if parent_rel else name
        if rel in added:
            return
        parent = self._find_dir(parent_rel, member)
        if parent is None:
            return
        target = parent + "/" + name
        if os.path.lexists(target):
            self._remove(target)
            self._forget(target)

    def _opaque(self, parent_rel: str, added: set[str], member: str) -> None:
        parent = self._resolve_dir(parent_rel, member)
        for entry in os.listdir(parent):
            rel = f"{parent_rel}/{entry}" if parent_rel else entry
            if rel not in added:
                target = parent + "/" + entry
                self._remove(target)
                self._forget(target)

    # --- path resolution ------------------------------------------------------------------------
    def _resolve_dir(self, rel: str, member: str) -> str:
        """The host path of directory ``rel`` (following symlinks inside the root), made if missing."""
        host = self._walk(rel, member, create=True)
        assert host is not None
        return host

    def _find_dir(self, rel: str, member: str) -> str | None:
        """Like `_resolve_dir`, but None where a component is missing."""
        return self._walk(rel, member, create=False)

    def _walk(self, rel: str, member: str, *, create: bool) -> str | None:
        cached = self._dirs.get(rel)
        if cached is not None:
            return cached
        host = self.root
        comps = rel.split("/") if rel else []
        hops = 0
        i = 0
        while i < len(comps):
            comp = comps[i]
            candidate = host + "/" + comp
            if candidate in self._pending:
                self._wait(candidate)
            try:
                st = os.lstat(candidate)
            except FileNotFoundError:
                if not create:
                    return None
                os.mkdir(candidate, 0o755)
                host = candidate
                i += 1
                continue
            if stat.S_ISDIR(st.st_mode):
                host = candidate
                i += 1
                continue
            if stat.S_ISLNK(st.st_mode):
                hops += 1
                if hops > 40:
                    raise UnsafeLayerError(f"layer member {member!r}: too many symlinks resolving {rel!r}")
                target = os.readlink(candidate)
                done = host[len(self.root):].lstrip("/")
                joined = target if target.startswith("/") else f"{done}/{target}"
                # clamp at the root as chroot would: resolution never leaves the image
                base = _clamp(joined)
                comps = base + comps[i + 1:]
                host, i = self.root, 0
                continue
            raise StagingError(f"layer member {member!r}: {'/'.join(comps[:i + 1])!r} is not a directory")
        self._dirs[rel] = host
        return host

    def _link_target(self, m: tarfile.TarInfo) -> str:
        parts = clean_member_path(m.linkname, what=f"hard link {m.name!r} -> {m.linkname!r}")
        if not parts:
            raise UnsafeLayerError(f"hard link {m.name!r} points at the root")
        parent = self._find_dir("/".join(parts[:-1]), m.name)
        if parent is None:
            raise StagingError(f"hard link {m.name!r} -> {m.linkname!r}: target missing")
        self._wait(parent + "/" + parts[-1])
        return parent + "/" + parts[-1]

    def _check_symlink(self, m: tarfile.TarInfo, parts: list[str]) -> None:
        target = m.linkname
        if not target:
            raise UnsafeLayerError(f"symlink {m.name!r} has an empty target")
        if target.startswith("/"):
            return
        if _climbs("/".join(parts[:-1] + [target])):
            raise UnsafeLayerError(f"symlink {m.name!r} -> {target!r} escapes the image root")

    def _clear(self, path: str, rel: str) -> None:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            self._remove(path)
            self._forget(path)
        else:
            os.unlink(path)

    def _remove(self, path: str) -> None:
        self._drain()
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(path)
        else:
            os.unlink(path)

    def _forget(self, host: str) -> None:
        """Drop cached resolutions and directory metadata at or below ``host``."""
        self._dirs = {"": self.root}
        prefix = host + "/"
        for key in [k for k in self._dir_meta if k == host or k.startswith(prefix)]:
            del self._dir_meta[key]


class _Clash(Exception):
    """A worker found a directory where its file goes; the main thread replaces it."""

    def __init__(self, rel: str = "", member: tarfile.TarInfo | None = None, data: bytes = b"") -> None:
        super().__init__(rel)
        self.rel, self.data = rel, data
        self.member = member if member is not None else tarfile.TarInfo()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _current_umask() -> int:
    """The process umask, read without changing it (``os.umask`` would race other threads)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o777    # unknown: always chmod explicitly


def _climbs(path: str) -> bool:
    depth = 0
    for comp in path.split("/"):
        if comp in ("", "."):
            continue
        if comp == "..":
            depth -= 1
            if depth < 0:
                return True
        else:
            depth += 1
    return False


def _clamp(path: str) -> list[str]:
    out: list[str] = []
    for comp in path.split("/"):
        if comp in ("", "."):
            continue
        if comp == "..":
            if out:
                out.pop()
            continue
        out.append(comp)
    return out
