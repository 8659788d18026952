"""The signed CRX bundle: what a pod VM boots, and the proof that it is what `podvisor crx build` made.

A bundle is a directory::

    kernel            the guest kernel: the uncompressed ELF (booted through its PVH entry, no
                      in-guest decompression), or the bzImage where no PVH entry was found
    initramfs.cpio    CRX init + guest agent (one static binary), busybox, kernel modules
    probe.cpio        a bare init that prints one line: the KVM probe and the benchmark's baseline boot
    manifest.json     every file's sha256 and size, the kernel command line, versions
    manifest.sig      Ed25519 signature of manifest.json's exact bytes (base64)

The signing key is made once, at the first build, under ``<crx home>/keys`` (``signing.key`` is 0600);
hostd trusts ``signing.pub`` from there, never a key found inside a bundle. Verification checks the
signature first and then every digest, reading each file once; ``verify_bundle(open_files=True)`` keeps
the verified files open so the VM is booted from exactly the bytes that were hashed. This is the pod
VM's Secure Boot: an unsigned, re-signed or modified bundle raises `BundleError` and nothing boots.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = [
    "BundleError",
    "Bundle",
    "BUNDLE_FILES",
    "MANIFEST_FORMAT",
    "crx_home",
    "default_bundle_dir",
    "ensure_signing_key",
    "load_public_key",
    "key_fingerprint",
    "sign_manifest",
    "verify_bundle",
    "load_signed_manifest",
    "open_bundle_files",
    "check_digests",
]

MANIFEST_FORMAT = "podvisor-crx/v1"
BUNDLE_FILES = ("kernel", "initramfs.cpio", "probe.cpio")


class BundleError(Exception):
    """The bundle is missing, unsigned, signed by another key, or does not match its manifest."""


def crx_home() -> Path:
    """Where bundles and the signing key live: $PODVISOR_CRX_DIR, else ~/.cache/podvisor/crx."""
    env = os.environ.get("PODVISOR_CRX_DIR")
    return Path(env) if env else Path.home() / ".cache" / "podvisor" / "crx"


def default_bundle_dir() -> Path:
    return crx_home() / "bundle"


def ensure_signing_key(keys_dir: Path) -> Ed25519PrivateKey:
    """The Ed25519 signing key in ``keys_dir``, made (0600) if there is none yet."""
    keys_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(keys_dir, 0o700)
    key_path = keys_dir / "signing.key"
    pub_path = keys_dir / "signing.pub"
    if key_path.exists():
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise BundleError(f"{key_path} is not an Ed25519 key")
    else:
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        tmp = key_path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        os.replace(tmp, key_path)
    pub = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    if not pub_path.exists() or pub_path.read_bytes() != pub:
        pub_path.write_bytes(pub)
    return key


def load_public_key(keys_dir: Path | None = None) -> Ed25519PublicKey:
    path = (keys_dir or crx_home() / "keys") / "signing.pub"
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except FileNotFoundError as exc:
        raise BundleError(f"no CRX signing key at {path}: run 'podvisor crx build' (make setup does)") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise BundleError(f"{path} is not an Ed25519 public key")
    return key


def key_fingerprint(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def sign_manifest(bundle_dir: Path, manifest: dict[str, Any], key: Ed25519PrivateKey) -> None:
    """Write manifest.json and its signature."""
    body = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    (bundle_dir / "manifest.json").write_bytes(body)
    (bundle_dir / "manifest.sig").write_text(base64.b64encode(key.sign(body)).decode() + "\n")


@dataclass
class Bundle:
    """A verified bundle. With ``fds``, each file is held open at the offset 0 that was hashed."""

    dir: Path
    manifest: dict[str, Any]
    fds: dict[str, int] = field(default_factory=dict)

    def path(self, name: str) -> Path:
        return self.dir / name

    def fd_path(self, name: str) -> str:
        """A path QEMU can open that names the verified file (the open fd if there is one)."""
        fd = self.fds.get(name)
        return f"/proc/self/fd/{fd}" if fd is not None else str(self.dir / name)

    @property
    def cmdline(self) -> str:
        return str(self.manifest.get("kernelCmdline", ""))

    def close(self) -> None:
        for fd in self.fds.values():
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds.clear()


def _hash_fd(fd: int) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    while True:
        chunk = os.pread(fd, 1 << 20, size)
        if not chunk:
            break
        h.update(chunk)
        size += len(chunk)
    return h.hexdigest(), size


def load_signed_manifest(bundle_dir: Path | None = None, *, public_key: Ed25519PublicKey | None = None) -> Bundle:
    """The bundle's manifest after checking its signature (files not yet hashed: see `check_digests`)."""
    bundle_dir = bundle_dir or default_bundle_dir()
    manifest_path = bundle_dir / "manifest.json"
    sig_path = bundle_dir / "manifest.sig"
    if not manifest_path.exists():
        raise BundleError(f"no CRX bundle at {bundle_dir}: run 'podvisor crx build'")
    if not sig_path.exists():
        raise BundleError(f"the CRX bundle at {bundle_dir} is not signed (no manifest.sig): refusing to boot it")
    key = public_key or load_public_key()
    body = manifest_path.read_bytes()
    try:
        signature = base64.b64decode(sig_path.read_text().strip(), validate=True)
        key.verify(signature, body)
    except (InvalidSignature, ValueError) as exc:
        raise BundleError(f"the CRX bundle at {bundle_dir} has an invalid signature (manifest.json modified, "
                          f"or signed by another key than {key_fingerprint(key)}): refusing to boot it") from exc
    try:
        manifest: dict[str, Any] = json.loads(body)
    except ValueError as exc:
        raise BundleError(f"{manifest_path} is not JSON") from exc
    if manifest.get("format") != MANIFEST_FORMAT:
        raise BundleError(f"{manifest_path}: unknown bundle format {manifest.get('format')!r}")
    files = manifest.get("files") or {}
    for name in BUNDLE_FILES:
        if not isinstance(files.get(name), dict):
            raise BundleError(f"the CRX manifest lists no {name}")
    return Bundle(dir=bundle_dir, manifest=manifest)


