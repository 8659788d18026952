"""One pod's state on this node as its worker holds it, and the status built from it.

The runtime's container list is the source of truth for what ran (attempts, exit codes, times); this
object adds what only the worker knows: the sandbox and its address, the staged images, the
volumes written, the probes running, and why a container is waiting (an image pull failing, a
ConfigMap missing, a crash-loop back-off). `PodState.build_status` turns both into the pod status.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from podvisor.images.reference import parse_reference
from podvisor.spherelet.containers import attempts
from podvisor.spherelet.probes import ContainerProbes
from podvisor.spherelet.runtime import ContainerInfo, Sandbox
from podvisor.spherelet.sizing import qos_class
from podvisor.spherelet.status import (
    TERMINAL_PHASES,
    ContainerView,
    container_status,
    is_sidecar,
    pod_conditions,
    pod_phase,
    rfc3339,
)
from podvisor.spherelet.volumes import VolumeFile

if TYPE_CHECKING:
    from podvisor.images.store import StagedImage

__all__ = ["PodState", "image_id_of"]


def image_id_of(ref: str, image: StagedImage | None) -> str:
    if image is None:
        return ""
    try:
        name = parse_reference(ref).name
    except Exception:  # an image name the API accepted but we cannot parse: show the digest only
        return image.digest
    return f"{name}@{image.digest}"


@dataclass
class PodState:
    uid: str
    sandbox: Sandbox | None = None
    sandbox_attempt: int = 0
    pod_ip: str = ""
    images: dict[str, StagedImage] = field(default_factory=dict)          # by image reference
    leased: set[str] = field(default_factory=set)                         # digests leased by this pod
    waiting: dict[str, tuple[str, str]] = field(default_factory=dict)     # container name -> reason, message
    volume_sources: dict[str, str] = field(default_factory=dict)          # volume name -> mount source
    volume_payloads: dict[str, tuple[str, list[VolumeFile]]] = field(default_factory=dict)
    probes: dict[str, ContainerProbes] = field(default_factory=dict)      # by container id
    containers: list[ContainerInfo] = field(default_factory=list)         # the runtime's last answer
    start_time: str = ""
    terminal: tuple[str, str, str] | None = None                          # phase, reason, message
    final: bool = False                                                   # killed for deletion
    last_status: dict[str, Any] | None = None
    stopped: bool = False                                                 # sandbox powered off (terminal)
    released: bool = False                                                # network and images given back

    # ---- views ---------------------------------------------------------------------------------

    def _view(self, c: Mapping[str, Any], default_wait: str) -> ContainerView:
        name = str(c.get("name", ""))
        image = str(c.get("image", ""))
        at = attempts(self.containers, name)
        view = ContainerView(name=name, image=image, image_id=image_id_of(image, self.images.get(image)),
                             sandbox_id=self.sandbox.id if self.sandbox else "")
        if at:
            n, cur = at[-1]
            view.current = cur
            view.restart_count = n
            if len(at) > 1:
                view.previous = at[-2][1]
            if cur.state == "created":
                view.waiting = ("ContainerCreating", "")
        waiting = self.waiting.get(name)
        if waiting is not None:
            view.waiting = waiting
        elif not at:
            view.waiting = (default_wait, "")
        if view.current is not None and view.current.state == "running":
            probes = self.probes.get(view.current.id)
            view.started = probes.started if probes is not None else True
            view.ready = probes.ready if probes is not None else True
        return view

    def build_status(self, pod: Mapping[str, Any], *, now: float, host_ip: str, sandbox_ready: bool) -> dict[str, Any]:
        spec = pod.get("spec") or {}
        old = pod.get("status") or {}
        inits = list(spec.get("initContainers") or [])
        apps = list(spec.get("containers") or [])
        init_views = []
        initializing = False
        for c in inits:
            view = self._view(c, "PodInitializing")
            init_views.append(view)
            if not is_sidecar(c) and (view.current is None or view.current.state != "exited"
                                      or view.current.exit_code != 0):
                initializing = True
        app_views = [self._view(c, "PodInitializing" if initializing and inits else "ContainerCreating") for c in apps]
        init_statuses = [container_status(v) for v in init_views]
        statuses = sorted((container_status(v) for v in app_views), key=lambda s: str(s["name"]))
        previous_phase = str(old.get("phase") or "")
        if self.terminal is not None:
            phase = self.terminal[0]
        else:
            phase = pod_phase(spec, init_statuses, statuses, previous_phase=previous_phase)
            if self.final and phase not in TERMINAL_PHASES:
                # deleted: every container has been stopped; report how they ended
                ended = [s for s in statuses if "terminated" in (s.get("state") or {})]
                if ended and len(ended) == len(statuses):
                    ok = all(s["state"]["terminated"].get("exitCode") == 0 for s in ended)
                    phase = "Succeeded" if ok else "Failed"
        ts = rfc3339(now)
        conditions = pod_conditions(spec, phase, init_statuses, statuses,
                                    sandbox_ready=sandbox_ready and not self.stopped,
                                    old_conditions=old.get("conditions") or [], now=ts)
        status: dict[str, Any] = {"phase": phase, "conditions": conditions}
        if host_ip:
            status["hostIP"] = host_ip
            status["hostIPs"] = [{"ip": host_ip}]
        pod_ip = self.pod_ip or str(old.get("podIP") or "")
        if pod_ip:
            status["podIP"] = pod_ip
            status["podIPs"] = [{"ip": pod_ip}]
        if self.start_time:
            status["startTime"] = self.start_time
        if inits:
            status["initContainerStatuses"] = init_statuses
        status["containerStatuses"] = statuses
        status["qosClass"] = old.get("qosClass") or qos_class(spec)
        if self.terminal is not None:
            status["reason"], status["message"] = self.terminal[1], self.terminal[2]
        for key in ("nominatedNodeName", "resize"):
            if key in old:
                status[key] = old[key]
        return status
