"""Applying layers onto a root: whiteouts, ownership, links, and refusing archives that escape."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import pytest

from podvisor.images.build import tar_directory
from podvisor.images.errors import UnsafeLayerError
from podvisor.images.unpack import RootfsBuilder
from tests.imagebuild import (
    MULTILAYER_ABSENT,
    MULTILAYER_PRESENT,
    TarEntry,
    busybox_rootfs,
    multilayer_layers,
    tar_entries,
)


def _apply(root: Path, *layers: bytes) -> RootfsBuilder:
    builder = RootfsBuilder(root)
    for i, layer in enumerate(layers):
        builder.apply(io.BytesIO(layer), layer=f"layer {i}")
    builder.finish()
    return builder


def _tar_dir(path: Path) -> bytes:
    buf = io.BytesIO()
    tar_directory(path, buf)
    return buf.getvalue()


def test_multilayer_whiteouts_and_opaque_dirs(tmp_path: Path) -> None:
    layers = multilayer_layers(busybox_rootfs(tmp_path / "bb"))
    root = tmp_path / "root"
    _apply(root, *[layer if isinstance(layer, bytes) else _tar_dir(layer) for layer in layers])
    for rel, content in MULTILAYER_PRESENT.items():
        assert os.path.lexists(root / rel), rel
        if content is not None:
            assert (root / rel).read_text() == content, rel
    for rel in MULTILAYER_ABSENT:
        assert not os.path.lexists(root / rel), rel
    assert not list(root.rglob(".wh.*"))
    keep = (root / "data/keep.txt").stat()
    assert (keep.st_uid, keep.st_gid, stat.S_IMODE(keep.st_mode)) == (1000, 1000, 0o640)
    assert keep.st_ino == (root / "data/hard.txt").stat().st_ino
    assert os.readlink(root / "data/link") == "keep.txt"
    assert (root / "bin/busybox").stat().st_mode & 0o111


def test_modes_times_and_special_files(tmp_path: Path) -> None:
    layer = tar_entries([
        TarEntry("ro", kind="dir", mode=0o555, mtime=1_600_000_000),
        TarEntry("ro/file", data=b"x", mode=0o4755, mtime=1_500_000_000),
        TarEntry("dev/null", kind="chardev", mode=0o666),
        TarEntry("dev/sda", kind="blockdev", mode=0o660),
        TarEntry("pipe", kind="fifo", mode=0o600),
        TarEntry("abs", kind="symlink", target="/ro/file"),
    ])
    builder = _apply(tmp_path / "r", layer)
    r = tmp_path / "r"
    assert stat.S_IMODE((r / "ro").stat().st_mode) == 0o555
    assert (r / "ro").stat().st_mtime == 1_600_000_000
    assert stat.S_IMODE((r / "ro/file").stat().st_mode) == 0o4755
    assert (r / "ro/file").stat().st_mtime == 1_500_000_000
    assert not (r / "dev/null").exists() and not (r / "dev/sda").exists()
    assert builder.stats.skipped_devices == 2
    assert stat.S_ISFIFO((r / "pipe").lstat().st_mode)
    assert os.readlink(r / "abs") == "/ro/file"


def test_a_later_layer_replaces_types(tmp_path: Path) -> None:
    lower = tar_entries([TarEntry("a", kind="dir"), TarEntry("a/x", data=b"1"), TarEntry("b", data=b"file")])
    upper = tar_entries([TarEntry("a", data=b"now a file"), TarEntry("b", kind="dir"), TarEntry("b/y", data=b"2")])
    _apply(tmp_path / "r", lower, upper)
    assert (tmp_path / "r/a").read_text() == "now a file"
    assert (tmp_path / "r/b/y").read_text() == "2"


def test_symlinked_directories_resolve_inside_the_root(tmp_path: Path) -> None:
    outside = tmp_path / "host-etc"
    outside.mkdir()
    lower = tar_entries([TarEntry("etc", kind="symlink", target=str(outside)),
                         TarEntry("var", kind="dir"), TarEntry("var/run", kind="symlink", target="../run")])
    upper = tar_entries([TarEntry("etc/passwd", data=b"root\n"), TarEntry("var/run/pid", data=b"1\n")])
    _apply(tmp_path / "r", lower, upper)
    assert not (outside / "passwd").exists()                     # never written on the host
    assert (tmp_path / "r" / str(outside).lstrip("/") / "passwd").read_text() == "root\n"
    assert (tmp_path / "r/run/pid").read_text() == "1\n"


@pytest.mark.parametrize("entries, words", [
    ([TarEntry("../evil", data=b"x")], "escapes the image root"),
    ([TarEntry("a/../../evil", data=b"x")], "escapes the image root"),
    ([TarEntry("link", kind="symlink", target="../../../etc/shadow")], "escapes the image root"),
    ([TarEntry("d", kind="dir"), TarEntry("d/link", kind="symlink", target="../../x")], "escapes the image root"),
    ([TarEntry("f", data=b"x"), TarEntry("h", kind="hardlink", target="../f")], "escapes the image root"),
])
def test_path_traversal_is_refused(tmp_path: Path, entries: list[TarEntry], words: str) -> None:
    with pytest.raises(UnsafeLayerError, match=words):
        _apply(tmp_path / "r", tar_entries(entries))
    assert not (tmp_path / "evil").exists()


def test_whiteout_of_a_missing_file_and_root_entry_are_harmless(tmp_path: Path) -> None:
    layer = tar_entries([TarEntry("./", kind="dir", mode=0o755), TarEntry("nothing/.wh.here"), TarEntry("ok", data=b"1")])
    _apply(tmp_path / "r", layer)
    assert (tmp_path / "r/ok").read_text() == "1"
    assert not (tmp_path / "r/nothing").exists()


def test_xattrs_are_kept_as_root(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root for trusted xattrs")
    layer = tar_entries([TarEntry("f", data=b"x", xattrs=(("user.podvisor", b"\x00\x01v"),))])
    _apply(tmp_path / "r", layer)
    try:
        assert os.getxattr(tmp_path / "r/f", "user.podvisor") == b"\x00\x01v"
    except OSError as exc:   # a file system without user xattrs
        pytest.skip(str(exc))


def test_same_layer_rewrites_settle_in_order(tmp_path: Path) -> None:
    from podvisor.images.errors import StagingError

    layer = tar_entries([TarEntry("a", data=b"first"), TarEntry("a", data=b"second"),
                         TarEntry("b", data=b"file"), TarEntry("b", kind="dir"), TarEntry("b/c", data=b"inside"),
                         TarEntry("l", data=b"target"), TarEntry("h", kind="hardlink", target="l")])
    _apply(tmp_path / "r", layer)
    r = tmp_path / "r"
    assert (r / "a").read_text() == "second"
    assert (r / "b/c").read_text() == "inside"
    assert (r / "h").stat().st_ino == (r / "l").stat().st_ino
    with pytest.raises(StagingError, match="not a directory"):
        _apply(tmp_path / "s", tar_entries([TarEntry("f", data=b"x"), TarEntry("f/child", data=b"y")]))


@pytest.mark.parametrize("workers", [1, 4])
def test_many_files_with_and_without_workers(tmp_path: Path, workers: int) -> None:
    entries = [TarEntry(f"d{i % 7}/f{i}", data=str(i).encode() * (i % 50), mode=0o600 + (i % 3) * 0o44)
               for i in range(600)]
    builder = RootfsBuilder(tmp_path / "r", workers=workers)
    builder.apply(io.BytesIO(tar_entries(entries)))
    builder.finish()
    for i in (0, 1, 2, 599):
        f = tmp_path / "r" / f"d{i % 7}" / f"f{i}"
        assert f.read_bytes() == str(i).encode() * (i % 50)
        assert stat.S_IMODE(f.stat().st_mode) == 0o600 + (i % 3) * 0o44
    assert builder.stats.files == 600
