"""Pods: defaulting as Kubernetes applies it, the create-time admission defaults, status, graceful delete.

Two layers of defaults, as in Kubernetes. `default_pod_spec` is scheme defaulting and also applies to
every pod template (restartPolicy, dnsPolicy, grace period, scheduler, container pull policy and
termination message, port protocols, probe timings, volume modes). `PodStrategy.prepare_for_create`
adds what Kubernetes' admission plugins add to pods only: the ``default`` service account, priority 0,
the 300 s not-ready/unreachable tolerations, and a fresh status (``Pending`` with its QoS class).

Pod updates may change only images, ``activeDeadlineSeconds`` (shorter), added tolerations and removed
scheduling gates; ``/status`` carries everything a node agent reports; a DELETE of a pod bound to a
node marks it (``deletionTimestamp`` + grace) and leaves the final delete (grace 0) to the node agent.
"""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

from podvisor.apiserver.strategies.base import (
    Context,
    Strategy,
    SubresourceHandler,
    field_value,
    nested,
    set_default,
)
from podvisor.apiserver.strategies.pod_validation import validate_pod_spec
from podvisor.apiserver.validation import FieldErrors, parse_quantity

__all__ = [
    "PodStrategy",
    "default_pod_spec",
    "default_container",
    "default_pod_template",
    "qos_class",
    "image_pull_policy",
    "NOT_READY_TOLERATION",
    "UNREACHABLE_TOLERATION",
]

NOT_READY_TOLERATION = {
    "key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300,
}
UNREACHABLE_TOLERATION = {
    "key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300,
}
_UPDATE_FORBIDDEN = (
    "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,"
    "`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),"
    "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)"
)


def image_pull_policy(image: str) -> str:
    """Always for ``:latest`` or an untagged image, IfNotPresent for a tag or digest (Kubernetes' rule)."""
    if not image or "@" in image:
        return "IfNotPresent"
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return "Always"
    return "Always" if last.rsplit(":", 1)[1] == "latest" else "IfNotPresent"


def _default_probe(probe: Any) -> None:
    if not isinstance(probe, dict):
        return
    set_default(probe, "timeoutSeconds", 1)
    set_default(probe, "periodSeconds", 10)
    set_default(probe, "successThreshold", 1)
    set_default(probe, "failureThreshold", 3)
    if isinstance(probe.get("httpGet"), dict):
        set_default(probe["httpGet"], "scheme", "HTTP")
    if isinstance(probe.get("grpc"), dict):
        set_default(probe["grpc"], "service", "")


def default_container(c: dict[str, Any]) -> None:
    set_default(c, "terminationMessagePath", "/dev/termination-log")
    set_default(c, "terminationMessagePolicy", "File")
    if not c.get("imagePullPolicy") and isinstance(c.get("image"), str):
        c["imagePullPolicy"] = image_pull_policy(c["image"])
    set_default(c, "resources", {})
    for p in c.get("ports") or []:
        if isinstance(p, dict):
            set_default(p, "protocol", "TCP")
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        _default_probe(c.get(probe))
    for handler in ("postStart", "preStop"):
        h = nested(c, "lifecycle", handler, "httpGet")
        if isinstance(h, dict):
            set_default(h, "scheme", "HTTP")
    for e in c.get("env") or []:
        ref = nested(e, "valueFrom", "fieldRef")
        if isinstance(ref, dict):
            set_default(ref, "apiVersion", "v1")


def _default_volume(v: dict[str, Any]) -> None:
    for kind in ("configMap", "secret", "downwardAPI", "projected"):
        if isinstance(v.get(kind), dict):
            set_default(v[kind], "defaultMode", 420)
    if "emptyDir" in v and v["emptyDir"] is None:
        v["emptyDir"] = {}
    if isinstance(v.get("hostPath"), dict):
        set_default(v["hostPath"], "type", "")
    if isinstance(v.get("iscsi"), dict):
        set_default(v["iscsi"], "iscsiInterface", "default")


