"""The spherelet over real pod VMs: hostd, QEMU (TCG here), the guest agent, the pod network — and
kubectl through Podvisor's API server, which relays logs/exec/port-forward to the spherelet.

Everything is real and slow (seconds per VM boot), so the module shares one host: one hostd, one
host network namespace, one spherelet (restarted by one test). The in-process control plane runs no
IPAM controller, so the test hands the Node its podCIDR, as the controller would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from podvisor.client import APIClient, NotFound
from podvisor.client.events import EVENTS
from podvisor.images.service import ImageService
from podvisor.network import HostNetwork
from podvisor.pki import issue_node_serving_cert
from podvisor.spherelet import Spherelet
from podvisor.spherelet.hostd_runtime import HostdRuntime
from podvisor.spherelet.podapi import PODS
from tests.crx.harness import HostdHarness, crx_dir  # noqa: F401
from tests.registry.harness import RunningRegistry
from tests.scheduler.conftest import ControlPlane
from tests.spherelet.conftest import CONFIGMAPS, NAMESPACES, NODES, condition, container_status

pytestmark = [pytest.mark.vm, pytest.mark.asyncio(loop_scope="module")]

POD_CIDR = "10.87.3.0/24"


class VMHost:
    def __init__(self, cp: ControlPlane, hostd: HostdHarness, data_dir: Path, images: ImageService, image: str) -> None:
        self.cp, self.hostd, self.data_dir, self.images, self.image = cp, hostd, data_dir, images, image
        self.node = "vmh-" + secrets.token_hex(3)
        self.namespace = "vm" + secrets.token_hex(2)
        self.client: APIClient = cp.client()
        self.runtime: HostdRuntime | None = None
        self.spherelet: Spherelet | None = None
        self.network: HostNetwork | None = None

    def make_network(self, cidr: str) -> HostNetwork:
        self.network = HostNetwork(self.node, pod_cidr=cidr, state_dir=self.data_dir / "network")
        return self.network

    async def start(self) -> Spherelet:
        pki = self.cp.api.pki
        cert = issue_node_serving_cert(pki, self.node, sans=["127.0.0.1"])
        self.runtime = HostdRuntime(self.hostd.client(), data_dir=self.data_dir)
        self.spherelet = Spherelet(kubeconfig=self.cp.kubeconfig, node_name=self.node, data_dir=self.data_dir,
                                   runtime=self.runtime, images=self.images, network=self.make_network,
                                   serving_cert=cert, client_ca=pki.ca_cert, resync_seconds=5.0,
                                   node_status_interval=2.0)
        await self.spherelet.start()
        # the test plays the node IPAM controller: the registered Node gets its podCIDR
        node = await self.client.get(NODES, self.node)
        if not (node.get("spec") or {}).get("podCIDR"):
            await self.client.patch(NODES, self.node, {"spec": {"podCIDR": POD_CIDR, "podCIDRs": [POD_CIDR]}})
        return self.spherelet

    async def stop(self) -> None:
        if self.spherelet is not None:
            await self.spherelet.stop()
            self.spherelet = None
        if self.runtime is not None:
            await self.runtime.close()
            self.runtime = None

    async def pod(self, name: str) -> dict[str, Any]:
        return await self.client.get(PODS, name, self.namespace)

    async def create_pod(self, name: str, command: list[str], **spec: Any) -> dict[str, Any]:
        containers = spec.pop("containers", None) or [{"name": "app", "image": self.image, "command": command}]
        body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": self.namespace},
                "spec": {"nodeName": self.node, "containers": containers, **spec}}
        return await self.client.create(PODS, body, self.namespace)

    async def wait_pod(self, name: str, predicate: Any, what: str, within: float = 120.0) -> dict[str, Any]:
        deadline = time.monotonic() + within
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            with contextlib.suppress(NotFound):
                last = await self.pod(name)
                if predicate(last):
                    return last
            await asyncio.sleep(0.3)
        raise AssertionError(f"timed out waiting for {what}: {last.get('status')}")

    async def wait_gone(self, name: str, within: float = 60.0) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            try:
                await self.pod(name)
            except NotFound:
                return
            await asyncio.sleep(0.3)
        raise AssertionError(f"pod {name} still there after {within}s")

    async def kubectl(self, *args: str, check: bool = True, stdin: bytes | None = None,
                      timeout_s: float = 90.0) -> subprocess.CompletedProcess[bytes]:
        env = dict(os.environ, KUBECONFIG=str(self.cp.kubeconfig), HOME=str(self.cp.data_dir / "home"))
        proc = await asyncio.create_subprocess_exec(
            "kubectl", "-n", self.namespace, *args, env=env, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout_s)
        result = subprocess.CompletedProcess(list(args), proc.returncode or 0, out, err)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} -> {result.returncode}: {err.decode()}{out.decode()}")
        return result

    def kubectl_env(self) -> dict[str, str]:
        return dict(os.environ, KUBECONFIG=str(self.cp.kubeconfig), HOME=str(self.cp.data_dir / "home"))

    async def vm_ids(self) -> list[str]:
        async with self.hostd.client() as c:
            return [vm["id"] for vm in await c.list_vms() if (vm.get("labels") or {}).get("podvisor.io/pod-namespace")
                    == self.namespace]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def vmhost(crx_dir: Path, control_plane: ControlPlane, registry: RunningRegistry,  # noqa: F811
                 busybox_ref: str, images_dir: Path,
                 tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[VMHost]:
    hostd = HostdHarness(tmp_path_factory.mktemp("vm-hostd"), crx_dir)
    await hostd.component.start()
    images = ImageService(images_dir, keychain=registry.keychain())
    h = VMHost(control_plane, hostd, tmp_path_factory.mktemp("vm-host"), images, busybox_ref)
    await h.client.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": h.namespace}})
    await h.start()
    try:
        yield h
    finally:
        await h.stop()
        async with hostd.client() as c:
            for vm in await c.list_vms():
                with contextlib.suppress(Exception):
                    await c.destroy_vm(vm["id"])
        await hostd.component.stop()
        if h.network is not None:
            await h.network.teardown(forget_addresses=True)
        with contextlib.suppress(NotFound):
            await h.client.delete(NODES, h.node)
        await images.close()
        await h.client.close()


async def test_node_is_ready_with_a_pod_network(vmhost: VMHost) -> None:
    node = await vmhost.client.get(NODES, vmhost.node)
    conds = {c["type"]: c for c in node["status"]["conditions"]}

    async def ready() -> bool:
        n = await vmhost.client.get(NODES, vmhost.node)
        return any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"])
    deadline = time.monotonic() + 30
    while not await ready():
        assert time.monotonic() < deadline, conds
        await asyncio.sleep(0.3)
    out = (await vmhost.kubectl("get", "node", vmhost.node, "--no-headers")).stdout.decode()
    assert " Ready " in out and "v1.32.0-podvisor" in out


async def test_pod_completes_with_its_exit_code_and_logs(vmhost: VMHost) -> None:
    await vmhost.create_pod("once", ["sh", "-c", "echo hello-from-vm; echo oops >&2; exit 3"], restartPolicy="Never")
    pod = await vmhost.wait_pod("once", lambda p: (p.get("status") or {}).get("phase") == "Failed", "Failed")
    term = container_status(pod, "app")["state"]["terminated"]
    assert term["exitCode"] == 3 and term["reason"] == "Error"
    # the VM is off by now; the log is read from its disk
    logs = (await vmhost.kubectl("logs", "once")).stdout.decode()
    assert logs.splitlines() == ["hello-from-vm", "oops"]
    stamped = (await vmhost.kubectl("logs", "once", "--timestamps", "--tail=1")).stdout.decode()
    assert stamped.rstrip().endswith(" oops") and stamped.startswith("20")
    await vmhost.client.delete(PODS, "once", vmhost.namespace)
    await vmhost.wait_gone("once")


async def test_running_pod_exec_volumes_network_and_port_forward(vmhost: VMHost) -> None:
    await vmhost.client.create(CONFIGMAPS, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "web-cfg"},
                                            "data": {"app.conf": "color=blue\n", "mode": "fast"}}, vmhost.namespace)
    await vmhost.create_pod("web", [], terminationGracePeriodSeconds=3, containers=[{
        "name": "app", "image": vmhost.image,
        "command": ["sh", "-c", "httpd -p 8080 -h /www; echo started; exec sleep 3600"],
        "env": [{"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "web-cfg", "key": "mode"}}},
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        "volumeMounts": [{"name": "cfg", "mountPath": "/etc/app"}, {"name": "info", "mountPath": "/info"}],
        "readinessProbe": {"httpGet": {"path": "/index.html", "port": 8080}, "periodSeconds": 2}}],
        volumes=[{"name": "cfg", "configMap": {"name": "web-cfg"}},
                 {"name": "info", "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}}])
    pod = await vmhost.wait_pod("web", lambda p: condition(p, "Ready").get("status") == "True", "web Ready")
    ip = pod["status"]["podIP"]
    assert ip.startswith("10.87.3.")
    assert (await vmhost.kubectl("exec", "web", "--", "cat", "/etc/app/app.conf")).stdout == b"color=blue\n"
    out = (await vmhost.kubectl("exec", "web", "--", "sh", "-c", "echo $MODE $POD_NAME; hostname")).stdout.decode()
    assert out.split() == ["fast", "web", "web"]
    assert (await vmhost.kubectl("exec", "web", "--", "sh", "-c", "exit 7", check=False)).returncode == 7
    assert (await vmhost.kubectl("exec", "-i", "web", "--", "cat", stdin=b"through stdin\n")).stdout == b"through stdin\n"
    addr = (await vmhost.kubectl("exec", "web", "--", "sh", "-c", "ip addr show eth0 || cat /proc/net/fib_trie",
                                 check=False)).stdout.decode()
    assert ip in addr
    assert "started" in (await vmhost.kubectl("logs", "web")).stdout.decode()
    # kubectl cp both ways (tar through exec)
    local = vmhost.data_dir / "to-pod.txt"
    local.write_text("copied in\n")
    await vmhost.kubectl("cp", str(local), "web:/tmp/in.txt")
    assert (await vmhost.kubectl("exec", "web", "--", "cat", "/tmp/in.txt")).stdout == b"copied in\n"
    await vmhost.kubectl("cp", "web:/www/index.html", str(vmhost.data_dir / "from-pod.html"))
    assert (vmhost.data_dir / "from-pod.html").read_text() == "hello from podvisor\n"
    # an interactive shell on a terminal
    code, screen = await asyncio.to_thread(_on_a_terminal, vmhost.kubectl_env(),
                                           ["kubectl", "-n", vmhost.namespace, "exec", "-it", "web", "--", "sh"],
                                           b"tty; echo $((6*7)); exit 3\n")
    assert code == 3 and "42" in screen and "/dev/pts/" in screen
    # port-forward through the guest agent
    port = _free_port()
    env = dict(os.environ, KUBECONFIG=str(vmhost.cp.kubeconfig), HOME=str(vmhost.cp.data_dir / "home"))
    pf = await asyncio.create_subprocess_exec("kubectl", "-n", vmhost.namespace, "port-forward", "pod/web",
                                              f"{port}:8080", env=env, stdout=asyncio.subprocess.PIPE,
                                              stderr=asyncio.subprocess.PIPE)
    try:
        assert pf.stdout is not None
        await asyncio.wait_for(pf.stdout.readline(), 30)
        body = await asyncio.to_thread(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=20).read())
        assert body == b"hello from podvisor\n"
    finally:
        pf.terminate()
        await pf.wait()
    # a configmap change reaches the mounted file
    await vmhost.client.patch(CONFIGMAPS, "web-cfg", {"data": {"app.conf": "color=green\n"}}, vmhost.namespace)
    deadline = time.monotonic() + 60
    while (await vmhost.kubectl("exec", "web", "--", "cat", "/etc/app/app.conf")).stdout != b"color=green\n":
        assert time.monotonic() < deadline
        await asyncio.sleep(1)
    # delete: sleep ignores SIGTERM as PID 1, so the 3 s grace ends with SIGKILL; the VM goes with the pod
    vm_ids = await vmhost.vm_ids()
    await vmhost.client.delete(PODS, "web", vmhost.namespace)
    await vmhost.wait_gone("web")
    remaining = await vmhost.vm_ids()
    assert not set(vm_ids) & set(remaining)
    assert vmhost.network is not None and await vmhost.network.pod_interface(pod["metadata"]["uid"]) is None


async def test_follow_attach_and_graceful_delete(vmhost: VMHost) -> None:
    await vmhost.create_pod("polite", ["sh", "-c", "trap 'echo bye; exit 0' TERM; echo up; "
                                                   "while true; do echo tick; sleep 1; done"],
                            terminationGracePeriodSeconds=120)
    await vmhost.wait_pod("polite", lambda p: (p.get("status") or {}).get("phase") == "Running", "Running")
    follow = await _for_a_while(vmhost, ["logs", "-f", "polite"], 4.0)
    assert follow.startswith("up\ntick\n") and follow.count("tick") >= 3
    attached = await _for_a_while(vmhost, ["attach", "polite"], 4.0)
    assert "up" not in attached and attached.count("tick") >= 2      # output from the moment of attaching
    started = time.monotonic()
    await vmhost.client.delete(PODS, "polite", vmhost.namespace)
    await vmhost.wait_gone("polite", within=100)
    assert time.monotonic() - started < 100   # the container ended on SIGTERM, long before its grace ran out


async def test_attach_with_stdin_feeds_the_container(vmhost: VMHost) -> None:
    await vmhost.create_pod("echoer", [], restartPolicy="Never", containers=[{
        "name": "app", "image": vmhost.image, "stdin": True, "stdinOnce": True,
        "command": ["sh", "-c", "while read line; do echo got:$line; done; echo stdin closed"]}])
    await vmhost.wait_pod("echoer", lambda p: (p.get("status") or {}).get("phase") == "Running", "Running")
    attached = await vmhost.kubectl("attach", "-i", "echoer", stdin=b"hello\n")
    assert b"got:hello\n" in attached.stdout                   # input reached the container, output came back
    # stdinOnce: the attach session closing stdin closed the container's, so its loop ended
    pod = await vmhost.wait_pod("echoer", lambda p: (p.get("status") or {}).get("phase") == "Succeeded", "Succeeded")
    assert container_status(pod, "app")["state"]["terminated"]["exitCode"] == 0
    assert (await vmhost.kubectl("logs", "echoer")).stdout == b"got:hello\nstdin closed\n"
    await vmhost.client.delete(PODS, "echoer", vmhost.namespace, body={"gracePeriodSeconds": 0})
    await vmhost.wait_gone("echoer")


async def test_kubectl_run_interactive(vmhost: VMHost) -> None:
    # kubectl run -i creates the pod with stdin (and stdinOnce), waits for it to run, attaches; --rm deletes it
    # (this control plane runs no scheduler: the override places the pod, as a scheduler would)
    place = json.dumps({"spec": {"nodeName": vmhost.node}})
    run = await vmhost.kubectl("run", "asker", "-i", "--rm", "--restart=Never", f"--image={vmhost.image}",
                               f"--overrides={place}", "--", "sh", "-c", "read name; echo hello $name",
                               stdin=b"podvisor\n")
    assert b"hello podvisor\n" in run.stdout
    await vmhost.wait_gone("asker")


async def _for_a_while(vmhost: VMHost, args: list[str], seconds: float) -> str:
    """Run a streaming kubectl command for ``seconds`` and return what it printed."""
    proc = await asyncio.create_subprocess_exec("kubectl", "-n", vmhost.namespace, *args, env=vmhost.kubectl_env(),
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    await asyncio.sleep(seconds)
    proc.terminate()
    out, _ = await proc.communicate()
    return out.decode()


async def test_liveness_failure_restarts_the_container(vmhost: VMHost) -> None:
    await vmhost.create_pod("flaky", [], containers=[{
        "name": "app", "image": vmhost.image,
        "command": ["sh", "-c", "echo attempt; touch /tmp/healthy; sleep 4; rm /tmp/healthy; exec sleep 3600"],
        "livenessProbe": {"exec": {"command": ["cat", "/tmp/healthy"]}, "periodSeconds": 1, "failureThreshold": 2}}])
    pod = await vmhost.wait_pod("flaky", lambda p: container_status(p, "app").get("restartCount", 0) >= 1,
                                "a restart", within=180)
    assert container_status(pod, "app")["lastState"]["terminated"]["exitCode"] == 137
    assert (await vmhost.kubectl("logs", "flaky", "--previous")).stdout == b"attempt\n"
    unhealthy = [e for e in (await vmhost.client.list(EVENTS, vmhost.namespace))["items"]
                 if e["involvedObject"]["name"] == "flaky" and e["reason"] == "Unhealthy"]
    assert unhealthy and unhealthy[0]["message"].startswith("Liveness probe failed: cat: can't open '/tmp/healthy'")
    await vmhost.client.delete(PODS, "flaky", vmhost.namespace, body={"gracePeriodSeconds": 0})
    await vmhost.wait_gone("flaky")


async def test_spherelet_restart_adopts_the_running_vm(vmhost: VMHost) -> None:
    await vmhost.create_pod("steady", ["sh", "-c", "echo steady; exec sleep 3600"])
    pod = await vmhost.wait_pod("steady", lambda p: condition(p, "Ready").get("status") == "True", "Ready")
    before = await vmhost.vm_ids()
    await vmhost.stop()
    await vmhost.start()
    await asyncio.sleep(6)   # a resync period: the adopted pod is looked at again
    after = await vmhost.pod("steady")
    assert await vmhost.vm_ids() == before
    cs = container_status(after, "app")
    assert cs["restartCount"] == 0 and cs["containerID"] == container_status(pod, "app")["containerID"]
    assert (await vmhost.kubectl("exec", "steady", "--", "echo", "still here")).stdout == b"still here\n"
    await vmhost.client.delete(PODS, "steady", vmhost.namespace, body={"gracePeriodSeconds": 0})
    await vmhost.wait_gone("steady")


def _on_a_terminal(env: dict[str, str], argv: list[str], keys: bytes) -> tuple[int, str]:
    """Run ``argv`` with a pseudo-terminal as its stdin/stdout/stderr, type ``keys``, return (exit code, screen)."""
    import pty

    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    screen = bytearray()
    typed = False
    deadline = time.monotonic() + 60
    import select

    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            screen += chunk
            if not typed and b"#" in screen:
                os.write(master, keys)
                typed = True
        elif proc.poll() is not None:
            break
    os.close(master)
    return proc.wait(timeout=30), screen.decode(errors="replace")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
