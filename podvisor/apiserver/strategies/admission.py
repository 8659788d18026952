"""Admission plugins that ship with the registry.

`deny_host_access` refuses pods that ask for the host: a Podvisor pod is a VM and never touches the
hypervisor host's hardware or namespaces, so ``privileged`` containers, ``hostPath`` volumes and
``hostNetwork``/``hostPID``/``hostIPC`` cannot be honoured. Refusing them at the door (403, with every
reason listed) is clearer than a pod that silently runs without what it asked for.
"""

from __future__ import annotations

from typing import Any

from podvisor.apiserver import errors as api
from podvisor.apiserver.store_core import AdmissionRequest

__all__ = ["deny_host_access", "host_access_violations", "default_runtime_class", "CRX_RUNTIME_CLASS",
           "CRX_POD_OVERHEAD"]

# Every pod is a crx VM: the default RuntimeClass, and what its VM costs beyond the containers
# (guest kernel, init, agent, QEMU). The scheduler charges it, as RuntimeClass overhead is charged.
CRX_RUNTIME_CLASS = "crx"
CRX_POD_OVERHEAD = {"cpu": "50m", "memory": "64Mi"}


def host_access_violations(spec: Any) -> list[str]:
    """What in a PodSpec asks for the host, in words."""
    if not isinstance(spec, dict):
        return []
    found: list[str] = []
    namespaces = [f"{f}=true" for f in ("hostNetwork", "hostPID", "hostIPC") if spec.get(f) is True]
    if namespaces:
        found.append(f"host namespaces ({', '.join(namespaces)})")
    privileged = [
        str(c.get("name"))
        for key in ("initContainers", "containers", "ephemeralContainers")
        for c in spec.get(key) or []
        if isinstance(c, dict) and ((c.get("securityContext") or {}).get("privileged") is True)
    ]
    if privileged:
        found.append("privileged (" + ", ".join(f'container "{n}"' for n in privileged) + ")")
    host_paths = [str(v.get("name")) for v in spec.get("volumes") or [] if isinstance(v, dict) and v.get("hostPath")]
    if host_paths:
        found.append("hostPath volumes (" + ", ".join(f'volume "{n}"' for n in host_paths) + ")")
    return found


async def deny_host_access(req: AdmissionRequest) -> None:
    """Forbid pods (created or updated) that request host hardware or host namespaces."""
    if req.resource.group != "" or req.resource.plural != "pods" or req.subresource or req.obj is None:
        return
    if req.operation not in ("CREATE", "UPDATE"):
        return
    violations = host_access_violations(req.obj.get("spec"))
    if not violations:
        return
    name = req.name or (req.obj.get("metadata") or {}).get("generateName", "")
    raise api.ForbiddenError(
        f'pods "{name}" is forbidden: a pod runs in its own VM and never touches the host\'s hardware or '
        f"namespaces; remove: {'; '.join(violations)}",
        name=name,
        kind="pods",
    )


async def default_runtime_class(req: AdmissionRequest) -> None:
    """New pods without a runtimeClassName get ``crx`` and, unless stated, its VM overhead
    (as Kubernetes' RuntimeClass admission fills ``spec.overhead``)."""
    if req.resource.group != "" or req.resource.plural != "pods" or req.subresource or req.obj is None:
        return
    if req.operation != "CREATE":
        return
    spec = req.obj.get("spec")
    if not isinstance(spec, dict):
        return
    if not spec.get("runtimeClassName"):
        spec["runtimeClassName"] = CRX_RUNTIME_CLASS
    if spec["runtimeClassName"] == CRX_RUNTIME_CLASS and not spec.get("overhead"):
        spec["overhead"] = dict(CRX_POD_OVERHEAD)
