"""The controller manager: runs every control loop against the API server through the client package.

It connects with a kubeconfig like any external client (`podvisor up` hands it the admin one), so the
loops could run on another machine unchanged. Loops are started in order and stopped in reverse; one
loop failing to start stops the ones already started.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Protocol

from podvisor.client import APIClient, load_kubeconfig
from podvisor.controllers.garbagecollector import GarbageCollector
from podvisor.controllers.namespace import NamespaceController
from podvisor.controllers.nodeipam import NodeIPAMController
from podvisor.controllers.serviceaccount import ServiceAccountController

__all__ = ["ControllerManager", "Loop"]


class Loop(Protocol):
    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class ControllerManager:
    name = "controllers"

    def __init__(self, kubeconfig: Path, *, cluster_cidr: str = "10.88.0.0/16") -> None:
        self.kubeconfig = kubeconfig
        self.cluster_cidr = cluster_cidr
        self.client: APIClient | None = None
        self.loops: list[Loop] = []

    async def start(self) -> None:
        self.client = APIClient(load_kubeconfig(self.kubeconfig, user_agent="podvisor-controller-manager"))
        candidates: list[Loop] = [
            NamespaceController(self.client),
            GarbageCollector(self.client),
            NodeIPAMController(self.client, cluster_cidr=self.cluster_cidr),
            ServiceAccountController(self.client),
        ]
        try:
            for loop in candidates:
                await loop.start()
                self.loops.append(loop)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        for loop in reversed(self.loops):
            with contextlib.suppress(Exception):
                await loop.stop()
        self.loops.clear()
        if self.client is not None:
            await self.client.close()
            self.client = None

    def describe(self) -> dict[str, Any]:
        return {"controllers": [loop.name for loop in self.loops]}
