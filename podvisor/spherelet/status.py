"""A pod's status as a kubelet reports it, computed from what the runtime shows and the worker knows.

Pure functions, no I/O, so every rule is unit-testable: `container_status` turns the latest attempts of
one container (plus a waiting reason the worker holds, such as ``ErrImagePull`` or
``CrashLoopBackOff``) into a ``ContainerStatus``; `pod_phase` derives the phase *from those statuses*
the way kubelet's getPhase does; `pod_conditions` builds PodReadyToStartContainers, Initialized,
Ready, ContainersReady (keeping PodScheduled from the scheduler), with ``lastTransitionTime``
kept while a condition's status does not change; `merge_patch` is the minimal JSON merge patch from
the status in the API to the new one, so an unchanged status costs nothing.

Phase rules, in our words: a pod stays Pending while an init container has not succeeded (Failed if
one failed and restartPolicy is Never) or while an app container waits without ever having run.
It is Running while a container runs or is being restarted; Succeeded when every app container
ended with 0 and nothing will restart them; Failed when all ended, one with an error, and
restartPolicy is Never. A terminal phase never changes again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from podvisor.spherelet.runtime import ContainerInfo

__all__ = [
    "ContainerView", "container_status", "pod_phase", "pod_conditions", "merge_patch", "rfc3339",
    "container_id_url", "TERMINAL_PHASES", "is_sidecar",
]

TERMINAL_PHASES = ("Succeeded", "Failed")


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def container_id_url(sandbox_id: str, container_id: str) -> str:
    """``crx://<64 hex>``: a stable, opaque id per container attempt, as CRI runtimes show theirs."""
    return "crx://" + hashlib.sha256(f"{sandbox_id}/{container_id}".encode()).hexdigest()


def is_sidecar(container: Mapping[str, Any]) -> bool:
    return container.get("restartPolicy") == "Always"


@dataclass
class ContainerView:
    """What the worker knows about one container of the spec."""

    name: str
    image: str
    image_id: str = ""
    sandbox_id: str = ""
    current: ContainerInfo | None = None      # the latest attempt
    previous: ContainerInfo | None = None     # the attempt before it
    restart_count: int = 0
    waiting: tuple[str, str] | None = None    # (reason, message) while no attempt runs
    ready: bool = False
    started: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def _terminated(sandbox_id: str, info: ContainerInfo) -> dict[str, Any]:
    reason = info.reason or ("Completed" if info.exit_code == 0 else "Error")
    if info.oom_killed:
        reason = "OOMKilled"
    t: dict[str, Any] = {"exitCode": info.exit_code, "reason": reason}
    if info.message:
        t["message"] = info.message
    if info.exit_code > 128 and info.exit_code - 128 < 65 and info.reason not in ("StartError",):
        t["signal"] = info.exit_code - 128
    if info.started_at:
        t["startedAt"] = rfc3339(info.started_at)
    if info.finished_at:
        t["finishedAt"] = rfc3339(info.finished_at)
    t["containerID"] = container_id_url(sandbox_id, info.id)
    return t


def container_status(view: ContainerView) -> dict[str, Any]:
    cur, prev = view.current, view.previous
    state: dict[str, Any]
    last: dict[str, Any] = {}
    if cur is not None and cur.state == "running" and view.waiting is None:
        state = {"running": {"startedAt": rfc3339(cur.started_at)}} if cur.started_at else {"running": {}}
        if prev is not None and prev.state == "exited":
            last = {"terminated": _terminated(view.sandbox_id, prev)}
    elif view.waiting is not None:
        reason, message = view.waiting
        state = {"waiting": {"reason": reason, **({"message": message} if message else {})}}
        src = cur if cur is not None and cur.state == "exited" else prev
        if src is not None and src.state == "exited":
            last = {"terminated": _terminated(view.sandbox_id, src)}
    elif cur is not None and cur.state == "exited":
        state = {"terminated": _terminated(view.sandbox_id, cur)}
        if prev is not None and prev.state == "exited":
            last = {"terminated": _terminated(view.sandbox_id, prev)}
    else:
        state = {"waiting": {"reason": "ContainerCreating"}}
    out: dict[str, Any] = {
        "name": view.name,
        "state": state,
        "lastState": last,
        "ready": bool(view.ready and "running" in state),
        "restartCount": view.restart_count,
        "image": view.image,
        "imageID": view.image_id,
        "started": bool(view.started and "running" in state),
    }
    if cur is not None:
        out["containerID"] = container_id_url(view.sandbox_id, cur.id)
    out.update(view.extra)
    return out


def _exit_code(status: Mapping[str, Any], which: str) -> int | None:
    t = (status.get(which) or {}).get("terminated")
    return int(t.get("exitCode", 0)) if isinstance(t, Mapping) else None