def open_bundle_files(bundle: Bundle) -> None:
    """Open every bundle file (kept in ``bundle.fds``) so later reads and QEMU see the same inodes."""
    try:
        for name in BUNDLE_FILES:
            if name not in bundle.fds:
                try:
                    bundle.fds[name] = os.open(bundle.dir / name, os.O_RDONLY | os.O_CLOEXEC)
                except FileNotFoundError as exc:
                    raise BundleError(f"the CRX bundle lacks {name}") from exc
    except BaseException:
        bundle.close()
        raise


def check_digests(bundle: Bundle) -> None:
    """Hash every file (through the open fds if any) against the signed manifest; blocking."""
    for name in BUNDLE_FILES:
        entry = bundle.manifest["files"][name]
        fd = bundle.fds.get(name)
        own = fd is None
        if fd is None:
            try:
                fd = os.open(bundle.dir / name, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError as exc:
                raise BundleError(f"the CRX bundle lacks {name}") from exc
        try:
            digest, size = _hash_fd(fd)
        finally:
            if own:
                os.close(fd)
        if digest != entry.get("sha256") or size != entry.get("size"):
            raise BundleError(f"{bundle.dir / name} does not match the signed manifest "
                              f"(sha256 {digest[:16]}..., expected {str(entry.get('sha256'))[:16]}...): "
                              "the bundle was modified; refusing to boot it")


def verify_bundle(bundle_dir: Path | None = None, *, public_key: Ed25519PublicKey | None = None,
                  open_files: bool = False) -> Bundle:
    """Check the signature and every digest; raise `BundleError` saying exactly what is wrong."""
    bundle = load_signed_manifest(bundle_dir, public_key=public_key)
    try:
        if open_files:
            open_bundle_files(bundle)
        check_digests(bundle)
    except BaseException:
        bundle.close()
        raise
    return bundle

