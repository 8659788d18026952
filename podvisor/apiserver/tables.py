"""Server-side printing: the ``Table`` (meta.k8s.io/v1) kubectl shows for ``kubectl get``.

kubectl prints whatever columns the server sends, so the columns here are the ones Kubernetes users know
(``NAME READY STATUS RESTARTS AGE`` for pods, ``-o wide`` columns with priority 1), and the cells are
computed the way Kubernetes' printers compute them: a pod's STATUS from its phase, reason and container
states (``Init:1/2``, ``CrashLoopBackOff``, ``Completed``, ``Terminating``), ages as ``5m``/``2d3h``
(`human_duration`), ``<none>``/``<pending>`` placeholders. Each row carries the object as
PartialObjectMetadata (kubectl needs it for NAMESPACE, ``--show-labels`` and ``-L``), the whole object
(``includeObject=Object``, used by ``--sort-by``), or nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from podvisor.apiserver.meta import parse_time
from podvisor.apiserver.selectors import format_label_selector
from podvisor.apiserver.strategies.events import to_core_event
from podvisor.schema.model import Resource

__all__ = ["table_for", "human_duration", "pod_status", "columns_for"]

Column = dict[str, Any]
Cells = Callable[[dict[str, Any], datetime], list[Any]]


def _col(name: str, typ: str = "string", description: str = "", *, priority: int = 0, fmt: str = "") -> Column:
    return {"name": name, "type": typ, "format": fmt, "description": description, "priority": priority}


_NAME = _col("Name", fmt="name", description="The object's name, unique within its namespace (or the cluster).")
_AGE = _col("Age", description="How long ago the object was created.")


def human_duration(seconds: float) -> str:
    """A duration the way kubectl prints ages: two significant units at most (``5m10s``, ``2d3h``)."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        rest = s % 60
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h{rest}m" if rest else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d{rest}h" if rest else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y{days}d" if days else f"{hours // 24 // 365}y"
    return f"{hours // 24 // 365}y"


def _since(value: Any, now: datetime) -> str:
    t = parse_time(value)
    if t is None:
        return "<unknown>"
    return human_duration((now - t).total_seconds())


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    m = obj.get("metadata")
    return m if isinstance(m, dict) else {}


def _age(obj: dict[str, Any], now: datetime) -> str:
    return _since(_meta(obj).get("creationTimestamp"), now)


def _or_none(value: Any, placeholder: str = "<none>") -> Any:
    return value if value not in (None, "", []) else placeholder


# --- pods --------------------------------------------------------------------------------------


def _condition_true(conditions: Any, kind: str) -> bool:
    return any(isinstance(c, dict) and c.get("type") == kind and c.get("status") == "True" for c in conditions or [])


def pod_status(pod: dict[str, Any]) -> tuple[str, int, int, int, Any]:
    """(STATUS, ready containers, total containers, restarts, last restart time) as kubectl computes them."""
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    total = len(spec.get("containers") or [])
    ready = 0
    restarts = 0
    last_restart: datetime | None = None
    reason = status.get("reason") or status.get("phase") or ""
    conditions = status.get("conditions") or []
    for c in conditions:
        if isinstance(c, dict) and c.get("type") == "PodScheduled" and c.get("reason") == "SchedulingGated":
            reason = "SchedulingGated"

    def note_restart(cs: dict[str, Any]) -> None:
        nonlocal last_restart
        finished = parse_time(((cs.get("lastState") or {}).get("terminated") or {}).get("finishedAt"))
        if finished is not None and (last_restart is None or finished > last_restart):
            last_restart = finished

    init_specs = spec.get("initContainers") or []
    sidecars = {c.get("name") for c in init_specs if isinstance(c, dict) and c.get("restartPolicy") == "Always"}
    total += len(sidecars)
    sidecar_restarts = 0
    initializing = False
    for i, cs in enumerate(status.get("initContainerStatuses") or []):
        restarts += int(cs.get("restartCount") or 0)
        note_restart(cs)
        state = cs.get("state") or {}
        term, waiting = state.get("terminated"), state.get("waiting")
        is_sidecar = cs.get("name") in sidecars
        if is_sidecar:
            sidecar_restarts += int(cs.get("restartCount") or 0)
            if cs.get("started") and cs.get("ready"):
                ready += 1
        if term is not None and term.get("exitCode") == 0:
            continue
        if is_sidecar and cs.get("started"):
            continue
        if term is not None:
            if term.get("reason"):
                reason = "Init:" + str(term["reason"])
            elif term.get("signal"):
                reason = f"Init:Signal:{term['signal']}"
            else:
                reason = f"Init:ExitCode:{term.get('exitCode', 0)}"
        elif waiting is not None and waiting.get("reason") and waiting.get("reason") != "PodInitializing":
            reason = "Init:" + str(waiting["reason"])
        else:
            reason = f"Init:{i}/{len(init_specs)}"
        initializing = True
        break
    if not initializing or _condition_true(conditions, "Initialized"):
        restarts = sidecar_restarts
        running = False
        for cs in reversed(status.get("containerStatuses") or []):
            restarts += int(cs.get("restartCount") or 0)
            note_restart(cs)
            state = cs.get("state") or {}
            waiting, term = state.get("waiting"), state.get("terminated")
            if waiting is not None and waiting.get("reason"):
                reason = str(waiting["reason"])
            elif term is not None and term.get("reason"):
                reason = str(term["reason"])
            elif term is not None:
                reason = f"Signal:{term['signal']}" if term.get("signal") else f"ExitCode:{term.get('exitCode', 0)}"
            elif cs.get("ready") and state.get("running") is not None:
                running = True
                ready += 1
        if reason == "Completed" and running:
            reason = "Running" if _condition_true(conditions, "Ready") else "NotReady"
    if _meta(pod).get("deletionTimestamp"):
        if status.get("reason") == "NodeLost":
            reason = "Unknown"
        elif status.get("phase") not in ("Succeeded", "Failed"):
            reason = "Terminating"
    return reason, ready, total, restarts, last_restart


def _pod_cells(pod: dict[str, Any], now: datetime) -> list[Any]:
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    reason, ready, total, restarts, last = pod_status(pod)
    restarts_text = str(restarts)
    if restarts and last is not None:
        restarts_text = f"{restarts} ({human_duration((now - last).total_seconds())} ago)"
    gates = spec.get("readinessGates") or []
    gates_text = "<none>"
    if gates:
        true_types = {c.get("type") for c in status.get("conditions") or [] if c.get("status") == "True"}
        gates_text = f"{sum(1 for g in gates if g.get('conditionType') in true_types)}/{len(gates)}"
    return [
        _meta(pod).get("name", ""), f"{ready}/{total}", reason, restarts_text, _age(pod, now),
        _or_none(status.get("podIP")), _or_none(spec.get("nodeName")), _or_none(status.get("nominatedNodeName")),
        gates_text,
    ]


def _pod_conditions(pod: dict[str, Any]) -> list[dict[str, Any]] | None:
    phase = (pod.get("status") or {}).get("phase")
    if phase == "Succeeded":
        return [{"type": "Completed", "status": "True", "reason": "Succeeded", "message": "The pod has completed successfully."}]
    if phase == "Failed":
        return [{"type": "Completed", "status": "True", "reason": "Failed", "message": "The pod failed."}]
    return None


# --- workloads -----------------------------------------------------------------------------------


def _template_columns(spec: dict[str, Any]) -> list[str]:
    containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
    return [
        ",".join(str(c.get("name", "")) for c in containers),
        ",".join(str(c.get("image", "")) for c in containers),
        format_label_selector(spec.get("selector")),
    ]


def _deployment_cells(d: dict[str, Any], now: datetime) -> list[Any]:
    spec, status = d.get("spec") or {}, d.get("status") or {}
    return [
        _meta(d).get("name", ""), f"{int(status.get('readyReplicas') or 0)}/{int(spec.get('replicas') or 0)}",
        int(status.get("updatedReplicas") or 0), int(status.get("availableReplicas") or 0), _age(d, now),
        *_template_columns(spec),
    ]


def _replicaset_cells(rs: dict[str, Any], now: datetime) -> list[Any]:
    spec, status = rs.get("spec") or {}, rs.get("status") or {}
    return [
        _meta(rs).get("name", ""), int(spec.get("replicas") or 0), int(status.get("replicas") or 0),
        int(status.get("readyReplicas") or 0), _age(rs, now), *_template_columns(spec),
    ]


def _job_cells(job: dict[str, Any], now: datetime) -> list[Any]:
    spec, status = job.get("spec") or {}, job.get("status") or {}
    conditions = status.get("conditions") or []
    if _condition_true(conditions, "Complete"):
        state = "Complete"
    elif _condition_true(conditions, "Failed"):
        state = "Failed"
    elif _meta(job).get("deletionTimestamp"):
        state = "Terminating"
    elif _condition_true(conditions, "Suspended"):
        state = "Suspended"
    elif _condition_true(conditions, "FailureTarget"):
        state = "FailureTarget"
    else:
        state = "Running"
    succeeded = int(status.get("succeeded") or 0)
    if spec.get("completions") is not None:
        completions = f"{succeeded}/{spec['completions']}"
    elif int(spec.get("parallelism") or 0) > 1:
        completions = f"{succeeded}/1 of {spec['parallelism']}"
    else:
        completions = f"{succeeded}/1"
    start, end = parse_time(status.get("startTime")), parse_time(status.get("completionTime"))
    duration = human_duration(((end or now) - start).total_seconds()) if start else ""
    return [_meta(job).get("name", ""), state, completions, duration, _age(job, now), *_template_columns(spec)]


# --- services and networking ---------------------------------------------------------------------


def _external_ip(spec: dict[str, Any], status: dict[str, Any]) -> str:
    typ = spec.get("type") or "ClusterIP"
    external = [str(ip) for ip in spec.get("externalIPs") or []]
    if typ == "ExternalName":
        return str(spec.get("externalName") or "<none>")
    if typ == "LoadBalancer":
        ingress = [str(i.get("ip") or i.get("hostname") or "") for i in (status.get("loadBalancer") or {}).get("ingress") or []]
        found = [x for x in ingress + external if x]
        return ",".join(found) if found else "<pending>"
    return ",".join(external) if external else "<none>"


def _service_cells(svc: dict[str, Any], now: datetime) -> list[Any]:
    spec, status = svc.get("spec") or {}, svc.get("status") or {}
    ports = []
    for p in spec.get("ports") or []:
        proto = p.get("protocol") or "TCP"
        ports.append(f"{p.get('port')}:{p['nodePort']}/{proto}" if p.get("nodePort") else f"{p.get('port')}/{proto}")
    selector = spec.get("selector") or {}
    return [
        _meta(svc).get("name", ""), spec.get("type") or "ClusterIP", _or_none(spec.get("clusterIP")),
        _external_ip(spec, status), ",".join(ports) or "<none>", _age(svc, now),
        ",".join(f"{k}={v}" for k, v in sorted(selector.items())) or "<none>",
    ]


def _more(items: list[str], limit: int = 3) -> str:
    if not items:
        return "<none>"
    text = ",".join(items[:limit])
    return text + (f" + {len(items) - limit} more..." if len(items) > limit else "")


def _endpoints_cells(ep: dict[str, Any], now: datetime) -> list[Any]:
    items: list[str] = []
    for subset in ep.get("subsets") or []:
        ports = [p.get("port") for p in subset.get("ports") or []] or [None]
        for a in subset.get("addresses") or []:
            for port in ports:
                items.append(f"{a.get('ip')}:{port}" if port is not None else str(a.get("ip")))
    return [_meta(ep).get("name", ""), _more(items), _age(ep, now)]


def _endpointslice_cells(es: dict[str, Any], now: datetime) -> list[Any]:
    ports = [str(p.get("port")) for p in es.get("ports") or [] if p.get("port") is not None]
    addresses = [str(a) for e in es.get("endpoints") or [] for a in e.get("addresses") or []]
    return [
        _meta(es).get("name", ""), es.get("addressType", ""), _more(ports) if ports else "<unset>",
        _more(addresses) if addresses else "<unset>", _age(es, now),
    ]


# --- cluster and config --------------------------------------------------------------------------


def _node_cells(node: dict[str, Any], now: datetime) -> list[Any]:
    spec, status = node.get("spec") or {}, node.get("status") or {}
    ready = next((c.get("status") for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    state = {"True": "Ready", "False": "NotReady"}.get(str(ready), "Unknown")
    if spec.get("unschedulable"):
        state += ",SchedulingDisabled"
    labels = _meta(node).get("labels") or {}
    roles = sorted(
        {k.removeprefix("node-role.kubernetes.io/") for k in labels if k.startswith("node-role.kubernetes.io/")}
        | ({labels["kubernetes.io/role"]} if labels.get("kubernetes.io/role") else set())
    )
    addresses = status.get("addresses") or []

    def address(kind: str) -> str:
        return next((str(a.get("address")) for a in addresses if a.get("type") == kind), "<none>")

    info = status.get("nodeInfo") or {}
    return [
        _meta(node).get("name", ""), state, ",".join(r for r in roles if r) or "<none>", _age(node, now),
        info.get("kubeletVersion", ""), address("InternalIP"), address("ExternalIP"),
        _or_none(info.get("osImage"), "<unknown>"), _or_none(info.get("kernelVersion"), "<unknown>"),
        _or_none(info.get("containerRuntimeVersion"), "<unknown>"),
    ]


def _event_cells(ev: dict[str, Any], now: datetime) -> list[Any]:
    involved = ev.get("involvedObject") or {}
    first = _since(ev.get("firstTimestamp"), now) if ev.get("firstTimestamp") else _since(ev.get("eventTime"), now)
    last = _since(ev.get("lastTimestamp"), now) if ev.get("lastTimestamp") else first
    count = int(ev.get("count") or 0)
    series = ev.get("series")
    if isinstance(series, dict):
        last = _since(series.get("lastObservedTime"), now)
        count = int(series.get("count") or count)
    elif count == 0:
        count = 1
    kind = str(involved.get("kind") or "").lower()
    target = f"{kind}/{involved['name']}" if involved.get("name") else kind
    source = ev.get("source") or {}
    if source.get("component"):
        src = str(source["component"]) + (f", {source['host']}" if source.get("host") else "")
    else:
        src = str(ev.get("reportingComponent") or "")
        if ev.get("reportingInstance"):
            src += f", {ev['reportingInstance']}"
    return [
        last, ev.get("type", ""), ev.get("reason", ""), target, involved.get("fieldPath", ""), src,
        str(ev.get("message") or "").strip(), first, count, _meta(ev).get("name", ""),
    ]


def _simple(*cells: Callable[[dict[str, Any]], Any]) -> Cells:
    def build(obj: dict[str, Any], now: datetime) -> list[Any]:
        return [_meta(obj).get("name", ""), *(f(obj) for f in cells), _age(obj, now)]

    return build


def _count(*fields: str) -> Callable[[dict[str, Any]], int]:
    return lambda obj: sum(len(obj.get(f) or {}) for f in fields)


_PRINTERS: dict[tuple[str, str], tuple[list[Column], Cells]] = {
    ("", "pods"): ([
        _NAME, _col("Ready", description="Ready containers out of all containers."),
        _col("Status", description="What the pod is doing, computed from its phase and container states."),
        _col("Restarts", description="Container restarts, with how long ago the last one was."), _AGE,
        _col("IP", priority=1, description="The pod's IP address."),
        _col("Node", priority=1, description="The node the pod is bound to."),
        _col("Nominated Node", priority=1, description="The node the scheduler nominated after preemption."),
        _col("Readiness Gates", priority=1, description="Readiness gates met out of all gates."),
    ], _pod_cells),
    ("apps", "deployments"): ([
        _NAME, _col("Ready", description="Ready replicas out of desired replicas."),
        _col("Up-to-date", "integer", "Replicas running the newest template."),
        _col("Available", "integer", "Replicas available to serve."), _AGE,
        _col("Containers", priority=1, description="Containers of the pod template."),
        _col("Images", priority=1, description="Images of the pod template."),
        _col("Selector", priority=1, description="The label selector of the pods."),
    ], _deployment_cells),
    ("apps", "replicasets"): ([
        _NAME, _col("Desired", "integer", "Replicas wanted."), _col("Current", "integer", "Replicas existing."),
        _col("Ready", "integer", "Replicas ready."), _AGE,
        _col("Containers", priority=1, description="Containers of the pod template."),
        _col("Images", priority=1, description="Images of the pod template."),
        _col("Selector", priority=1, description="The label selector of the pods."),
    ], _replicaset_cells),
    ("batch", "jobs"): ([
        _NAME, _col("Status", description="Complete, Failed, Running, Suspended or Terminating."),
        _col("Completions", description="Succeeded pods out of the completions wanted."),
        _col("Duration", description="How long the job has run or ran."), _AGE,
        _col("Containers", priority=1, description="Containers of the pod template."),
        _col("Images", priority=1, description="Images of the pod template."),
        _col("Selector", priority=1, description="The label selector of the pods."),
    ], _job_cells),
    ("", "services"): ([
        _NAME, _col("Type", description="ClusterIP, NodePort, LoadBalancer or ExternalName."),
        _col("Cluster-IP", description="The virtual IP of the service."),
        _col("External-IP", description="Addresses reachable from outside the cluster."),
        _col("Port(s)", description="Ports, with node ports, and their protocol."), _AGE,
        _col("Selector", priority=1, description="The label selector of the backing pods."),
    ], _service_cells),
    ("", "endpoints"): ([_NAME, _col("Endpoints", description="Ready addresses and ports."), _AGE], _endpoints_cells),
    ("discovery.k8s.io", "endpointslices"): ([
        _NAME, _col("AddressType", description="IPv4, IPv6 or FQDN."), _col("Ports", description="Ports served."),
        _col("Endpoints", description="Endpoint addresses."), _AGE,
    ], _endpointslice_cells),
    ("", "nodes"): ([
        _NAME, _col("Status", description="Ready, NotReady or Unknown, and whether scheduling is disabled."),
        _col("Roles", description="The node's roles, from its node-role labels."), _AGE,
        _col("Version", description="The node agent's version."),
        _col("Internal-IP", priority=1, description="The node's internal address."),
        _col("External-IP", priority=1, description="The node's external address."),
        _col("OS-Image", priority=1, description="The node's operating system."),
        _col("Kernel-Version", priority=1, description="The node's kernel version."),
        _col("Container-Runtime", priority=1, description="The runtime that runs the pods."),
    ], _node_cells),
    ("", "namespaces"): ([_NAME, _col("Status", description="Active or Terminating."), _AGE],
                         _simple(lambda o: (o.get("status") or {}).get("phase", ""))),
    ("", "configmaps"): ([_NAME, _col("Data", "integer", "Number of keys."), _AGE], _simple(_count("data", "binaryData"))),
    ("", "secrets"): ([_NAME, _col("Type", description="The secret's type."),
                       _col("Data", "integer", "Number of keys."), _AGE],
                      _simple(lambda o: o.get("type", ""), _count("data"))),
    ("", "serviceaccounts"): ([_NAME, _col("Secrets", "integer", "Number of secrets."), _AGE],
                              _simple(lambda o: len(o.get("secrets") or []))),
    ("", "events"): ([
        _col("Last Seen", description="When the event was last seen."),
        _col("Type", description="Normal or Warning."), _col("Reason", description="Why the event happened."),
        _col("Object", description="The object the event is about."),
        _col("Subobject", priority=1, description="The part of the object (e.g. a container)."),
        _col("Source", priority=1, description="The component that reported the event."),
        _col("Message", description="What happened."),
        _col("First Seen", priority=1, description="When the event was first seen."),
        _col("Count", "integer", "How many times it happened.", priority=1),
        _col("Name", priority=1, fmt="name", description="The event's name."),
    ], _event_cells),
    ("coordination.k8s.io", "leases"): ([_NAME, _col("Holder", description="Who holds the lease."), _AGE],
                                        _simple(lambda o: (o.get("spec") or {}).get("holderIdentity") or "")),
    ("node.k8s.io", "runtimeclasses"): ([_NAME, _col("Handler", description="The runtime handler."), _AGE],
                                        _simple(lambda o: o.get("handler", ""))),
}
_DEFAULT: tuple[list[Column], Cells] = ([_NAME, _AGE], _simple())


def columns_for(resource: Resource) -> list[Column]:
    key = ("", "events") if resource.plural == "events" else (resource.group, resource.plural)
    return [dict(c) for c in _PRINTERS.get(key, _DEFAULT)[0]]


def table_for(
    resource: Resource,
    objects: list[dict[str, Any]],
    *,
    include_object: str = "Metadata",
    resource_version: str = "",
    continue_token: str = "",
    now: datetime | None = None,
) -> dict[str, Any]:
    """A meta.k8s.io/v1 Table of ``objects``. ``include_object``: Metadata (PartialObjectMetadata),
    Object (the whole object) or None (no ``object`` in rows)."""
    now = now or datetime.now(UTC)
    events_v1 = resource.plural == "events" and resource.group == "events.k8s.io"
    key = ("", "events") if resource.plural == "events" else (resource.group, resource.plural)
    columns, cells = _PRINTERS.get(key, _DEFAULT)
    rows: list[dict[str, Any]] = []
    for obj in objects:
        printable = to_core_event(obj) if events_v1 else obj
        row: dict[str, Any] = {"cells": cells(printable, now)}
        if key == ("", "pods"):
            conditions = _pod_conditions(obj)
            if conditions:
                row["conditions"] = conditions
        if include_object == "Object":
            row["object"] = obj
        elif include_object != "None":
            row["object"] = {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": _meta(obj),
            }
        rows.append(row)
    list_meta: dict[str, Any] = {}
    if resource_version:
        list_meta["resourceVersion"] = resource_version
    if continue_token:
        list_meta["continue"] = continue_token
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": [dict(c) for c in columns],
        "rows": rows,
    }
