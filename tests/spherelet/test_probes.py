"""Probe timing and thresholds, and crash-loop back-off, on an injected clock (no waiting)."""

from __future__ import annotations

from typing import Any

from podvisor.spherelet.backoff import CrashBackOff, format_delay
from podvisor.spherelet.probes import ContainerProbes, ProbeSpec, ProbeTracker
from podvisor.spherelet.runtime import ContainerSpec, SandboxSpec
from tests.spherelet.fakeclock import FakeClock
from tests.spherelet.fakeruntime import FakeRuntime


def test_tracker_thresholds() -> None:
    spec = ProbeSpec(handler={}, success_threshold=2, failure_threshold=3)
    r = ProbeTracker(spec, "readiness")
    assert r.result is False
    assert not r.record(True) and r.result is False          # one success is not enough
    assert r.record(True) and r.result is True
    assert not r.record(False) and not r.record(False)
    assert r.record(False) and r.result is False
    live = ProbeTracker(ProbeSpec.from_k8s({"successThreshold": 5}, "liveness"), "liveness")
    assert live.result is True and live.spec.success_threshold == 1
    assert ProbeSpec.from_k8s({}, "readiness") == ProbeSpec(handler={}, initial_delay=0, period=10, timeout=1,
                                                            success_threshold=1, failure_threshold=3)


def test_crash_backoff_doubles_caps_and_resets() -> None:
    now = [1000.0]
    b = CrashBackOff(clock=lambda: now[0])
    key = ("uid", "c")
    assert b.remaining(key, 1000.0) == 0                     # the first restart is immediate
    assert b.restarted(key, 1000.0) == 10
    now[0] = 1003.0
    assert b.remaining(key, 1002.0) == 9                     # counted from when it last finished
    now[0] = 1012.0
    assert b.remaining(key, 1002.0) == 0
    delays = [b.restarted(key, 1012.0 + i) for i in range(8)]
    assert delays == [20, 40, 80, 160, 300, 300, 300, 300]
    assert b.restarted(key, 1012.0 + 7 + 601) == 10           # ran long enough: back to the start
    assert format_delay(10) == "10s" and format_delay(80) == "1m20s" and format_delay(300) == "5m0s"


async def _running(rt: FakeRuntime, container: dict[str, Any]) -> str:
    spec = SandboxSpec(id="sb", pod_uid="u", pod_namespace="ns", pod_name="p", attempt=0, hostname="p", vcpus=1,
                       memory_mib=256, ephemeral_bytes=1 << 30)
    await rt.create_sandbox(spec)
    await rt.create_container("sb", ContainerSpec(id="c-0", name="c", image="img", args=("fake", "run")))
    await rt.start_container("sb", "c-0")
    return "c-0"


async def test_probe_timing_and_startup_gate() -> None:
    clock = FakeClock()
    rt = FakeRuntime(now=clock.now)
    container = {
        "name": "c", "ports": [{"name": "http", "containerPort": 8080}],
        "startupProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 2, "failureThreshold": 10},
        "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}, "initialDelaySeconds": 5, "periodSeconds": 3},
        "livenessProbe": {"exec": {"command": ["check"]}, "periodSeconds": 4, "failureThreshold": 2},
    }
    cid = await _running(rt, container)
    changes: list[str] = []
    failures: list[str] = []
    probes = ContainerProbes(runtime=rt, clock=clock, sandbox_id="sb", container_id=cid, container=container,
                             started_monotonic=clock.monotonic(), on_change=lambda: changes.append("x"),
                             on_failure=lambda t, m: failures.append(m))
    probes.start()
    await clock.advance(0)
    assert not probes.started and not probes.ready
    assert rt.calls["port_check"] == 1 and rt.calls["http_get"] == 0 and rt.calls["exec_sync"] == 0
    assert failures[-1] == "Startup probe failed: dial tcp 127.0.0.1:8080: connect: connection refused"
    await clock.advance(2)
    assert rt.calls["port_check"] == 2
    rt.listen("p", 8080)
    await clock.advance(2)
    assert probes.started and not probes.ready           # readiness waits for its initial delay
    assert rt.calls["port_check"] == 3
    assert rt.calls["exec_sync"] == 1                    # liveness starts at once (no initial delay)
    await clock.advance(1)
    assert rt.calls["http_get"] == 1 and probes.ready    # 5 s after the container started
    await clock.advance(3)
    assert rt.calls["http_get"] == 2
    assert rt.calls["port_check"] == 3                   # a startup probe that succeeded never runs again
    rt.healthy("c", False)
    await clock.advance(4)
    assert not probes.failed
    await clock.advance(4)
    assert probes.failed == "liveness" and not probes.ready
    assert failures[-1] == "Liveness probe failed: unhealthy"
    await probes.stop()


async def test_readiness_flaps_with_http_status() -> None:
    clock = FakeClock()
    rt = FakeRuntime(now=clock.now)
    container = {"name": "c", "readinessProbe": {"httpGet": {"path": "/", "port": 80}, "periodSeconds": 1,
                                                 "failureThreshold": 2, "successThreshold": 1}}
    cid = await _running(rt, container)
    rt.listen("p", 80, status=500)
    failures: list[str] = []
    probes = ContainerProbes(runtime=rt, clock=clock, sandbox_id="sb", container_id=cid, container=container,
                             started_monotonic=clock.monotonic(), on_change=lambda: None,
                             on_failure=lambda t, m: failures.append(m))
    probes.start()
    await clock.advance(0)
    assert not probes.ready and failures == ["Readiness probe failed: HTTP probe failed with statuscode: 500"]
    rt.listen("p", 80, status=302)
    await clock.advance(1)
    assert probes.ready
    rt.listen("p", 80, status=503)
    await clock.advance(1)
    assert probes.ready                                  # one failure of two
    await clock.advance(1)
    assert not probes.ready
    await probes.stop()
