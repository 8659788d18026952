"""Restart durability: a second `podvisor up` on the same data dir finds every object where it was."""

from __future__ import annotations

import json
from pathlib import Path

from tests.e2e.cluster import Cluster


def test_objects_and_resource_versions_survive_restart(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    data = tmp_path / "data"
    data.mkdir()
    c = Cluster(data_dir=data, home=home)
    c.start()
    try:
        c.kubectl("create", "namespace", "keep")
        c.kubectl("-n", "keep", "create", "configmap", "c1", "--from-literal=a=b")
        c.kubectl("-n", "keep", "label", "configmap", "c1", "x=y")
        before = json.loads(c.kubectl("-n", "keep", "get", "cm", "c1", "-o", "json").stdout)
        status = json.loads(c.podvisor("status", "--data-dir", str(data), "--json").stdout)
        assert status["api"] == f"https://127.0.0.1:{c.port}"
        assert status["up"] is True
    finally:
        assert c.stop() == 0
    # stopped: status says so
    assert c.podvisor("status", "--data-dir", str(data), "--json", check=False).returncode == 1
    c.start()
    try:
        after = json.loads(c.kubectl("-n", "keep", "get", "cm", "c1", "-o", "json").stdout)
        assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
        assert after["metadata"]["uid"] == before["metadata"]["uid"]
        assert after["data"] == {"a": "b"} and after["metadata"]["labels"] == {"x": "y"}
        # new writes continue the same revision sequence
        c.kubectl("-n", "keep", "create", "configmap", "c2", "--from-literal=a=b")
        rv2 = c.kubectl("-n", "keep", "get", "cm", "c2", "-o", "jsonpath={.metadata.resourceVersion}").stdout
        assert int(rv2) > int(before["metadata"]["resourceVersion"])
    finally:
        c.stop()