def default_pod_spec(spec: dict[str, Any]) -> None:
    """Scheme defaults of a PodSpec (pods and templates)."""
    set_default(spec, "restartPolicy", "Always")
    set_default(spec, "dnsPolicy", "ClusterFirst")
    set_default(spec, "terminationGracePeriodSeconds", 30)
    set_default(spec, "securityContext", {})
    set_default(spec, "schedulerName", "default-scheduler")
    for key in ("containers", "initContainers", "ephemeralContainers"):
        for c in spec.get(key) or []:
            if isinstance(c, dict):
                default_container(c)
    for v in spec.get("volumes") or []:
        if isinstance(v, dict):
            _default_volume(v)


def default_pod_template(template: Any) -> None:
    if isinstance(template, dict) and isinstance(template.get("spec"), dict):
        default_pod_spec(template["spec"])


def _requests_from_limits(spec: dict[str, Any]) -> None:
    for key in ("containers", "initContainers"):
        for c in spec.get(key) or []:
            res = c.get("resources") if isinstance(c, dict) else None
            if not isinstance(res, dict) or not isinstance(res.get("limits"), dict):
                continue
            requests = res.setdefault("requests", {})
            for name, value in res["limits"].items():
                requests.setdefault(name, value)


def qos_class(spec: dict[str, Any]) -> str:
    """Guaranteed, Burstable or BestEffort from cpu/memory requests and limits, as Kubernetes decides."""
    requests: dict[str, Decimal] = {}
    limits: dict[str, Decimal] = {}
    guaranteed = True
    for key in ("containers", "initContainers"):
        for c in spec.get(key) or []:
            res = (c.get("resources") if isinstance(c, dict) else None) or {}
            creq, clim = res.get("requests") or {}, res.get("limits") or {}
            for name in ("cpu", "memory"):
                q = parse_quantity(creq.get(name))
                if q is not None and q != 0:
                    requests[name] = requests.get(name, Decimal(0)) + q
                lq = parse_quantity(clim.get(name))
                if lq is not None and lq != 0:
                    limits[name] = limits.get(name, Decimal(0)) + lq
                if lq is None or lq == 0 or (q is not None and q != lq):
                    guaranteed = False
    if not requests and not limits:
        return "BestEffort"
    if guaranteed and set(limits) == {"cpu", "memory"}:
        return "Guaranteed"
    return "Burstable"


def _is_tolerated(tolerations: list[Any], taint: dict[str, Any]) -> bool:
    for t in tolerations:
        if not isinstance(t, dict):
            continue
        if t.get("key") in (None, "") and t.get("operator") == "Exists" and t.get("effect") in (None, "", "NoExecute"):
            return True
        if t.get("key") == taint["key"] and t.get("effect") in (None, "", taint["effect"]):
            return True
    return False


