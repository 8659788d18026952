"""The signed CRX bundle: what verification accepts and refuses, and what the build writes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from podvisor.crx.bundle import BundleError, ensure_signing_key, load_public_key, sign_manifest, verify_bundle
from podvisor.crx.protocol import FrameDecoder, encode_frame

PODVISOR = [sys.executable, "-m", "podvisor.cli.main"]


def _verify(home: Path) -> None:
    verify_bundle(home / "bundle", public_key=load_public_key(home / "keys"))


def test_built_bundle_verifies(crx_copy: Path) -> None:
    bundle = verify_bundle(crx_copy / "bundle", public_key=load_public_key(crx_copy / "keys"))
    assert bundle.manifest["format"] == "podvisor-crx/v1"
    assert bundle.cmdline.startswith("console=ttyS0")
    assert set(bundle.manifest["files"]) == {"kernel", "initramfs.cpio", "probe.cpio"}


def test_modified_file_is_refused(crx_copy: Path) -> None:
    path = crx_copy / "bundle" / "initramfs.cpio"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="does not match the signed manifest"):
        _verify(crx_copy)


def test_unsigned_bundle_is_refused(crx_copy: Path) -> None:
    (crx_copy / "bundle" / "manifest.sig").unlink()
    with pytest.raises(BundleError, match="not signed"):
        _verify(crx_copy)


def test_edited_manifest_is_refused(crx_copy: Path) -> None:
    manifest_path = crx_copy / "bundle" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["kernelCmdline"] += " init=/bin/sh"
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    with pytest.raises(BundleError, match="invalid signature"):
        _verify(crx_copy)


def test_bundle_signed_by_another_key_is_refused(crx_copy: Path, tmp_path: Path) -> None:
    manifest = json.loads((crx_copy / "bundle" / "manifest.json").read_text())
    sign_manifest(crx_copy / "bundle", manifest, ensure_signing_key(tmp_path / "other-keys"))
    with pytest.raises(BundleError, match="invalid signature"):
        _verify(crx_copy)


def test_cli_verify_says_ok_or_refused(crx_copy: Path) -> None:
    ok = subprocess.run([*PODVISOR, "crx", "verify", "--home", str(crx_copy)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "CRX bundle OK" in ok.stdout
    (crx_copy / "bundle" / "kernel").write_bytes(b"not a kernel")
    bad = subprocess.run([*PODVISOR, "crx", "verify", "--home", str(crx_copy)], capture_output=True, text=True)
    assert bad.returncode == 1
    assert "REFUSED" in bad.stderr and "kernel" in bad.stderr


def test_build_is_cached_when_up_to_date(crx_dir: Path) -> None:
    from podvisor.crx.build import build_bundle

    result = build_bundle(home=crx_dir)
    assert result.rebuilt is False
    _verify(crx_dir)


def test_initramfs_holds_init_busybox_and_modules(crx_dir: Path) -> None:
    listing = subprocess.run(["cpio", "-t", "--quiet"], input=(crx_dir / "bundle" / "initramfs.cpio").read_bytes(),
                             capture_output=True, check=True).stdout.decode().split()
    for name in ("init", "bin/pv-agent", "bin/busybox", "lib/modules/pv-modules", "lib/modules/virtio_mmio.ko",
                 "lib/modules/virtio_console.ko", "lib/modules/overlay.ko", "dev/console"):
        assert name in listing
    manifest = json.loads((crx_dir / "bundle" / "manifest.json").read_text())
    modules = [m.split()[0] for m in manifest["modules"]]
    # dependencies load first
    assert modules.index("virtio_ring") < modules.index("virtio") < modules.index("virtio_mmio")
    assert modules.index("virtio_mmio") < modules.index("virtio_console")


def test_frames_resynchronise_after_garbage() -> None:
    decoder = FrameDecoder()
    frames = decoder.feed(b"garbage" + encode_frame({"type": "Ping", "id": 1}) + b"PVF1\xff\xff")
    frames += decoder.feed(encode_frame({"type": "Input", "stream": "s"}, b"\x00payload"))
    assert [h["type"] for h, _ in frames] == ["Ping", "Input"]
    assert frames[1][1] == b"\x00payload"
