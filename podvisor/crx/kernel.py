"""The guest kernel: Debian's ``linux-image-cloud-amd64``, taken from its .deb without installing it.

The meta package only depends on the versioned image package, so we resolve that dependency with
``apt-cache depends``, fetch the real package with ``apt-get download`` into a cache directory and
unpack it with ``dpkg-deb -x``. Nothing touches the host's /boot or /lib/modules.

The .deb ships no ``modules.dep`` (depmod runs at install time), so module dependencies are read from
each module's ``.modinfo`` ELF section (``depends=``) and resolved here into a load order the CRX init
follows with ``finit_module``: no modprobe in the guest.
"""

from __future__ import annotations

import gzip
import io
import lzma
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "KernelError",
    "KernelTree",
    "GUEST_MODULES",
    "fetch_kernel_deb",
    "extract_kernel",
    "read_modinfo",
    "module_load_order",
    "extract_pvh_elf",
    "strip_module_signature",
]

META_PACKAGE = "linux-image-cloud-amd64"

# What a pod VM needs beyond the built-in drivers (ext4, tmpfs, cgroups and the serial console are
# built into Debian's cloud kernel), each with the group the CRX init loads it in: "boot" always,
# "virtio-N" only when a virtio device with id N is present (1 net, 2 block), anything else on demand.
# Dependencies are added automatically, into the group of the first module that needs them.
GUEST_MODULES: tuple[tuple[str, str], ...] = (
    ("virtio_mmio", "boot"), ("virtio_blk", "virtio-2"), ("virtio_net", "virtio-1"),
    ("virtio_console", "boot"), ("overlay", "boot"), ("erofs", "erofs"), ("quota_v2", "quota"),
)


class KernelError(RuntimeError):
    """The kernel package could not be fetched or read."""


@dataclass(frozen=True)
class KernelTree:
    """An unpacked kernel package."""

    root: Path
    version: str          # e.g. "6.1.0-56-cloud-amd64"
    vmlinuz: Path
    modules_dir: Path     # <root>/lib/modules/<version>

    def module_index(self) -> dict[str, Path]:
        """module name (underscores) -> .ko path."""
        index: dict[str, Path] = {}
        for ko in self.modules_dir.rglob("*.ko"):
            index[ko.stem.replace("-", "_")] = ko
        return index


def _run(cmd: list[str], *, cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise KernelError(f"{cmd[0]} is not installed") from exc
    if done.returncode != 0:
        raise KernelError(f"{' '.join(cmd)} failed: {(done.stderr or done.stdout).strip()[-400:]}")
    return done.stdout


def _image_package() -> str:
    """The versioned package the meta package depends on (e.g. linux-image-6.1.0-56-cloud-amd64)."""
    out = _run(["apt-cache", "depends", META_PACKAGE])
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("Depends:"):
            name = line.split(":", 1)[1].strip().strip("<>")
            if name.startswith("linux-image-"):
                return name
    raise KernelError(f"apt does not know {META_PACKAGE}; run 'apt-get update' (is the Debian mirror reachable?)")


def fetch_kernel_deb(cache: Path, *, refresh: bool = False) -> Path:
    """The image .deb in ``cache``, downloaded with ``apt-get download`` unless one is cached already."""
    cache.mkdir(parents=True, exist_ok=True)
    cached = sorted(cache.glob("linux-image-*-cloud-amd64_*.deb"))
    if cached and not refresh:
        return cached[-1]
    package = _image_package()
    # apt drops privileges to _apt for downloads; a root-only cache dir makes it warn, not fail.
    _run(["apt-get", "download", "-q", package], cwd=cache)
    found = sorted(cache.glob(f"{package}_*.deb"))
    if not found:
        raise KernelError(f"apt-get download {package} produced no .deb in {cache}")
    for old in cached:
        if old not in found:
            old.unlink(missing_ok=True)
    return found[-1]


def extract_kernel(deb: Path, dest: Path) -> KernelTree:
    """Unpack ``deb`` into ``dest`` (replacing it) and locate the kernel and its modules."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    _run(["dpkg-deb", "-x", str(deb), str(dest)])
    images = sorted((dest / "boot").glob("vmlinuz-*"))
    if not images:
        raise KernelError(f"{deb.name} holds no /boot/vmlinuz-*")
    version = images[-1].name.removeprefix("vmlinuz-")
    modules = dest / "lib" / "modules" / version
    if not modules.is_dir():
        raise KernelError(f"{deb.name} holds no modules for {version}")
    return KernelTree(root=dest, version=version, vmlinuz=images[-1], modules_dir=modules)


def read_modinfo(ko: Path) -> dict[str, list[str]]:
    """The ``key=value`` strings of a module's ``.modinfo`` section (values per key, in order)."""
    data = ko.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise KernelError(f"{ko.name} is not a little-endian ELF64 module (compressed modules are not supported)")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)

    def section(i: int) -> tuple[int, int, int]:
        base = shoff + i * shentsize
        name, = struct.unpack_from("<I", data, base)
        offset, size = struct.unpack_from("<QQ", data, base + 0x18)
        return name, offset, size

    _, str_off, str_size = section(shstrndx)
    names = data[str_off:str_off + str_size]
    info: dict[str, list[str]] = {}
    for i in range(shnum):
        name_off, off, size = section(i)
        end = names.index(b"\0", name_off)
        if names[name_off:end] != b".modinfo":
            continue
        for entry in data[off:off + size].split(b"\0"):
            if b"=" in entry:
                key, _, value = entry.decode("utf-8", "replace").partition("=")
                info.setdefault(key, []).append(value)
    return info