class PodStrategy(Strategy):
    field_labels = (
        "spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName", "spec.hostNetwork",
        "status.phase", "status.podIP", "status.podIPs", "status.nominatedNodeName",
    )
    tracks_generation = False
    return_deleted_object = True

    def default(self, obj: dict[str, Any]) -> None:
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            return
        default_pod_spec(spec)
        set_default(spec, "enableServiceLinks", True)
        _requests_from_limits(spec)

    def prepare_for_create(self, obj: dict[str, Any], ctx: Context) -> None:
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            obj.pop("status", None)
            return
        # what Kubernetes' ServiceAccount, Priority and DefaultTolerationSeconds admission add
        if not spec.get("serviceAccountName"):
            spec["serviceAccountName"] = spec.get("serviceAccount") or "default"
        spec["serviceAccount"] = spec["serviceAccountName"]
        if not spec.get("priorityClassName"):
            set_default(spec, "priority", 0)
        set_default(spec, "preemptionPolicy", "PreemptLowerPriority")
        tolerations: list[Any] = spec["tolerations"] if isinstance(spec.get("tolerations"), list) else []
        for taint in (NOT_READY_TOLERATION, UNREACHABLE_TOLERATION):
            if not _is_tolerated(tolerations, taint):
                tolerations.append(dict(taint))
        spec["tolerations"] = tolerations
        obj["status"] = {"phase": "Pending", "qosClass": qos_class(spec)}

    def prepare_for_status_update(self, obj: dict[str, Any], old: dict[str, Any], ctx: Context) -> None:
        super().prepare_for_status_update(obj, old, ctx)
        status = obj.get("status")
        if isinstance(status, dict) and not status.get("qosClass") and isinstance(old.get("spec"), dict):
            status["qosClass"] = (old.get("status") or {}).get("qosClass") or qos_class(old["spec"])

    def validate(self, obj: dict[str, Any]) -> FieldErrors:
        errs = FieldErrors()
        validate_pod_spec(obj.get("spec"), "spec", errs)
        return errs

    def validate_update(self, obj: dict[str, Any], old: dict[str, Any]) -> FieldErrors:
        errs = self.validate(obj)
        new_spec, old_spec = obj.get("spec") or {}, old.get("spec") or {}
        if new_spec == old_spec:
            return errs
        # what may change: images, a shorter activeDeadlineSeconds, added tolerations, removed gates
        mutable = copy.deepcopy(new_spec)
        for key in ("containers", "initContainers"):
            for i, c in enumerate(mutable.get(key) or []):
                olds = old_spec.get(key) or []
                if i < len(olds) and isinstance(c, dict) and isinstance(olds[i], dict):
                    c["image"] = olds[i].get("image")
        old_ads, new_ads = old_spec.get("activeDeadlineSeconds"), new_spec.get("activeDeadlineSeconds")
        if old_ads is not None and new_ads is None:
            errs.invalid("spec.activeDeadlineSeconds", None, "must not update from a positive integer to nil value")
        elif old_ads is not None and isinstance(new_ads, int) and new_ads > old_ads:
            errs.invalid("spec.activeDeadlineSeconds", new_ads, "must be less than or equal to previous value")
        _copy_or_drop(mutable, old_spec, "activeDeadlineSeconds")
        old_tol = old_spec.get("tolerations") or []
        new_tol = new_spec.get("tolerations") or []
        if all(t in new_tol for t in old_tol):
            _copy_or_drop(mutable, old_spec, "tolerations")
        old_gates = old_spec.get("schedulingGates") or []
        if all(g in old_gates for g in new_spec.get("schedulingGates") or []):
            _copy_or_drop(mutable, old_spec, "schedulingGates")
        if mutable != old_spec:
            errs.forbidden("spec", _UPDATE_FORBIDDEN)
        return errs

    def extra_fields(self, obj: dict[str, Any]) -> dict[str, str]:
        spec, status = obj.get("spec") or {}, obj.get("status") or {}
        ips = ",".join(str(p.get("ip", "")) for p in status.get("podIPs") or [] if isinstance(p, dict))
        return {
            "spec.nodeName": field_value(spec.get("nodeName")),
            "spec.restartPolicy": field_value(spec.get("restartPolicy")),
            "spec.schedulerName": field_value(spec.get("schedulerName")),
            "spec.serviceAccountName": field_value(spec.get("serviceAccountName")),
            "spec.hostNetwork": field_value(bool(spec.get("hostNetwork"))),
            "status.phase": field_value(status.get("phase")),
            "status.podIP": field_value(status.get("podIP")),
            "status.podIPs": ips,
            "status.nominatedNodeName": field_value(status.get("nominatedNodeName")),
        }

    def grace_period(self, obj: dict[str, Any], requested: int | None) -> int | None:
        spec, status = obj.get("spec") or {}, obj.get("status") or {}
        period = int(requested if requested is not None else spec.get("terminationGracePeriodSeconds") or 0)
        if not spec.get("nodeName") or status.get("phase") in ("Failed", "Succeeded"):
            period = 0
        return 1 if period < 0 else period

    def subresource_handlers(self) -> dict[str, SubresourceHandler]:
        from podvisor.apiserver.strategies.pod_subresources import BindingHandler, EvictionHandler

        return {"binding": BindingHandler(), "eviction": EvictionHandler()}


def _copy_or_drop(target: dict[str, Any], source: dict[str, Any], key: str) -> None:
    if key in source:
        target[key] = copy.deepcopy(source[key])
    else:
        target.pop(key, None)
