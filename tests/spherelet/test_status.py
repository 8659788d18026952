"""Pod status as kubectl shows it: container states, phase and conditions, from runtime facts."""

from __future__ import annotations

from typing import Any

from podvisor.spherelet.admission import host_access_violations
from podvisor.spherelet.podstate import PodState
from podvisor.spherelet.runtime import ContainerInfo, Sandbox
from podvisor.spherelet.status import ContainerView, container_status, merge_patch, pod_phase

T0 = 1_700_000_000.0


def info(cid: str, state: str = "running", code: int = 0, **kw: Any) -> ContainerInfo:
    name = cid.rsplit("-", 1)[0]
    return ContainerInfo(id=cid, name=name, state=state, exit_code=code, started_at=T0,  # type: ignore[arg-type]
                         finished_at=T0 + 5 if state == "exited" else 0, **kw)


def pod(restart: str = "Always", inits: int = 0, apps: tuple[str, ...] = ("app",)) -> dict[str, Any]:
    return {"metadata": {"name": "p", "namespace": "ns", "uid": "u"},
            "spec": {"restartPolicy": restart,
                     "initContainers": [{"name": f"init{i}", "image": "busybox"} for i in range(inits)],
                     "containers": [{"name": n, "image": "busybox"} for n in apps]},
            "status": {"phase": "Pending", "qosClass": "BestEffort",
                       "conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": "t0"}]}}


def status_of(p: dict[str, Any], containers: list[ContainerInfo], **kw: Any) -> dict[str, Any]:
    st = PodState(uid="u", sandbox=Sandbox(id="sb", pod_uid="u", pod_namespace="ns", pod_name="p"), pod_ip="10.88.0.5",
                  containers=containers, start_time="2023-11-14T22:13:20Z", **kw)
    return st.build_status(p, now=T0 + 10, host_ip="127.0.0.1", sandbox_ready=True)


def cond(status: dict[str, Any], t: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == t)


def test_running_pod() -> None:
    s = status_of(pod(), [info("app-0")])
    assert s["phase"] == "Running"
    cs = s["containerStatuses"][0]
    assert cs["state"] == {"running": {"startedAt": "2023-11-14T22:13:20Z"}}
    assert cs["ready"] and cs["started"] and cs["restartCount"] == 0 and cs["containerID"].startswith("crx://")
    assert cond(s, "Ready")["status"] == "True" and cond(s, "PodScheduled")["lastTransitionTime"] == "t0"
    assert [c["type"] for c in s["conditions"]] == ["PodReadyToStartContainers", "Initialized", "Ready",
                                                   "ContainersReady", "PodScheduled"]
    assert s["podIP"] == "10.88.0.5" and s["podIPs"] == [{"ip": "10.88.0.5"}] and s["hostIP"] == "127.0.0.1"
    assert s["qosClass"] == "BestEffort" and s["startTime"] == "2023-11-14T22:13:20Z"


def test_completion_phases() -> None:
    assert status_of(pod("Never"), [info("app-0", "exited", 0)])["phase"] == "Succeeded"
    failed = status_of(pod("Never"), [info("app-0", "exited", 3)])
    assert failed["phase"] == "Failed"
    term = failed["containerStatuses"][0]["state"]["terminated"]
    assert term["exitCode"] == 3 and term["reason"] == "Error" and term["finishedAt"] == "2023-11-14T22:13:25Z"
    assert cond(failed, "Ready")["reason"] == "PodFailed"
    assert status_of(pod("OnFailure"), [info("app-0", "exited", 0)])["phase"] == "Succeeded"
    assert status_of(pod("OnFailure"), [info("app-0", "exited", 1)])["phase"] == "Running"
    assert status_of(pod("Always"), [info("app-0", "exited", 0)])["phase"] == "Running"
    mixed = status_of(pod("Never", apps=("a", "b")), [info("a-0", "exited", 0), info("b-0", "running")])
    assert mixed["phase"] == "Running"
    # a terminal phase never changes back
    p = pod("Never")
    p["status"]["phase"] = "Succeeded"
    assert status_of(p, [info("app-0", "running")])["phase"] == "Succeeded"