def module_load_order(tree: KernelTree, wanted: tuple[tuple[str, str], ...] = GUEST_MODULES) -> list[tuple[Path, str]]:
    """``wanted`` plus their dependencies, each after what it depends on, with its load group.

    Built-in ones are skipped."""
    index = tree.module_index()
    builtin: set[str] = set()
    builtin_file = tree.modules_dir / "modules.builtin"
    if builtin_file.exists():
        builtin = {Path(line).stem.replace("-", "_") for line in builtin_file.read_text().split()}
    order: list[tuple[Path, str]] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(name: str, chain: tuple[str, ...], group: str) -> None:
        name = name.replace("-", "_")
        if state.get(name) == 2 or name in builtin:
            return
        if state.get(name) == 1:
            raise KernelError(f"module dependency cycle: {' -> '.join(chain + (name,))}")
        ko = index.get(name)
        if ko is None:
            raise KernelError(f"kernel {tree.version} has no module {name} (needed by {' -> '.join(chain) or 'the guest'})")
        state[name] = 1
        info = read_modinfo(ko)
        for dep_list in info.get("depends", []):
            for dep in filter(None, dep_list.split(",")):
                visit(dep, chain + (name,), group)
        for soft in info.get("softdep", []):
            # "pre: a b post: c": only the pre-dependencies must be loaded first
            words = soft.split()
            pre = []
            mode = ""
            for w in words:
                if w.endswith(":"):
                    mode = w
                elif mode == "pre:":
                    pre.append(w)
            for dep in pre:
                if dep.replace("-", "_") in index:
                    visit(dep, chain + (name,), group)
        state[name] = 2
        order.append((ko, group))

    for name, group in wanted:
        visit(name, (), group)
    return order


# bzImage payload magics, by the kernel's CONFIG_KERNEL_* choice
_PAYLOAD_MAGIC = {
    "LZ4": b"\x02\x21\x4c\x18",
    "ZSTD": b"\x28\xb5\x2f\xfd",
    "GZIP": b"\x1f\x8b\x08",
    "XZ": b"\xfd7zXZ\x00",
}
_XEN_ELFNOTE_PHYS32_ENTRY = 18


def _kernel_compression(tree: KernelTree) -> str | None:
    config = tree.root / "boot" / f"config-{tree.version}"
    if config.exists():
        for line in config.read_text().splitlines():
            for name in _PAYLOAD_MAGIC:
                if line == f"CONFIG_KERNEL_{name}=y":
                    return name
    return None


def _decompress(kind: str, data: bytes) -> bytes:
    if kind == "GZIP":
        return gzip.GzipFile(fileobj=io.BytesIO(data)).read()
    if kind == "XZ":
        return lzma.LZMADecompressor().decompress(data)
    tool = {"LZ4": ["lz4", "-dc"], "ZSTD": ["zstd", "-dcq"]}[kind]
    if shutil.which(tool[0]) is None:
        raise KernelError(f"{tool[0]} is not installed (needed to unpack the kernel)")
    # trailing bytes after the compressed stream make the tools complain; the output is still whole
    done = subprocess.run(tool, input=data, capture_output=True, check=False)
    return done.stdout


def _has_pvh_entry(elf: bytes) -> bool:
    if elf[:4] != b"\x7fELF" or elf[4] != 2:
        return False
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for i in range(phnum):
        base = phoff + i * phentsize
        p_type, = struct.unpack_from("<I", elf, base)
        if p_type != 4:  # PT_NOTE
            continue
        off, = struct.unpack_from("<Q", elf, base + 0x08)
        size, = struct.unpack_from("<Q", elf, base + 0x20)
        pos, end = off, off + size
        while pos + 12 <= end:
            namesz, descsz, ntype = struct.unpack_from("<III", elf, pos)
            name = elf[pos + 12:pos + 12 + namesz].rstrip(b"\0")
            if name == b"Xen" and ntype == _XEN_ELFNOTE_PHYS32_ENTRY:
                return True
            pos += 12 + ((namesz + 3) & ~3) + ((descsz + 3) & ~3)
    return False


def extract_pvh_elf(tree: KernelTree) -> bytes | None:
    """The uncompressed kernel ELF from the bzImage if it has a PVH entry point, else None.

    QEMU boots such an ELF directly (no firmware, no in-guest decompression): measured here it reaches
    /init ~0.25 s sooner under TCG than the same kernel's bzImage.
    """
    kind = _kernel_compression(tree)
    if kind is None:
        return None
    image = tree.vmlinuz.read_bytes()
    at = image.find(_PAYLOAD_MAGIC[kind])
    if at < 0:
        return None
    try:
        elf = _decompress(kind, image[at:])
    except (OSError, EOFError, lzma.LZMAError):
        return None
    return elf if _has_pvh_entry(elf) else None


_SIG_MARKER = b"~Module signature appended~\n"


def strip_module_signature(data: bytes) -> bytes:
    """A module without Debian's appended signature (the bundle signature covers it instead).

    Checking each module's signature costs the guest tens of milliseconds per module under TCG; the
    kernel loads unsigned modules (it only taints itself) unless module.sig_enforce is set.
    """
    if not data.endswith(_SIG_MARKER):
        return data
    body = data[:-len(_SIG_MARKER)]
    # struct module_signature: algo, hash, id_type, signer_len, key_id_len, pad[3], __be32 sig_len
    signer_len, key_id_len = body[-9], body[-8]
    sig_len, = struct.unpack(">I", body[-4:])
    return body[:-(12 + sig_len + signer_len + key_id_len)]
