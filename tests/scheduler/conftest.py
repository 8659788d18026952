"""A real control plane for the scheduler tests, with simulated hosts.

The API server is Podvisor's own (SQLite storage, TLS, client certificates), started in-process the way
`podvisor up` starts it, so these tests own the only scheduler and the only IPAM controller talking to
it. Hosts are plain Node objects created through the API — a spherelet would register the same
objects — with capacity, allocatable and conditions written through ``nodes/<name>/status``. No VM
is started: the scheduler only ever sees the API.

Every test gets its own namespace and its own scheduler name, and its nodes are deleted afterwards, so
tests cannot see each other's pods or hosts.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from podvisor.client import APIClient, NotFound, load_kubeconfig
from podvisor.scheduler import Scheduler
from podvisor.scheduler.scheduler import NAMESPACES, NODES, PODS
from tests.e2e.cluster import free_port
from tests.waiting import eventually

_counter = itertools.count(1)


class ControlPlane:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.kubeconfig = data_dir / "kubeconfig"
        self.api: Any = None

    async def start(self) -> None:
        from podvisor.cli.up import _APIComponent
        from podvisor.kubeconfig import build_kubeconfig, write_kubeconfig

        self.api = _APIComponent(self.data_dir, host="127.0.0.1", port=free_port(), sans=["127.0.0.1"])
        await self.api.start()
        write_kubeconfig(self.kubeconfig, build_kubeconfig(self.api.url, self.api.pki))

    async def stop(self) -> None:
        if self.api is not None:
            await self.api.stop()

    def client(self) -> APIClient:
        return APIClient(load_kubeconfig(self.kubeconfig, user_agent="scheduler-tests"))

    async def kubectl(self, *args: str) -> str:
        env = dict(os.environ, KUBECONFIG=str(self.kubeconfig), HOME=str(self.data_dir / "home"))
        proc = await asyncio.create_subprocess_exec("kubectl", *args, env=env, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        if proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {err.decode()}{out.decode()}")
        return out.decode()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def control_plane(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ControlPlane]:
    cp = ControlPlane(tmp_path_factory.mktemp("cp"))
    (cp.data_dir / "home").mkdir()
    await cp.start()
    try:
        yield cp
    finally:
        await cp.stop()


def node_object(name: str, *, labels: dict[str, str] | None = None, taints: list[dict[str, Any]] | None = None,
                unschedulable: bool = False) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if taints:
        spec["taints"] = taints
    if unschedulable:
        spec["unschedulable"] = True
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})}},
            "spec": spec}


class Env:
    """One test's view: a namespace, a scheduler name, helpers to make hosts and pods and to wait."""

    def __init__(self, cp: ControlPlane, client: APIClient, n: int) -> None:
        self.cp, self.client = cp, client
        self.namespace = f"t{n}"
        self.scheduler_name = f"test-scheduler-{n}"
        self.prefix = f"t{n}-"
        self.nodes: list[str] = []
        self.scheduler: Scheduler | None = None

    def start_scheduler(self, **kw: Any) -> Scheduler:
        kw.setdefault("scheduler_names", (self.scheduler_name,))
        kw.setdefault("initial_backoff", 0.1)
        kw.setdefault("max_backoff", 0.5)
        self.scheduler = Scheduler(self.client, **kw)
        return self.scheduler

    async def add_node(self, short: str, *, cpu: str = "4", memory: str = "8Gi", pods: str = "110",
                       ephemeral: str = "20Gi", ready: str = "True", extra: dict[str, str] | None = None,
                       **kw: Any) -> str:
        """Register a host as a spherelet does: the Node, then its status (capacity, conditions)."""
        name = self.prefix + short
        await self.client.create(NODES, node_object(name, **kw))
        self.nodes.append(name)
        capacity = {"cpu": cpu, "memory": memory, "pods": pods, "ephemeral-storage": ephemeral, **(extra or {})}
        status = {"capacity": capacity, "allocatable": capacity,
                  "conditions": [{"type": "Ready", "status": ready, "reason": "SpheReady",
                                  "message": "spherelet is posting ready status"}]}
        await self.client.patch(NODES, name, {"status": status}, subresource="status")
        return name

    async def create_pod(self, name: str, *, cpu: str | None = None, memory: str | None = None,
                         labels: dict[str, str] | None = None, scheduler_name: str | None = None,
                         **spec: Any) -> dict[str, Any]:
        requests = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v}
        container: dict[str, Any] = {"name": "c", "image": "busybox"}
        if requests:
            container["resources"] = {"requests": requests}
        body = {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": self.namespace, **({"labels": labels} if labels else {})},
                "spec": {"schedulerName": scheduler_name or self.scheduler_name, "containers": [container], **spec}}
        return await self.client.create(PODS, body, self.namespace)

    async def pod(self, name: str) -> dict[str, Any]:
        return await self.client.get(PODS, name, self.namespace)

    async def wait_for(self, what: str, check: Callable[[], Awaitable[Any]], within: float = 20.0) -> Any:
        return await eventually(what, check, within)

    async def wait_bound(self, name: str, within: float = 20.0) -> str:
        async def check() -> str:
            return str((await self.pod(name)).get("spec", {}).get("nodeName") or "")
        return str(await self.wait_for(f"pod {name} bound", check, within))

    async def wait_unschedulable(self, name: str, within: float = 20.0) -> str:
        """The PodScheduled=False/Unschedulable message the scheduler wrote on the pod."""
        async def check() -> str:
            for c in (await self.pod(name)).get("status", {}).get("conditions") or []:
                if c.get("type") == "PodScheduled" and c.get("status") == "False" and c.get("reason") == "Unschedulable":
                    return str(c.get("message"))
            return ""
        return str(await self.wait_for(f"pod {name} unschedulable", check, within))

    async def events(self, name: str) -> list[dict[str, Any]]:
        from podvisor.client.events import EVENTS

        out = await self.client.list(EVENTS, self.namespace, field_selector=f"involvedObject.name={name}")
        return list(out.get("items") or [])

    async def cleanup(self) -> None:
        if self.scheduler is not None:
            await self.scheduler.stop()
        for name in self.nodes:
            try:
                await self.client.delete(NODES, name)
            except NotFound:
                pass
        pods, _ = await self.client.list_all(PODS, self.namespace)
        for p in pods:
            try:
                await self.client.delete(PODS, p["metadata"]["name"], self.namespace, body={"gracePeriodSeconds": 0})
            except NotFound:
                pass


@pytest_asyncio.fixture(loop_scope="module")
async def env(control_plane: ControlPlane) -> AsyncIterator[Env]:
    client = control_plane.client()
    e = Env(control_plane, client, next(_counter))
    await client.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": e.namespace}})
    try:
        yield e
    finally:
        await e.cleanup()
        await client.close()
