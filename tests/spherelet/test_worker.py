"""The spherelet's pod lifecycle against a real API server, over a simulated runtime and clock.

Each test drives one host: the Node and its Lease, pods from pull to completion, restarts and back-off,
probes, volumes and env, graceful and forced deletion, and a restart of the spherelet that adopts what
runs and removes what nobody owns. What the tests read is what kubectl would show: the pod's status
and its events.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from podvisor.client import NotFound
from podvisor.images.service import ImageService
from podvisor.spherelet.podapi import PODS
from podvisor.spherelet.runtime import SandboxSpec
from tests.registry.harness import RunningRegistry, dockerconfig_secret
from tests.spherelet.conftest import CONFIGMAPS, LEASES, NODES, SECRETS, Host, condition, container_status

pytestmark = pytest.mark.asyncio(loop_scope="module")


def state(pod: dict[str, Any], name: str = "app") -> dict[str, Any]:
    return dict(container_status(pod, name).get("state") or {})


async def test_node_registers_and_heartbeats(host: Host) -> None:
    await host.start()
    node = await host.client.get(NODES, host.node)
    labels = node["metadata"]["labels"]
    assert labels["kubernetes.io/hostname"] == host.node and labels["kubernetes.io/os"] == "linux"
    status = node["status"]
    assert status["capacity"]["cpu"] == "4" and status["capacity"]["pods"] == "110"
    assert status["nodeInfo"]["kubeletVersion"] == "v1.32.0-podvisor"
    assert status["nodeInfo"]["containerRuntimeVersion"] == "crx://0.1"
    assert {"type": "InternalIP", "address": "127.0.0.1"} in status["addresses"]
    conds = {c["type"]: c for c in status["conditions"]}
    assert conds["Ready"]["status"] == "True" and conds["Ready"]["reason"] == "KubeletReady"
    assert [conds[t]["status"] for t in ("MemoryPressure", "DiskPressure", "PIDPressure")] == ["False"] * 3
    lease = await host.client.get(LEASES, host.node, "kube-node-lease")
    assert lease["spec"]["holderIdentity"] == host.node and lease["spec"]["leaseDurationSeconds"] == 40
    assert lease["metadata"]["ownerReferences"][0]["uid"] == node["metadata"]["uid"]
    first = lease["spec"]["renewTime"]
    await host.clock.advance(10)

    async def renewed() -> bool:
        return bool((await host.client.get(LEASES, host.node, "kube-node-lease"))["spec"]["renewTime"] != first)
    await host.wait_for("lease renewal", renewed)
    # the memory running low shows as MemoryPressure
    host.runtime.host = type(host.runtime.host)(**{**host.runtime.host.__dict__, "memory_available_bytes": 10 << 20})
    await host.clock.advance(10)

    async def pressure() -> bool:
        n = await host.client.get(NODES, host.node)
        return any(c["type"] == "MemoryPressure" and c["status"] == "True" for c in n["status"]["conditions"])
    await host.wait_for("MemoryPressure", pressure)


async def test_pod_runs_to_completion_and_is_deleted(host: Host) -> None:
    await host.start()
    await host.create_pod("ok", [{"name": "app", "command": ["fake", "exit", "0"]}], restartPolicy="Never")
    await host.create_pod("bad", [{"name": "app", "command": ["fake", "exit", "3"]}], restartPolicy="Never")
    ok = await host.wait_phase("ok", "Succeeded")
    bad = await host.wait_phase("bad", "Failed")
    assert state(ok)["terminated"]["reason"] == "Completed"
    term = state(bad)["terminated"]
    assert term["exitCode"] == 3 and term["reason"] == "Error"
    assert condition(bad, "Ready")["reason"] == "PodFailed"
    for r in ("Pulled", "Created"):
        await host.wait_event("bad", r)      # events are written in the background
    started = await host.wait_event("bad", "Started")
    assert started["message"] == "Started container app" and started["source"]["component"] == "kubelet"
    # a finished pod's VM is powered off (its disk, with the logs, stays until the pod is deleted)
    await host.wait_for("VMs stopped", lambda: _true(host.runtime.calls["stop_sandbox"] >= 2))
    assert all(s.sandbox.state == "stopped" for s in host.runtime.sandboxes.values())
    await host.client.delete(PODS, "bad", host.namespace)
    await host.wait_gone("bad")
    await host.wait_for("the VM of the deleted pod destroyed", lambda: _true(len(host.runtime.sandboxes) == 1))


async def _true(v: bool) -> bool:
    return v


async def test_running_pod_status_and_graceful_delete(host: Host) -> None:
    await host.start()
    await host.create_pod("web")
    pod = await host.wait_pod("web", lambda p: condition(p, "Ready").get("status") == "True", "web ready")
    st = pod["status"]
    assert st["phase"] == "Running" and st["podIP"] and st["hostIP"] == "127.0.0.1" and st["startTime"]
    cs = container_status(pod, "app")
    assert cs["ready"] and cs["started"] and cs["restartCount"] == 0
    assert cs["containerID"].startswith("crx://") and cs["imageID"].endswith(cs["imageID"].split("@")[-1])
    assert "@sha256:" in cs["imageID"]
    assert condition(pod, "PodReadyToStartContainers")["status"] == "True"
    sb = host.runtime.by_pod("web")
    assert (sb.spec.vcpus, sb.spec.memory_mib) == (1, 256)
    # nothing changes: the status is not written again
    rv = pod["metadata"]["resourceVersion"]
    await host.clock.advance(31)
    await host.clock.advance(31)
    assert (await host.pod("web"))["metadata"]["resourceVersion"] == rv
    await host.client.delete(PODS, "web", host.namespace)
    await host.wait_gone("web")
    assert host.runtime.sandboxes == {}
    killing = await host.wait_event("web", "Killing")
    assert killing["message"] == "Stopping container app"


async def test_grace_period_ends_with_sigkill(host: Host) -> None:
    await host.start()
    await host.create_pod("stubborn", [{"name": "app", "command": ["fake", "ignore-term"]}],
                          terminationGracePeriodSeconds=5)
    await host.wait_phase("stubborn", "Running")
    c = host.runtime.container("stubborn", "app")
    await host.client.delete(PODS, "stubborn", host.namespace)
    await host.wait_for("SIGTERM", lambda: _true(c.signals == [15]))
    await host.clock.advance(4)
    assert c.signals == [15] and (await host.pod("stubborn"))["metadata"]["deletionTimestamp"]
    await host.clock.advance(1.5)
    await host.wait_gone("stubborn")
    assert c.signals == [15, 9]


async def test_pre_stop_hook_runs_before_sigterm(host: Host) -> None:
    await host.start()
    await host.create_pod("hooked", [{"name": "app", "command": ["fake", "run"],
                                      "lifecycle": {"preStop": {"exec": {"command": ["drain", "now"]}}}}])
    await host.wait_phase("hooked", "Running")
    await host.client.delete(PODS, "hooked", host.namespace)
    await host.wait_gone("hooked")
    assert host.runtime.log[-2:] == ["exec app-0 drain now", "signal app-0 15"]


async def test_forced_delete_still_cleans_up(host: Host) -> None:
    await host.start()
    await host.create_pod("gone", [{"name": "app", "command": ["fake", "ignore-term"]}])
    await host.wait_phase("gone", "Running")
    await host.client.delete(PODS, "gone", host.namespace, body={"gracePeriodSeconds": 0})
    await host.wait_gone("gone", within=5)
    await host.wait_for("VM destroyed", lambda: _true(host.runtime.sandboxes == {}))


async def test_init_containers_run_in_order(host: Host) -> None:
    await host.start()
    await host.create_pod("init", [{"name": "app", "command": ["fake", "run"]}], initContainers=[
        {"name": "first", "image": host.image, "command": ["fake", "exit", "0"]},
        {"name": "second", "image": host.image, "command": ["fake", "run"]}])
    pod = await host.wait_pod("init", lambda p: "running" in state(p, "second"), "second init running")
    assert state(pod, "first")["terminated"]["reason"] == "Completed"
    assert pod["status"]["phase"] == "Pending" and state(pod)["waiting"]["reason"] == "PodInitializing"
    assert condition(pod, "Initialized")["message"] == "containers with incomplete status: [second]"
    host.runtime.finish("init", "second", 0)
    pod = await host.wait_phase("init", "Running")
    assert host.runtime.started == ["init/first-0", "init/second-0", "init/app-0"]
    assert condition(pod, "Initialized")["status"] == "True"

    await host.create_pod("initfail", [{"name": "app", "command": ["fake", "run"]}], restartPolicy="Never",
                          initContainers=[{"name": "setup", "image": host.image, "command": ["fake", "exit", "2"]}])
    pod = await host.wait_phase("initfail", "Failed")
    assert state(pod, "setup")["terminated"]["exitCode"] == 2
    assert "initfail/app-0" not in host.runtime.started


async def test_crash_loop_back_off(host: Host) -> None:
    await host.start()
    await host.create_pod("crash", [{"name": "app", "command": ["fake", "exit", "1"]}])
    pod = await host.wait_pod("crash", lambda p: state(p).get("waiting", {}).get("reason") == "CrashLoopBackOff",
                              "crash loop")
    cs = container_status(pod, "app")
    assert cs["restartCount"] == 1 and cs["lastState"]["terminated"]["exitCode"] == 1
    assert cs["state"]["waiting"]["message"].startswith("back-off 10s restarting failed container=app pod=crash_")
    assert pod["status"]["phase"] == "Running"
    backoff = await host.wait_event("crash", "BackOff")
    assert backoff["type"] == "Warning" and backoff["message"].startswith("Back-off restarting failed container app")
    await host.clock.advance(9)
    assert container_status(await host.pod("crash"), "app")["restartCount"] == 1
    await host.clock.advance(1.5)
    pod = await host.wait_pod("crash", lambda p: container_status(p, "app")["restartCount"] == 2 and
                              "back-off 20s" in str(state(p).get("waiting", {}).get("message")), "second back-off")
    assert len(host.runtime.by_pod("crash").containers) == 2   # the current and the previous attempt only


async def test_liveness_failure_restarts_the_container(host: Host) -> None:
    await host.start()
    await host.create_pod("live", [{"name": "app", "command": ["fake", "run"],
                                    "livenessProbe": {"exec": {"command": ["check"]}, "periodSeconds": 1,
                                                      "failureThreshold": 2}}])
    await host.wait_phase("live", "Running")
    host.runtime.healthy("app", False)
    await host.clock.advance(1)
    await host.clock.advance(1)
    pod = await host.wait_pod("live", lambda p: container_status(p, "app").get("restartCount") == 1, "restart")
    assert container_status(pod, "app")["lastState"]["terminated"]["exitCode"] == 137
    killing = await host.wait_event("live", "Killing")
    assert killing["message"] == "Container app failed liveness probe, will be restarted"
    unhealthy = await host.wait_event("live", "Unhealthy")
    assert unhealthy["type"] == "Warning" and unhealthy["message"].startswith("Liveness probe failed")


async def test_readiness_probe_gates_ready(host: Host) -> None:
    await host.start()
    await host.create_pod("ready", [{"name": "app", "command": ["fake", "run"],
                                     "readinessProbe": {"tcpSocket": {"port": 80}, "periodSeconds": 2}}])
    pod = await host.wait_phase("ready", "Running")
    assert condition(pod, "Ready")["status"] == "False" and not container_status(pod, "app")["ready"]
    host.runtime.listen("ready", 80)
    await host.clock.advance(2)
    await host.wait_pod("ready", lambda p: condition(p, "Ready").get("status") == "True", "ready")


async def test_env_and_volumes_and_updates(host: Host) -> None:
    ns = host.namespace
    await host.client.create(CONFIGMAPS, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"},
                                          "data": {"mode": "fast", "app.conf": "a=1\n"}}, ns)
    await host.client.create(SECRETS, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"},
                                       "data": {"password": base64.b64encode(b"pw").decode()}}, ns)
    await host.start()
    await host.create_pod("cfg", [{
        "name": "app", "command": ["fake", "run"], "args": ["--mode=$(MODE)"],
        "env": [{"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode"}}},
                {"name": "PASS", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
                {"name": "ME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        "volumeMounts": [{"name": "conf", "mountPath": "/etc/app"}, {"name": "sec", "mountPath": "/secret"},
                         {"name": "info", "mountPath": "/info"}, {"name": "scratch", "mountPath": "/tmp"}]}],
        volumes=[{"name": "conf", "configMap": {"name": "cfg", "items": [{"key": "app.conf", "path": "app.conf",
                                                                          "mode": 0o600}]}},
                 {"name": "sec", "secret": {"secretName": "creds"}},
                 {"name": "info", "downwardAPI": {"items": [{"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}},
                 {"name": "scratch", "emptyDir": {"medium": "Memory"}}],
        securityContext={"runAsUser": 1000, "runAsGroup": 1000})
    await host.wait_phase("cfg", "Running")
    c = host.runtime.container("cfg", "app")
    env = dict(e.split("=", 1) for e in c.spec.env)
    assert env["MODE"] == "fast" and env["PASS"] == "pw" and env["ME"] == "cfg"
    assert c.spec.args == ("fake", "run", "--mode=fast")
    assert (c.spec.uid, c.spec.gid) == (1000, 1000)
    mounts = {m.destination: m.source for m in c.spec.mounts}
    assert mounts == {"/etc/app": "volumes/conf", "/secret": "/run/volumes/sec", "/info": "volumes/info",
                      "/tmp": "/run/volumes/scratch"}
    assert host.runtime.read("cfg", "volumes/conf/app.conf") == b"a=1\n"
    assert host.runtime.mode("cfg", "volumes/conf/app.conf") == 0o600
    assert host.runtime.read("cfg", "/run/volumes/sec/password") == b"pw"
    assert host.runtime.read("cfg", "volumes/info/name") == b"cfg"
    await host.client.patch(CONFIGMAPS, "cfg", {"data": {"app.conf": "a=2\n"}}, ns)
    await host.clock.advance(31)
    await host.wait_for("configmap update in the volume",
                        lambda: _true(host.runtime.read("cfg", "volumes/conf/app.conf") == b"a=2\n"))


async def test_missing_configmap_waits_then_starts(host: Host) -> None:
    await host.start()
    await host.create_pod("late", [{"name": "app", "command": ["fake", "run"],
                                    "envFrom": [{"configMapRef": {"name": "later"}}]}])
    pod = await host.wait_pod("late", lambda p: state(p).get("waiting", {}).get("reason") ==
                              "CreateContainerConfigError", "config error")
    assert state(pod)["waiting"]["message"] == 'configmap "later" not found'
    await host.client.create(CONFIGMAPS, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "later"},
                                          "data": {"X": "1"}}, host.namespace)
    await host.clock.advance(31)
    await host.wait_phase("late", "Running")


async def test_image_pull_error_is_reported(host: Host) -> None:
    await host.start()
    missing = host.image.rsplit(":", 1)[0] + ":nope"
    await host.create_pod("noimg", [{"name": "app", "image": missing, "command": ["fake", "run"]}])
    pod = await host.wait_pod("noimg", lambda p: state(p).get("waiting", {}).get("reason") in (
        "ErrImagePull", "ImagePullBackOff"), "ErrImagePull")
    assert pod["status"]["phase"] == "Pending"
    messages = [e["message"] for e in await host.events("noimg") if e["reason"] == "Failed"]
    assert any(m.startswith(f'Failed to pull image "{missing}"') and "manifest unknown" in m for m in messages)
    assert "Error: ErrImagePull" in messages
    # while the back-off runs, the container says so
    pod = await host.wait_pod("noimg", lambda p: state(p).get("waiting", {}).get("reason") == "ImagePullBackOff",
                              "ImagePullBackOff")
    assert state(pod)["waiting"]["message"] == f'Back-off pulling image "{missing}"'
    assert host.runtime.calls["create_sandbox"] == 0


async def test_pull_secrets_are_used(host: Host, registry: RunningRegistry, tmp_path: Path) -> None:
    from tests.imagebuild import build_busybox_layout, push_layout

    private = f"{registry.address}/team1/private:1"
    await push_layout(build_busybox_layout(tmp_path / "layout"), private, password=registry.admin_token)
    host.images = ImageService(tmp_path / "images")     # this host has no registry credentials of its own
    try:
        await host.start()
        await host.create_pod("anon", [{"name": "app", "image": private, "command": ["fake", "run"]}])
        await host.wait_pod("anon", lambda p: state(p).get("waiting", {}).get("reason") in (
            "ErrImagePull", "ImagePullBackOff"), "unauthorized pull")
        secret = dockerconfig_secret(registry.address, "dev", registry.tokens["dev"])
        secret["metadata"] = {"name": "pull"}
        await host.client.create(SECRETS, secret, host.namespace)
        await host.create_pod("authed", [{"name": "app", "image": private, "command": ["fake", "run"]}],
                              imagePullSecrets=[{"name": "pull"}])
        pod = await host.wait_phase("authed", "Running")
        assert container_status(pod, "app")["imageID"].startswith(f"{registry.address}/team1/private@sha256:")
    finally:
        await host.stop()
        await host.images.close()


async def test_restart_adopts_running_pods_and_removes_orphans(host: Host) -> None:
    await host.start()
    await host.create_pod("keep")
    await host.create_pod("doomed")
    await host.wait_phase("keep", "Running")
    await host.wait_phase("doomed", "Running")
    await host.stop()
    # while the agent is away: a pod is force-deleted, and a VM appears that no pod owns
    await host.client.delete(PODS, "doomed", host.namespace, body={"gracePeriodSeconds": 0})
    await host.runtime.create_sandbox(SandboxSpec(id="pod-stray", pod_uid="not-a-pod", pod_namespace="x",
                                                  pod_name="stray", attempt=0, hostname="x", vcpus=1, memory_mib=128,
                                                  ephemeral_bytes=1 << 30))
    created = host.runtime.calls["create_sandbox"]
    spherelet = await host.start()
    assert sorted(spherelet.orphans_removed) == sorted(
        ["pod-stray", next(s for s in spherelet.orphans_removed if "doomed" in s)])
    assert [s.spec.pod_name for s in host.runtime.sandboxes.values()] == ["keep"]
    await host.clock.advance(31)
    pod = await host.pod("keep")
    assert pod["status"]["phase"] == "Running" and container_status(pod, "app")["restartCount"] == 0
    assert host.runtime.calls["create_sandbox"] == created
    assert host.runtime.started.count("keep/app-0") == 1
    await host.client.delete(PODS, "keep", host.namespace)
    await host.wait_gone("keep")


async def test_dead_vm_is_replaced(host: Host) -> None:
    await host.start()
    await host.create_pod("phoenix")
    await host.wait_phase("phoenix", "Running")
    first = host.runtime.by_pod("phoenix").spec.id
    host.runtime.crash_sandbox("phoenix")
    await host.wait_event("phoenix", "SandboxChanged")
    await host.wait_for("a new VM", lambda: _true(host.runtime.by_pod("phoenix").spec.id != first))
    await host.wait_pod("phoenix", lambda p: condition(p, "Ready").get("status") == "True", "ready again")


async def test_deleted_node_is_registered_again(host: Host) -> None:
    await host.start()
    await host.client.delete(NODES, host.node)
    await host.clock.advance(61)

    async def back() -> bool:
        try:
            await host.client.get(NODES, host.node)
            return True
        except NotFound:
            return False
    await host.wait_for("node registered again", back)
