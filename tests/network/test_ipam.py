"""IPAM: addresses from the podCIDR, stable per pod UID, persisted, released, and a clear error when full."""

from __future__ import annotations

import ipaddress
import json
import threading
from pathlib import Path

import pytest

from podvisor.network import IPAM, IPAMError, IPAMExhausted


def ipam(tmp_path: Path, cidr: str = "10.88.0.0/24") -> IPAM:
    return IPAM(pod_cidr=cidr, state_file=tmp_path / "ipam.json")


def test_allocates_after_the_gateway_and_is_idempotent(tmp_path: Path) -> None:
    a = ipam(tmp_path)
    assert str(a.gateway) == "10.88.0.1"
    assert str(a.allocate("pod-a")) == "10.88.0.2"
    assert str(a.allocate("pod-b")) == "10.88.0.3"
    assert str(a.allocate("pod-a")) == "10.88.0.2"
    assert {k: str(v) for k, v in a.allocations().items()} == {"pod-a": "10.88.0.2", "pod-b": "10.88.0.3"}


def test_assignments_survive_a_restart(tmp_path: Path) -> None:
    ipam(tmp_path).allocate("pod-a")
    ipam(tmp_path).allocate("pod-b")
    again = ipam(tmp_path)
    assert str(again.get("pod-a")) == "10.88.0.2"
    assert str(again.allocate("pod-b")) == "10.88.0.3"
    assert str(again.allocate("pod-c")) == "10.88.0.4"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_release_frees_and_is_idempotent(tmp_path: Path) -> None:
    a = ipam(tmp_path)
    ip = a.allocate("pod-a")
    assert a.release("pod-a") == ip
    assert a.release("pod-a") is None
    assert a.get("pod-a") is None
    assert ipam(tmp_path).allocations() == {}


def test_released_address_is_not_reused_at_once(tmp_path: Path) -> None:
    a = ipam(tmp_path)
    first = a.allocate("pod-a")
    a.release("pod-a")
    assert a.allocate("pod-b") != first


def test_exhaustion_is_a_clear_error_and_release_makes_room(tmp_path: Path) -> None:
    a = ipam(tmp_path, "10.88.0.0/29")   # .0 network, .1 gateway, .7 broadcast: .2-.6 for pods
    assert a.capacity == 5
    got = {str(a.allocate(f"pod-{i}")) for i in range(5)}
    assert got == {f"10.88.0.{i}" for i in range(2, 7)}
    with pytest.raises(IPAMExhausted, match=r"no free pod IP in 10\.88\.0\.0/29.*5 addresses"):
        a.allocate("pod-late")
    freed = a.release("pod-3")
    assert a.allocate("pod-late") == freed


def test_retain_releases_pods_that_are_gone(tmp_path: Path) -> None:
    a = ipam(tmp_path)
    for uid in ("a", "b", "c"):
        a.allocate(uid)
    gone = a.retain(["b"])
    assert sorted(gone) == ["a", "c"]
    assert list(a.allocations()) == ["b"]


@pytest.mark.parametrize("cidr", ["10.88.0.0/31", "10.88.0.1/24", "fd00::/64", "not-a-cidr"])
def test_unusable_pod_cidrs_are_refused(tmp_path: Path, cidr: str) -> None:
    with pytest.raises(IPAMError, match="podCIDR"):
        ipam(tmp_path, cidr)


def test_state_of_another_pod_cidr_is_refused(tmp_path: Path) -> None:
    ipam(tmp_path, "10.88.0.0/24").allocate("pod-a")
    with pytest.raises(IPAMError, match="podCIDR 10.88.0.0/24, not 10.89.0.0/24"):
        ipam(tmp_path, "10.89.0.0/24").allocate("pod-b")


def test_corrupt_state_is_an_error_not_a_silent_reset(tmp_path: Path) -> None:
    (tmp_path / "ipam.json").write_text("{not json")
    with pytest.raises(IPAMError, match="unreadable IPAM state"):
        ipam(tmp_path).allocate("pod-a")
    (tmp_path / "ipam.json").write_text(json.dumps(
        {"podCIDR": "10.88.0.0/24", "allocations": {"pod-a": "192.0.2.9"}}))
    with pytest.raises(IPAMError, match="bad entry"):
        ipam(tmp_path).get("pod-a")


def test_concurrent_allocators_never_share_an_address(tmp_path: Path) -> None:
    results: list[ipaddress.IPv4Address] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        own = ipam(tmp_path)   # its own instance, as another process would have
        for i in range(10):
            ip = own.allocate(f"w{n}-{i}")
            with lock:
                results.append(ip)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 40 == len(set(results))
    assert len(ipam(tmp_path).allocations()) == 40
