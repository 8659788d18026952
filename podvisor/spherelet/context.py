"""What every pod worker of one node shares: the runtime, the image service, the pod network, the API,
the event recorder, the clock and the back-off books — passed as one `NodeContext` so a worker is
built from plain parts and a test can assemble one from a simulated runtime and a real API server.

The collaborators are Protocols naming exactly what the worker calls, so `podvisor.images.ImageService`,
`podvisor.network.HostNetwork` and `podvisor.client.events.EventRecorder` fit as they are.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from podvisor.images.backoff import PullBackOff
from podvisor.spherelet.backoff import CrashBackOff
from podvisor.spherelet.clock import Clock
from podvisor.spherelet.runtime import Runtime

if TYPE_CHECKING:
    from podvisor.images.auth import Keychain
    from podvisor.images.service import PullEvent
    from podvisor.images.store import StagedImage
    from podvisor.network.hostnet import PodInterface

__all__ = ["ImageProvider", "PodNetwork", "Recorder", "PodAPI", "PodSources", "NodeContext"]


class ImageProvider(Protocol):
    async def ensure_image(self, ref: str, *, pull_policy: str = "IfNotPresent", credentials: Keychain | None = None,
                           progress: Callable[[PullEvent], None] | None = None) -> StagedImage: ...

    def mark_in_use(self, digest: str, holder: str) -> None: ...

    def release(self, digest: str, holder: str) -> None: ...


class PodNetwork(Protocol):
    async def ensure(self) -> None: ...

    async def attach_pod(self, pod_uid: str) -> PodInterface: ...

    async def detach_pod(self, pod_uid: str) -> None: ...

    async def pod_interface(self, pod_uid: str) -> PodInterface | None: ...

    async def retain_pods(self, pod_uids: Iterable[str]) -> list[str]: ...


class Recorder(Protocol):
    def emit(self, obj: dict[str, Any], *, type: str, reason: str, message: str, action: str = "",
             kind: str = "") -> None: ...


class PodAPI(Protocol):
    async def patch_status(self, pod: Mapping[str, Any], patch: dict[str, Any]) -> dict[str, Any] | None:
        """PATCH pods/<name>/status (merge patch); None when the pod is gone."""
        ...

    async def delete_pod(self, pod: Mapping[str, Any]) -> None:
        """The final DELETE (grace 0, uid precondition); a pod already gone is fine."""
        ...


class PodSources(Protocol):
    async def configmap(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def secret(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def pull_keychain(self, pod: Mapping[str, Any]) -> Keychain | None: ...

    async def token(self, pod: Mapping[str, Any], audience: str, expiration: int) -> str | None: ...

    async def services(self, namespace: str) -> list[dict[str, Any]]: ...


@dataclass
class NodeContext:
    node_name: str
    runtime: Runtime
    images: ImageProvider
    sources: PodSources
    api: PodAPI
    recorder: Recorder
    clock: Clock
    host_ip: str = "127.0.0.1"
    network: PodNetwork | None = None
    network_required: bool = False           # pods wait for the network (podCIDR) when True
    allocatable: dict[str, Any] = field(default_factory=dict)
    host_cpus: int = 0
    resync_seconds: float = 10.0             # how often a quiet pod is re-checked (volumes, probes' status)
    stop_timeout: float = 10.0               # graceful power-off of a finished pod's VM
    crash_backoff: CrashBackOff | None = None
    pull_backoff: PullBackOff | None = None
    on_pod_done: Callable[[str], Awaitable[None]] | None = None

    def __post_init__(self) -> None:
        if self.crash_backoff is None:
            self.crash_backoff = CrashBackOff(clock=self.clock.now)
        if self.pull_backoff is None:
            self.pull_backoff = PullBackOff(clock=self.clock.monotonic)