def test_crash_loop_shows_waiting_with_last_state() -> None:
    s = status_of(pod(), [info("app-1", "exited", 2), info("app-0", "exited", 1)],
                  waiting={"app": ("CrashLoopBackOff", "back-off 10s restarting failed container=app pod=p_ns(u)")})
    cs = s["containerStatuses"][0]
    assert cs["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert cs["lastState"]["terminated"]["exitCode"] == 2
    assert cs["restartCount"] == 1 and not cs["ready"]
    assert s["phase"] == "Running"
    assert cond(s, "Ready") | {"lastTransitionTime": None} == {
        "type": "Ready", "status": "False", "reason": "ContainersNotReady", "lastProbeTime": None,
        "message": "containers with unready status: [app]", "lastTransitionTime": None}


def test_image_pull_errors_keep_pod_pending() -> None:
    s = status_of(pod(), [], waiting={"app": ("ErrImagePull", 'pull "x": manifest unknown')})
    assert s["phase"] == "Pending"
    assert s["containerStatuses"][0]["state"] == {"waiting": {"reason": "ErrImagePull",
                                                              "message": 'pull "x": manifest unknown'}}


def test_init_containers() -> None:
    p = pod(inits=2)
    s = status_of(p, [info("init0-0", "exited", 0), info("init1-0", "running")])
    assert s["phase"] == "Pending"
    assert cond(s, "Initialized") | {"lastTransitionTime": None} == {
        "type": "Initialized", "status": "False", "reason": "ContainersNotInitialized", "lastProbeTime": None,
        "message": "containers with incomplete status: [init1]", "lastTransitionTime": None}
    assert s["containerStatuses"][0]["state"]["waiting"]["reason"] == "PodInitializing"
    assert [c["name"] for c in s["initContainerStatuses"]] == ["init0", "init1"]
    done = status_of(p, [info("init0-0", "exited", 0), info("init1-0", "exited", 0), info("app-0")])
    assert done["phase"] == "Running" and cond(done, "Initialized")["status"] == "True"
    assert status_of(pod("Never", inits=1), [info("init0-0", "exited", 1)])["phase"] == "Failed"
    assert status_of(pod("Always", inits=1), [info("init0-0", "exited", 1)])["phase"] == "Pending"


def test_transition_times_are_kept() -> None:
    p = pod()
    first = status_of(p, [info("app-0")])
    p["status"] = first
    again = status_of(p, [info("app-0")])
    assert cond(again, "Ready")["lastTransitionTime"] == cond(first, "Ready")["lastTransitionTime"]
    assert merge_patch(first, again) == {}


def test_merge_patch() -> None:
    old = {"phase": "Pending", "reason": "X", "conditions": [1], "nested": {"a": 1, "b": 2}}
    new = {"phase": "Running", "conditions": [1, 2], "nested": {"a": 1}}
    assert merge_patch(old, new) == {"phase": "Running", "reason": None, "conditions": [1, 2], "nested": {"b": None}}


def test_oom_and_signal() -> None:
    v = ContainerView(name="c", image="i", current=info("c-0", "exited", 137, oom_killed=True))
    t = container_status(v)["state"]["terminated"]
    assert t["reason"] == "OOMKilled" and t["signal"] == 9
    assert pod_phase({"restartPolicy": "Never"}, [], [container_status(v)]) == "Failed"


def test_node_refuses_host_access() -> None:
    pod = {"spec": {"hostNetwork": True, "volumes": [{"name": "h", "hostPath": {"path": "/"}}],
                    "containers": [{"name": "c", "securityContext": {"privileged": True}}]}}
    assert host_access_violations(pod) == ["spec.hostNetwork", "spec.volumes[0].hostPath",
                                           "spec.containers[0].securityContext.privileged"]
    assert host_access_violations({"spec": {"containers": [{"name": "c"}]}}) == []
