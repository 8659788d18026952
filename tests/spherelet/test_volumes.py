"""Volume projection: what each volume kind holds, with modes, items and keys, in the atomic layout."""

from __future__ import annotations

import base64
import posixpath
from typing import Any

import pytest

from podvisor.spherelet.runtime import FileOp
from podvisor.spherelet.volumes import MountError, VolumeFile, atomic_ops, plan_volume
from tests.spherelet.test_envvars import Objects

POD: dict[str, Any] = {
    "metadata": {"name": "web", "namespace": "team", "uid": "u-1", "labels": {"b": "2", "a": "1"},
                 "annotations": {"note": 'say "hi"'}},
    "spec": {"serviceAccountName": "default",
             "containers": [{"name": "c", "resources": {"limits": {"memory": "64Mi"}}}]},
}


def objects() -> Objects:
    objs = Objects()
    objs.cms[("team", "cfg")] = {"data": {"app.conf": "x=1\n", "other": "o"},
                                 "binaryData": {"blob": base64.b64encode(b"\x00\x01").decode()}}
    objs.secrets[("team", "creds")] = {"data": {"password": base64.b64encode(b"pw").decode(),
                                                "user": base64.b64encode(b"me").decode()}}
    return objs


def files(plan: Any) -> dict[str, tuple[bytes, int]]:
    return {f.path: (f.data, f.mode) for f in plan.files}


async def test_configmap_all_keys_and_items() -> None:
    objs = objects()
    plan = await plan_volume(POD, {"name": "v", "configMap": {"name": "cfg"}}, sources=objs)
    assert files(plan) == {"app.conf": (b"x=1\n", 0o644), "blob": (b"\x00\x01", 0o644), "other": (b"o", 0o644)}
    assert plan.medium == ""
    plan = await plan_volume(POD, {"name": "v", "configMap": {
        "name": "cfg", "defaultMode": 0o600, "items": [{"key": "app.conf", "path": "conf/app.conf", "mode": 0o400},
                                                      {"key": "other", "path": "o.txt"}]}}, sources=objs)
    assert files(plan) == {"conf/app.conf": (b"x=1\n", 0o400), "o.txt": (b"o", 0o600)}


async def test_secret_is_memory_backed_and_decoded() -> None:
    plan = await plan_volume(POD, {"name": "s", "secret": {"secretName": "creds", "items": [
        {"key": "password", "path": "pw"}]}}, sources=objects())
    assert plan.medium == "Memory"
    assert files(plan) == {"pw": (b"pw", 0o644)}


async def test_missing_sources() -> None:
    objs = objects()
    with pytest.raises(MountError, match='configmap "nope" not found'):
        await plan_volume(POD, {"name": "v", "configMap": {"name": "nope"}}, sources=objs)
    plan = await plan_volume(POD, {"name": "v", "configMap": {"name": "nope", "optional": True}}, sources=objs)
    assert plan.files == []
    with pytest.raises(MountError, match="non-existent config key: missing"):
        await plan_volume(POD, {"name": "v", "configMap": {"name": "cfg", "items": [{"key": "missing", "path": "m"}]}},
                          sources=objs)
    with pytest.raises(MountError, match='secret "nope" not found'):
        await plan_volume(POD, {"name": "v", "secret": {"secretName": "nope"}}, sources=objs)
    with pytest.raises(MountError, match="not supported"):
        await plan_volume(POD, {"name": "v", "nfs": {"server": "x", "path": "/"}}, sources=objs)


async def test_downward_api() -> None:
    plan = await plan_volume(POD, {"name": "d", "downwardAPI": {"items": [
        {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
        {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}},
        {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
        {"path": "mem", "resourceFieldRef": {"containerName": "c", "resource": "limits.memory", "divisor": "1Mi"}},
    ]}}, sources=objects())
    f = files(plan)
    assert f["labels"][0] == b'a="1"\nb="2"'
    assert f["annotations"][0] == b'note="say \\"hi\\""'
    assert f["name"][0] == b"web" and f["mem"][0] == b"64"


async def test_projected_with_token() -> None:
    async def tokens(pod: Any, audience: str, expiration: int) -> str | None:
        return f"token-for-{pod['metadata']['name']}-{audience}"

    vol = {"name": "p", "projected": {"defaultMode": 0o440, "sources": [
        {"configMap": {"name": "cfg", "items": [{"key": "other", "path": "other"}]}},
        {"secret": {"name": "creds", "items": [{"key": "user", "path": "user"}]}},
        {"downwardAPI": {"items": [{"path": "ns", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
        {"serviceAccountToken": {"path": "token", "audience": "api", "expirationSeconds": 3600}},
    ]}}
    plan = await plan_volume(POD, vol, sources=objects(), tokens=tokens)
    assert plan.medium == "Memory"
    assert files(plan) == {"other": (b"o", 0o440), "user": (b"me", 0o440), "ns": (b"team", 0o440),
                           "token": (b"token-for-web-api", 0o440)}
    plan = await plan_volume(POD, vol, sources=objects(), tokens=None)
    assert "token" not in files(plan) and plan.warnings


async def test_empty_dir() -> None:
    plan = await plan_volume(POD, {"name": "e", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
                             sources=objects())
    assert (plan.kind, plan.medium, plan.size_limit, plan.files) == ("emptyDir", "Memory", 64 * 2**20, None)


def apply(tree: dict[str, tuple[str, Any]], ops: list[FileOp]) -> None:
    for op in ops:
        if op.kind == "remove":
            for p in [p for p in tree if p == op.path or p.startswith(op.path + "/")]:
                del tree[p]
        elif op.kind == "symlink":
            tree[op.path] = ("link", op.target)
        elif op.kind == "file":
            tree[op.path] = ("file", op.data)


def read(tree: dict[str, tuple[str, Any]], path: str) -> bytes:
    """Follow symlinks in every component, as open(2) does."""
    for _ in range(20):
        parts = path.split("/")
        for i in range(1, len(parts) + 1):
            prefix = "/".join(parts[:i])
            entry = tree.get(prefix)
            if entry is not None and entry[0] == "link":
                target = posixpath.normpath(posixpath.join(posixpath.dirname(prefix), entry[1]))
                path = "/".join([target, *parts[i:]])
                break
        else:
            return bytes(tree[path][1])
    raise RuntimeError("symlink loop")


def test_atomic_layout_update_and_removal() -> None:
    tree: dict[str, tuple[str, Any]] = {}
    v1 = [VolumeFile("a", b"1"), VolumeFile("dir/b", b"2")]
    ops, version = atomic_ops("volumes/cfg", v1)
    apply(tree, ops)
    assert tree["volumes/cfg/..data"] == ("link", f"..{version}")
    assert read(tree, "volumes/cfg/a") == b"1" and read(tree, "volumes/cfg/dir/b") == b"2"
    # the switch is one symlink replacement: new payload first, then ..data, then the top-level names
    kinds = [op.kind for op in ops]
    assert kinds.index("symlink") > max(i for i, k in enumerate(kinds) if k == "file")
    v2 = [VolumeFile("a", b"one")]
    ops2, version2 = atomic_ops("volumes/cfg", v2, previous=v1, previous_version=version)
    apply(tree, ops2)
    assert read(tree, "volumes/cfg/a") == b"one"
    assert "volumes/cfg/dir" not in tree and not any(p.startswith(f"volumes/cfg/..{version}") for p in tree)
    again, same = atomic_ops("volumes/cfg", [VolumeFile("a", b"one")])
    assert same == version2
