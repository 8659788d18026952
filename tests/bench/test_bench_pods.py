"""`podvisor bench pods` against a real `podvisor up` (control plane, registry, one host running pod VMs):
one short round at N=1, read as a user reads it — the table, the headline and the JSON on the last line.
No figure is compared with a clock; the checks are that every figure is there, positive, and that the
split accounts for the whole create→Running time."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from podvisor.crx.bundle import crx_home
from podvisor.network.hostnet import HostNetwork
from tests.e2e.cluster import Cluster

SPLIT = ("schedule", "image", "vm_boot", "container_start", "status_report")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    base: Path = tmp_path_factory.mktemp("pvbench")
    home = base / "home"
    home.mkdir()
    host = f"pv-bench-{uuid.uuid4().hex[:4]}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PODVISOR_CRX_DIR", str(crx_home()))   # the signed bundle setup built, though HOME is the test's
        c = Cluster(data_dir=base / "data", home=home, extra_args=("--host-name", host))
        c.data_dir.mkdir()
        c.start()
        try:
            yield c
        finally:
            c.stop()
            # the host's pod network outlives `up` by design (a restart adopts its pods); not a test's
            net = HostNetwork(host, pod_cidr="10.88.0.0/24", state_dir=c.data_dir / "network")
            asyncio.run(net.teardown(forget_addresses=True))


def test_bench_pods_one_pod(cluster: Cluster) -> None:
    r = cluster.podvisor("bench", "pods", "--json", "--kubeconfig", str(cluster.kubeconfig),
                         "--data-dir", str(cluster.data_dir), "--bare-runs", "1", timeout=400)
    lines = r.stdout.strip().splitlines()
    assert any(line.startswith("create -> Running") for line in lines)
    assert any(line.startswith("ratio: ") for line in lines)
    result = json.loads(lines[-1])

    assert (result["n"], result["rounds"], result["pods"]) == (1, 1, 1)
    for key in ("ratio", "bare_boot_s", "running_p50_s", "running_p99_s", "ready_p50_s", "ready_p99_s",
                "pods_per_minute"):
        assert result[key] > 0, key
    assert result["ratio"] == pytest.approx(result["running_p99_s"] / result["bare_boot_s"], rel=1e-2)
    assert result["ready_p99_s"] >= result["running_p99_s"]
    assert result["host_cpus"] and result["accel"] in ("kvm", "tcg")

    phases = result["phases_ms"]
    for key in SPLIT:
        assert phases[key]["p50_ms"] >= 0 and phases[key]["p99_ms"] >= phases[key]["p50_ms"], key
    assert phases["vm_boot"]["p50_ms"] > 0 and phases["container_start"]["p50_ms"] > 0
    # one pod: the contiguous split adds up to its create -> Running
    assert sum(phases[k]["p50_ms"] for k in SPLIT) == pytest.approx(result["running_p50_s"] * 1000, abs=1.0)

    # hostd is local: its boot record and the VM's start mode are in the figures
    assert result["hostd_detail"] is True
    assert result["hostd_boot_ms"]["agentReadyMs"]["p50_ms"] > 0
    assert sum(result["vm_start_modes"].values()) == 1
    assert result["warmup"]["pods"] == 1

    # the bench cleans up after itself: its pods are gone
    left = cluster.kubectl("get", "pods", "-A", "-l", "podvisor.io/bench-round", "-o", "name").stdout
    assert left.strip() == ""
