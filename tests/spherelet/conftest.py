"""A real control plane, a real registry and image service, and a spherelet over a *simulated* runtime.

What is real: Podvisor's API server (in-process, SQLite, TLS, as `podvisor up` starts it), the
embedded registry with a busybox image pushed to it, the image service that pulls and stages it,
and the spherelet itself (Node, Lease, informer, workers, status patches, events). What is simulated:
the runtime below the spherelet (`tests.spherelet.fakeruntime.FakeRuntime`), so the state machine can
be driven container by container, and the clock (`FakeClock`), so back-off and probe periods pass
when the test says. The end-to-end tests with real VMs live in ``test_vm.py``.

Pods are created already bound (``spec.nodeName``): no scheduler runs here.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from podvisor.client import APIClient, NotFound, Res
from podvisor.client.events import EVENTS
from podvisor.images.service import ImageService
from podvisor.spherelet import Spherelet
from podvisor.spherelet.podapi import PODS
from tests.registry.harness import RunningRegistry, start_registry
from tests.scheduler.conftest import ControlPlane
from tests.spherelet.fakeclock import FakeClock
from tests.spherelet.fakeruntime import FakeRuntime
from tests.waiting import eventually

NAMESPACES = Res("", "v1", "namespaces", namespaced=False, kind="Namespace")
NODES = Res("", "v1", "nodes", namespaced=False, kind="Node")
CONFIGMAPS = Res("", "v1", "configmaps", kind="ConfigMap")
SECRETS = Res("", "v1", "secrets", kind="Secret")
LEASES = Res("coordination.k8s.io", "v1", "leases", kind="Lease")

_counter = itertools.count(1)


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    running = start_registry(tmp_path_factory.mktemp("registry-data"))
    yield running
    running.stop()


@pytest.fixture(scope="session")
def busybox_ref(registry: RunningRegistry, tmp_path_factory: pytest.TempPathFactory) -> str:
    from tests.imagebuild import build_busybox_layout, push_layout

    layout = build_busybox_layout(tmp_path_factory.mktemp("layouts") / "busybox")
    ref = f"{registry.address}/default/busybox:1"
    asyncio.run(push_layout(layout, ref, password=registry.admin_token))
    return ref


@pytest.fixture(scope="session")
def images_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("images")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def control_plane(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ControlPlane]:
    cp = ControlPlane(tmp_path_factory.mktemp("cp"))
    (cp.data_dir / "home").mkdir()
    await cp.start()
    try:
        yield cp
    finally:
        await cp.stop()


class Host:
    """One test's host: a namespace, a node name, the simulated runtime and clock, and its spherelet."""

    def __init__(self, cp: ControlPlane, client: APIClient, n: int, *, data_dir: Path, images: ImageService,
                 image: str) -> None:
        self.cp, self.client, self.image = cp, client, image
        self.namespace = f"s{n}"
        self.node = f"sph-{n}"
        self.data_dir = data_dir
        self.images = images
        self.clock = FakeClock(start=time.time())
        self.runtime = FakeRuntime(now=self.clock.now)
        self.spherelet: Spherelet | None = None

    async def start(self, **kw: Any) -> Spherelet:
        kw.setdefault("resync_seconds", 30.0)
        self.spherelet = Spherelet(kubeconfig=self.cp.kubeconfig, node_name=self.node, data_dir=self.data_dir,
                                   runtime=self.runtime, images=self.images, clock=self.clock, source_ttl=0.0, **kw)
        await self.spherelet.start()
        return self.spherelet

    async def stop(self) -> None:
        if self.spherelet is not None:
            await self.spherelet.stop()
            self.spherelet = None

    async def create_pod(self, name: str, containers: list[dict[str, Any]] | None = None, **spec: Any) -> dict[str, Any]:
        for c in containers or []:
            c.setdefault("image", self.image)
            c.setdefault("imagePullPolicy", "IfNotPresent")
        body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": self.namespace},
                "spec": {"nodeName": self.node, "containers": containers or [
                    {"name": "app", "image": self.image, "imagePullPolicy": "IfNotPresent",
                     "command": ["fake", "run"]}], **spec}}
        return await self.client.create(PODS, body, self.namespace)

    async def pod(self, name: str) -> dict[str, Any]:
        return await self.client.get(PODS, name, self.namespace)

    async def wait_for(self, what: str, check: Callable[[], Awaitable[Any]], within: float = 20.0) -> Any:
        return await eventually(what, check, within)

    async def wait_pod(self, name: str, predicate: Callable[[dict[str, Any]], Any], what: str = "",
                       within: float = 20.0) -> dict[str, Any]:
        async def check() -> dict[str, Any] | None:
            p = await self.pod(name)
            return p if predicate(p) else None
        result: dict[str, Any] = await self.wait_for(what or f"pod {name}", check, within)
        return result

    async def wait_phase(self, name: str, phase: str, within: float = 20.0) -> dict[str, Any]:
        return await self.wait_pod(name, lambda p: (p.get("status") or {}).get("phase") == phase,
                                   f"pod {name} {phase}", within)

    async def wait_gone(self, name: str, within: float = 20.0) -> None:
        async def check() -> bool:
            try:
                await self.pod(name)
            except NotFound:
                return True
            return False
        await self.wait_for(f"pod {name} deleted", check, within)

    async def events(self, name: str) -> list[dict[str, Any]]:
        out = await self.client.list(EVENTS, self.namespace, field_selector=f"involvedObject.name={name}")
        return list(out.get("items") or [])

    async def wait_event(self, name: str, reason: str, within: float = 20.0) -> dict[str, Any]:
        async def check() -> dict[str, Any] | None:
            return next((e for e in await self.events(name) if e.get("reason") == reason), None)
        result: dict[str, Any] = await self.wait_for(f"event {reason} on {name}", check, within)
        return result

    async def cleanup(self) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(self.stop()), 10)
        except TimeoutError:
            import sys
            for t in asyncio.all_tasks():
                t.print_stack(file=sys.stderr)
            raise
        pods, _ = await self.client.list_all(PODS, self.namespace)
        for p in pods:
            try:
                await self.client.delete(PODS, p["metadata"]["name"], self.namespace,
                                         body={"gracePeriodSeconds": 0, "propagationPolicy": "Background"})
            except NotFound:
                pass
        try:
            await self.client.delete(NODES, self.node)
        except NotFound:
            pass


def container_status(pod: dict[str, Any], name: str) -> dict[str, Any]:
    for s in list((pod.get("status") or {}).get("containerStatuses") or []) + \
            list((pod.get("status") or {}).get("initContainerStatuses") or []):
        if s.get("name") == name:
            return dict(s)
    return {}


def condition(pod: dict[str, Any], ctype: str) -> dict[str, Any]:
    return next((dict(c) for c in (pod.get("status") or {}).get("conditions") or [] if c.get("type") == ctype), {})


@pytest_asyncio.fixture(loop_scope="module")
async def host(control_plane: ControlPlane, registry: RunningRegistry, busybox_ref: str, images_dir: Path,
               tmp_path: Path) -> AsyncIterator[Host]:
    client = control_plane.client()
    images = ImageService(images_dir, keychain=registry.keychain())
    h = Host(control_plane, client, next(_counter), data_dir=tmp_path / "host", images=images, image=busybox_ref)
    await client.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": h.namespace}})
    try:
        yield h
    finally:
        await h.cleanup()
        await images.close()
        await client.close()
