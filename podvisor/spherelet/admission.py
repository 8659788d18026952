"""The node's own admission check: a pod VM never touches host hardware or host namespaces.

The API server refuses such pods when they are created; the spherelet checks again when a pod reaches
it (a pod stored before the rule existed, or written by another API server), as a kubelet runs its own
admit handlers. A refused pod is not started: it is marked Failed with reason ``HostAccessForbidden``
and a message naming every field at fault.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["host_access_violations", "REFUSED_REASON", "refusal_message"]

REFUSED_REASON = "HostAccessForbidden"


def host_access_violations(pod: Mapping[str, Any]) -> list[str]:
    """The fields of ``pod`` that ask for host access (empty when the pod may run here)."""
    spec = pod.get("spec") or {}
    out: list[str] = []
    for f in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(f):
            out.append(f"spec.{f}")
    for i, v in enumerate(spec.get("volumes") or []):
        if isinstance(v, Mapping) and v.get("hostPath") is not None:
            out.append(f"spec.volumes[{i}].hostPath")
    for kind in ("initContainers", "containers", "ephemeralContainers"):
        for i, c in enumerate(spec.get(kind) or []):
            if not isinstance(c, Mapping):
                continue
            sc = c.get("securityContext") or {}
            if sc.get("privileged"):
                out.append(f"spec.{kind}[{i}].securityContext.privileged")
            if c.get("volumeDevices"):
                out.append(f"spec.{kind}[{i}].volumeDevices")
    return out


def refusal_message(violations: list[str]) -> str:
    return ("Pod was rejected: it asks for host access (" + ", ".join(violations) +
            "); a pod VM never touches host hardware or host namespaces")
