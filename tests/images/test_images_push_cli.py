"""`podvisor image push/pull/ls/rm` and the push sources, against the real registry."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from podvisor.cli.main import main
from podvisor.images.build import tar_directory
from podvisor.images.push import PushHistory, push_image
from podvisor.images.reference import parse_reference
from podvisor.images.service import ImageService
from podvisor.images.sources import ImageSettings, load_source
from tests.imagebuild import busybox_rootfs
from tests.registry.harness import RunningRegistry


@pytest.fixture
def host(registry: RunningRegistry, tmp_path: Path) -> Path:
    """A data dir as `podvisor up` leaves it: status.json naming the registry, the admin token."""
    d = tmp_path / "pv"
    (d / "pki").mkdir(parents=True)
    (d / "pki" / "admin-token").write_text(registry.admin_token + "\n")
    (d / "status.json").write_text(json.dumps({"api": "https://127.0.0.1:1", "registry": registry.address}))
    return d


def test_cli_push_pull_ls_rm(host: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                             registry: RunningRegistry) -> None:
    rootfs = busybox_rootfs(tmp_path / "rootfs")
    assert main(["image", "push", "--data-dir", str(host), str(rootfs), "default/clibox:1", "--cmd", "/bin/sh",
                 "--env", "A=1", "--workdir", "/www"]) == 0
    assert "pushed" in capsys.readouterr().out
    ref = f"{registry.address}/default/clibox:1"
    assert main(["image", "pull", "--data-dir", str(host), ref]) == 0
    assert "pulled in" in capsys.readouterr().out
    assert main(["image", "pull", "--data-dir", str(host), ref]) == 0
    assert "already present" in capsys.readouterr().out
    assert main(["image", "ls", "--data-dir", str(host)]) == 0
    assert "default/clibox:1" in capsys.readouterr().out
    assert main(["image", "ls", "--data-dir", str(host), "--json"]) == 0
    row = json.loads(capsys.readouterr().out.splitlines()[0])
    assert row["config"]["env"] == ["A=1"] and row["config"]["workdir"] == "/www"
    assert row["config"]["cmd"] == ["/bin/sh"]
    assert main(["image", "rm", "--data-dir", str(host), ref]) == 0
    capsys.readouterr()
    assert main(["image", "ls", "--data-dir", str(host), "--json"]) == 0
    assert capsys.readouterr().out.strip() == ""


def test_cli_push_refused_without_rights(host: Path, tmp_path: Path, registry: RunningRegistry,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    rootfs = busybox_rootfs(tmp_path / "rootfs")
    code = main(["image", "push", "--data-dir", str(host), str(rootfs), "team2/x:1", "--username", "dev",
                 "--password", registry.tokens["dev"]])
    assert code == 1
    assert "401" in capsys.readouterr().err


def test_cli_needs_a_registry(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["image", "push", "--data-dir", str(tmp_path), str(tmp_path), "default/x:1"])
    assert code == 1
    assert "no embedded registry" in capsys.readouterr().err


def _docker_archive(rootfs: Path, dest: Path) -> Path:
    """What `docker save` writes: manifest.json, the config, one uncompressed layer.tar."""
    layer = io.BytesIO()
    tar_directory(rootfs, layer)
    diff_id = "sha256:" + hashlib.sha256(layer.getvalue()).hexdigest()
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
                         "rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode()
    cfg_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps([{"Config": cfg_name, "RepoTags": ["bb:latest"], "Layers": ["abc/layer.tar"]}]).encode()
    with tarfile.open(dest, "w") as tf:
        for name, data in ((cfg_name, config), ("abc/layer.tar", layer.getvalue()), ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return dest


async def test_sources_docker_archive_and_rootfs_tarball(registry: RunningRegistry, tmp_path: Path,
                                                         data_dir: Path) -> None:
    rootfs = busybox_rootfs(tmp_path / "rootfs")
    archive = _docker_archive(rootfs, tmp_path / "saved.tar")
    tarball = tmp_path / "rootfs.tar.gz"
    with gzip.open(tarball, "wb") as gz:
        tar_directory(rootfs, gz)  # type: ignore[arg-type]
    cred = registry.credential("admin")
    for name, source, kind in (("saved", archive, "docker-archive"), ("tarball", tarball, "rootfs-tarball")):
        image = load_source(source, tmp_path / f"scratch-{name}", ImageSettings(cmd=["/bin/echo", "hi"]))
        assert image.kind == kind
        await push_image(image, parse_reference(f"{registry.address}/default/{name}:1"), credential=cred)
    async with ImageService(data_dir, keychain=registry.keychain()) as svc:
        saved = await svc.ensure_image(f"{registry.address}/default/saved:1")
        tar = await svc.ensure_image(f"{registry.address}/default/tarball:1")
    assert saved.config.cmd == ("/bin/sh",)           # a docker archive keeps its own config
    assert tar.config.cmd == ("/bin/echo", "hi")
    assert saved.unpacked_size == tar.unpacked_size > 1_000_000


async def test_chunked_upload_existing_blob_skip_and_mount(registry: RunningRegistry, tmp_path: Path) -> None:
    rootfs = busybox_rootfs(tmp_path / "rootfs")
    image = load_source(rootfs, tmp_path / "scratch", ImageSettings(cmd=["/bin/sh"]))
    history = PushHistory(tmp_path / "pushed.json")
    cred = registry.credential("admin")
    first = await push_image(image, parse_reference(f"{registry.address}/default/chunked:1"), credential=cred,
                             history=history, chunk_size=256 << 10)
    assert first.uploaded == 2 or first.skipped > 0
    again = await push_image(image, parse_reference(f"{registry.address}/default/chunked:2"), credential=cred,
                             history=history)
    assert again.uploaded == 0 and again.skipped == 2
    mounted = await push_image(image, parse_reference(f"{registry.address}/default/mounted:1"), credential=cred,
                               history=PushHistory(tmp_path / "pushed.json"))
    assert mounted.uploaded == 0 and mounted.mounted == 2
    # a member of another project cannot mount from a project it may not read
    dev = registry.credential("dev")
    other = await push_image(image, parse_reference(f"{registry.address}/team1/copy:1"), credential=dev,
                             history=PushHistory(tmp_path / "pushed.json"))
    assert other.mounted == 0 and other.uploaded == 2