def pod_phase(spec: Mapping[str, Any], init_statuses: Sequence[Mapping[str, Any]],
              statuses: Sequence[Mapping[str, Any]], *, previous_phase: str = "") -> str:
    if previous_phase in TERMINAL_PHASES:
        return previous_phase
    policy = str(spec.get("restartPolicy") or "Always")
    init_specs = {c.get("name"): c for c in spec.get("initContainers") or []}
    pending_init = failed_init = 0
    for st in init_statuses:
        c = init_specs.get(st.get("name"), {})
        if is_sidecar(c):
            if not st.get("started"):
                pending_init += 1
            continue
        state = st.get("state") or {}
        code = _exit_code(st, "state")
        if "running" in state:
            pending_init += 1
        elif code is not None:
            if code == 0:
                continue
            failed_init += 1
        elif "waiting" in state:
            last = _exit_code(st, "lastState")
            if last is None:
                pending_init += 1
            elif last != 0:
                failed_init += 1
        else:
            pending_init += 1
    if failed_init and policy == "Never":
        return "Failed"
    if pending_init or failed_init:
        return "Pending"
    running = waiting = stopped = succeeded = 0
    for st in statuses:
        state = st.get("state") or {}
        if "running" in state:
            running += 1
        elif "terminated" in state:
            stopped += 1
            if _exit_code(st, "state") == 0:
                succeeded += 1
        elif "waiting" in state:
            last = _exit_code(st, "lastState")
            if last is not None:
                stopped += 1
                if last == 0:
                    succeeded += 1
            else:
                waiting += 1
    if waiting:
        return "Pending"
    if running:
        return "Running"
    if stopped:
        if policy == "Always":
            return "Running"
        if stopped == succeeded:
            return "Succeeded"
        if policy == "Never":
            return "Failed"
        return "Running"
    return "Pending"


def _cond(ctype: str, ok: bool, reason: str = "", message: str = "") -> dict[str, Any]:
    c: dict[str, Any] = {"type": ctype, "status": "True" if ok else "False", "lastProbeTime": None}
    if not ok and reason:
        c["reason"] = reason
    if not ok and message:
        c["message"] = message
    return c


def pod_conditions(spec: Mapping[str, Any], phase: str, init_statuses: Sequence[Mapping[str, Any]],
                   statuses: Sequence[Mapping[str, Any]], *, sandbox_ready: bool,
                   old_conditions: Sequence[Mapping[str, Any]], now: str,
                   readiness_gates: Mapping[str, bool] | None = None) -> list[dict[str, Any]]:
    init_specs = {c.get("name"): c for c in spec.get("initContainers") or []}
    incomplete = []
    for st in init_statuses:
        c = init_specs.get(st.get("name"), {})
        if is_sidecar(c):
            if not st.get("started") and phase not in TERMINAL_PHASES:
                incomplete.append(str(st.get("name")))
        elif _exit_code(st, "state") != 0:
            incomplete.append(str(st.get("name")))
    initialized = not incomplete or (phase == "Succeeded")
    unready = [str(st.get("name")) for st in statuses if not st.get("ready")]
    unready += [str(st.get("name")) for st in init_statuses
                if is_sidecar(init_specs.get(st.get("name"), {})) and not st.get("ready")]
    conds: list[dict[str, Any]] = [_cond("PodReadyToStartContainers", sandbox_ready)]
    conds.append(_cond("Initialized", initialized, "ContainersNotInitialized",
                       f"containers with incomplete status: [{' '.join(incomplete)}]"))
    if phase in TERMINAL_PHASES:
        reason = "PodCompleted" if phase == "Succeeded" else "PodFailed"
        ready_c = _cond("Ready", False, reason)
        cready_c = _cond("ContainersReady", False, reason)
    else:
        cready = not unready
        msg = f"containers with unready status: [{' '.join(unready)}]"
        cready_c = _cond("ContainersReady", cready, "ContainersNotReady", msg)
        gates = [str(g.get("conditionType")) for g in spec.get("readinessGates") or []]
        missing = [g for g in gates if not (readiness_gates or {}).get(g)]
        if not cready:
            ready_c = _cond("Ready", False, "ContainersNotReady", msg)
        elif missing:
            ready_c = _cond("Ready", False, "ReadinessGatesNotReady",
                            f"corresponding condition of pod readiness gate \"{missing[0]}\" does not exist.")
        else:
            ready_c = _cond("Ready", True)
    conds += [ready_c, cready_c]
    old = {str(c.get("type")): c for c in old_conditions}
    for c in conds:
        prev = old.get(c["type"])
        c["lastTransitionTime"] = prev.get("lastTransitionTime") if prev and prev.get("status") == c["status"] \
            and prev.get("lastTransitionTime") else now
    ours = {c["type"] for c in conds}
    for t, c in old.items():  # PodScheduled (the scheduler's), readiness gates' own conditions, ...
        if t not in ours:
            conds.append(dict(c))
    return conds


def merge_patch(old: Any, new: Any) -> Any:
    """The JSON merge patch (RFC 7386) taking ``old`` to ``new``; ``{}`` when equal."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    patch: dict[str, Any] = {}
    for k, v in new.items():
        if k not in old:
            patch[k] = v
        elif old[k] != v:
            if isinstance(v, dict) and isinstance(old[k], dict):
                patch[k] = merge_patch(old[k], v)
            else:
                patch[k] = v
    for k in old:
        if k not in new:
            patch[k] = None
    return patch
