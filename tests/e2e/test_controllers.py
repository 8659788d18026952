"""Control loops a user relies on: deleting a namespace empties it, ownerReferences cascade."""

from __future__ import annotations

import json
import time

import yaml

from tests.e2e.cluster import Cluster


def _wait_gone(cluster: Cluster, *args: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cluster.kubectl("get", *args, check=False).returncode != 0:
            return
        time.sleep(0.3)
    raise AssertionError(f"{args} still there after {timeout}s")


def test_namespace_deletion_removes_its_objects(cluster: Cluster) -> None:
    cluster.kubectl("create", "namespace", "doomed")
    cluster.kubectl("-n", "doomed", "create", "configmap", "c", "--from-literal=a=b")
    cluster.kubectl("-n", "doomed", "create", "secret", "generic", "s", "--from-literal=a=b")
    r = cluster.kubectl("delete", "namespace", "doomed", "--wait=true", timeout=60)
    assert 'namespace "doomed" deleted' in r.stdout
    assert cluster.kubectl("get", "namespace", "doomed", check=False).returncode != 0
    # a namespace of the same name starts empty
    cluster.kubectl("create", "namespace", "doomed")
    assert cluster.kubectl("-n", "doomed", "get", "cm", "c", check=False).returncode != 0
    cluster.kubectl("delete", "namespace", "doomed", "--wait=true", timeout=60)


def _owned_pair(cluster: Cluster, owner: str) -> str:
    cluster.kubectl("create", "configmap", owner, "--from-literal=a=b")
    uid = cluster.kubectl("get", "cm", owner, "-o", "jsonpath={.metadata.uid}").stdout
    dep = {"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": f"{owner}-dep", "ownerReferences": [
               {"apiVersion": "v1", "kind": "ConfigMap", "name": owner, "uid": uid, "blockOwnerDeletion": True}]},
           "data": {"x": "v"}}
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(dep))
    return uid


def test_background_cascade(cluster: Cluster) -> None:
    _owned_pair(cluster, "own-bg")
    cluster.kubectl("delete", "cm", "own-bg")
    _wait_gone(cluster, "cm", "own-bg-dep")


def test_foreground_cascade(cluster: Cluster) -> None:
    _owned_pair(cluster, "own-fg")
    cluster.kubectl("delete", "cm", "own-fg", "--cascade=foreground", "--wait=true", timeout=60)
    _wait_gone(cluster, "cm", "own-fg-dep")
    _wait_gone(cluster, "cm", "own-fg")


def test_orphan_keeps_dependents(cluster: Cluster) -> None:
    _owned_pair(cluster, "own-or")
    cluster.kubectl("delete", "cm", "own-or", "--cascade=orphan", "--wait=true", timeout=60)
    _wait_gone(cluster, "cm", "own-or")
    time.sleep(1)
    dep = json.loads(cluster.kubectl("get", "cm", "own-or-dep", "-o", "json").stdout)
    assert not dep["metadata"].get("ownerReferences")
