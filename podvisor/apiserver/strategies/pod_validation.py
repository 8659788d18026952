"""PodSpec validation, shared by pods and by every pod template (Deployments, ReplicaSets, Jobs).

The checks are the ones users meet in practice (containers, names, images, ports, env, volumes and
mounts, resources, policies, tolerations, probes), each with apimachinery's wording so kubectl prints
what a Kubernetes cluster would. ``template=True`` relaxes what only a running pod needs.
"""

from __future__ import annotations

import re
from typing import Any

from podvisor.apiserver.validation import (
    FieldErrors,
    dns1123_label_errors,
    dns1123_subdomain_errors,
    qualified_name_errors,
    validate_labels,
    validate_quantity,
)

__all__ = ["validate_pod_spec", "VOLUME_SOURCES", "RESTART_POLICIES"]

RESTART_POLICIES = ("Always", "OnFailure", "Never")
DNS_POLICIES = ("ClusterFirstWithHostNet", "ClusterFirst", "Default", "None")
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
PROTOCOLS = ("SCTP", "TCP", "UDP")
TERMINATION_POLICIES = ("File", "FallbackToLogsOnError")
VOLUME_SOURCES = (
    "hostPath", "emptyDir", "gcePersistentDisk", "awsElasticBlockStore", "gitRepo", "secret", "nfs", "iscsi",
    "glusterfs", "persistentVolumeClaim", "rbd", "flexVolume", "cinder", "cephfs", "flocker", "downwardAPI", "fc",
    "azureFile", "configMap", "vsphereVolume", "quobyte", "azureDisk", "photonPersistentDisk", "projected",
    "portworxVolume", "scaleIO", "storageos", "csi", "ephemeral", "image",
)
_ENV_NAME = "[-._a-zA-Z][-._a-zA-Z0-9]*"
_ENV_NAME_RE = re.compile(f"^{_ENV_NAME}$")
_ENV_MSG = (
    "a valid environment variable name must consist of alphabetic characters, digits, '_', '-', or '.', and must "
    "not start with a digit (e.g. 'my.env-name',  or 'MY_ENV.NAME',  or 'MyEnvName1', regex used for validation "
    f"is '{_ENV_NAME}')"
)
_PORT_NAME_RE = re.compile("^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_TOLERATION_OPS = ("Equal", "Exists")
_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


def _port_name_errors(name: str) -> list[str]:
    errs: list[str] = []
    if len(name) > 15:
        errs.append("must be no more than 15 characters")
    if not re.match("^[-a-z0-9]+$", name):
        errs.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    if "--" in name:
        errs.append("must not contain consecutive hyphens")
    if not re.search("[a-z]", name):
        errs.append("must contain at least one letter (a-z)")
    if name and not _PORT_NAME_RE.match(name) and "must contain only" not in " ".join(errs):
        errs.append("must not begin or end with a hyphen")
    return errs


def _int_in(value: Any, low: int, high: int | None = None) -> bool:
    if isinstance(value, bool) or not isinstance(value, int):
        return False
    return value >= low and (high is None or value <= high)


def _enum(errs: FieldErrors, path: str, value: Any, allowed: tuple[str, ...], *, required: bool = False) -> None:
    if value is None or value == "":
        if required:
            errs.not_supported(path, "", allowed)
        return
    if value not in allowed:
        errs.not_supported(path, value, allowed)


def _validate_ports(ports: Any, path: str, errs: FieldErrors, names: set[str]) -> None:
    if not isinstance(ports, list):
        return
    for i, p in enumerate(ports):
        pp = f"{path}[{i}]"
        if not isinstance(p, dict):
            errs.invalid(pp, p, "must be an object")
            continue
        name = p.get("name")
        if name:
            errs.extend_invalid(f"{pp}.name", name, _port_name_errors(str(name)))
            if name in names:
                errs.duplicate(f"{pp}.name", name)
            names.add(name)
        cp = p.get("containerPort")
        if cp is None:
            errs.required(f"{pp}.containerPort")
        elif not _int_in(cp, 1, 65535):
            errs.invalid(f"{pp}.containerPort", cp, "must be between 1 and 65535, inclusive")
        hp = p.get("hostPort")
        if hp not in (None, 0) and not _int_in(hp, 1, 65535):
            errs.invalid(f"{pp}.hostPort", hp, "must be between 1 and 65535, inclusive")
        _enum(errs, f"{pp}.protocol", p.get("protocol"), PROTOCOLS, required=True)


def _validate_env(env: Any, path: str, errs: FieldErrors) -> None:
    if not isinstance(env, list):
        return
    for i, e in enumerate(env):
        ep = f"{path}[{i}]"
        if not isinstance(e, dict):
            errs.invalid(ep, e, "must be an object")
            continue
        name = e.get("name")
        if not name:
            errs.required(f"{ep}.name")
        elif not _ENV_NAME_RE.match(str(name)):
            errs.invalid(f"{ep}.name", name, _ENV_MSG)
        vf = e.get("valueFrom")
        if vf is not None:
            if e.get("value"):
                errs.invalid(f"{ep}.valueFrom", "", "may not be specified when `value` is not empty")
            sources = [k for k in ("fieldRef", "resourceFieldRef", "configMapKeyRef", "secretKeyRef") if vf.get(k)]
            if len(sources) != 1:
                errs.invalid(f"{ep}.valueFrom", "", "must specify one of: `fieldRef`, `resourceFieldRef`, "
                             "`configMapKeyRef` or `secretKeyRef`")


def _validate_resources(res: Any, path: str, errs: FieldErrors) -> None:
    if not isinstance(res, dict):
        return
    parsed: dict[str, dict[str, Any]] = {}
    for kind in ("limits", "requests"):
        values = res.get(kind) or {}
        if not isinstance(values, dict):
            errs.invalid(f"{path}.{kind}", values, "must be a map of resource names to quantities")
            continue
        parsed[kind] = {}
        for rname, q in values.items():
            errs.extend_invalid(f"{path}.{kind}[{rname}]", rname, qualified_name_errors(str(rname)))
            parsed[kind][rname] = validate_quantity(q, f"{path}.{kind}[{rname}]", errs)
    limits, requests = parsed.get("limits", {}), parsed.get("requests", {})
    for rname, req in requests.items():
        lim = limits.get(rname)
        if req is not None and lim is not None and req > lim:
            errs.invalid(
                f"{path}.requests", (res.get("requests") or {}).get(rname),
                f"must be less than or equal to {rname} limit of {(res.get('limits') or {}).get(rname)}",
            )


def _validate_probe(probe: Any, path: str, errs: FieldErrors) -> None:
    if not isinstance(probe, dict):
        return
    handlers = [k for k in ("exec", "httpGet", "tcpSocket", "grpc") if probe.get(k) is not None]
    if len(handlers) != 1:
        if not handlers:
            errs.required(path, "must specify a handler type")
        else:
            errs.forbidden(f"{path}.{handlers[1]}", "may not specify more than 1 handler type")
    for f in ("initialDelaySeconds", "timeoutSeconds", "periodSeconds", "successThreshold", "failureThreshold"):
        v = probe.get(f)
        if v is not None and not _int_in(v, 0):
            errs.invalid(f"{path}.{f}", v, "must be greater than or equal to 0")
    port = (probe.get("httpGet") or probe.get("tcpSocket") or {}).get("port")
    if isinstance(port, int) and not _int_in(port, 1, 65535):
        kind = "httpGet" if probe.get("httpGet") else "tcpSocket"
        errs.invalid(f"{path}.{kind}.port", port, "must be between 1 and 65535, inclusive")


def _validate_container(
    c: Any, path: str, errs: FieldErrors, names: set[str], volumes: set[str], *, init: bool
) -> None:
    if not isinstance(c, dict):
        errs.invalid(path, c, "must be an object")
        return
    name = c.get("name")
    if not name:
        errs.required(f"{path}.name")
    else:
        errs.extend_invalid(f"{path}.name", name, dns1123_label_errors(str(name)))
        if name in names:
            errs.duplicate(f"{path}.name", name)
        names.add(name)
    if not c.get("image"):
        errs.required(f"{path}.image")
    _enum(errs, f"{path}.imagePullPolicy", c.get("imagePullPolicy"), PULL_POLICIES, required=True)
    _enum(errs, f"{path}.terminationMessagePolicy", c.get("terminationMessagePolicy"), TERMINATION_POLICIES,
          required=True)
    _validate_ports(c.get("ports"), f"{path}.ports", errs, set())
    _validate_env(c.get("env"), f"{path}.env", errs)
    _validate_resources(c.get("resources"), f"{path}.resources", errs)
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        if c.get(probe) is not None:
            if init and c.get("restartPolicy") != "Always":
                errs.forbidden(f"{path}.{probe}", "may not be set for init containers without restartPolicy=Always")
            else:
                _validate_probe(c.get(probe), f"{path}.{probe}", errs)
    mounts = c.get("volumeMounts") or []
    seen_paths: set[str] = set()
    for i, vm in enumerate(mounts if isinstance(mounts, list) else []):
        mp = f"{path}.volumeMounts[{i}]"
        vname = vm.get("name") if isinstance(vm, dict) else None
        if not vname:
            errs.required(f"{mp}.name")
        elif vname not in volumes:
            errs.not_found(f"{mp}.name", vname)
        mount_path = vm.get("mountPath") if isinstance(vm, dict) else None
        if not mount_path:
            errs.required(f"{mp}.mountPath")
        elif mount_path in seen_paths:
            errs.invalid(f"{mp}.mountPath", mount_path, "must be unique")
        else:
            seen_paths.add(mount_path)


def _validate_volumes(volumes: Any, path: str, errs: FieldErrors) -> set[str]:
    names: set[str] = set()
    if not isinstance(volumes, list):
        return names
    for i, v in enumerate(volumes):
        vp = f"{path}[{i}]"
        if not isinstance(v, dict):
            errs.invalid(vp, v, "must be an object")
            continue
        name = v.get("name")
        if not name:
            errs.required(f"{vp}.name")
        else:
            errs.extend_invalid(f"{vp}.name", name, dns1123_label_errors(str(name)))
            if name in names:
                errs.duplicate(f"{vp}.name", name)
            names.add(name)
        sources = [k for k in VOLUME_SOURCES if v.get(k) is not None]
        if not sources:
            errs.required(vp, "must specify a volume type")
        elif len(sources) > 1:
            errs.forbidden(f"{vp}.{sources[1]}", "may not specify more than 1 volume type")
        cm = v.get("configMap")
        if isinstance(cm, dict) and not cm.get("name"):
            errs.required(f"{vp}.configMap.name")
        sec = v.get("secret")
        if isinstance(sec, dict) and not sec.get("secretName"):
            errs.required(f"{vp}.secret.secretName")
        pvc = v.get("persistentVolumeClaim")
        if isinstance(pvc, dict) and not pvc.get("claimName"):
            errs.required(f"{vp}.persistentVolumeClaim.claimName")
    return names


def _validate_tolerations(tolerations: Any, path: str, errs: FieldErrors) -> None:
    if not isinstance(tolerations, list):
        return
    for i, t in enumerate(tolerations):
        tp = f"{path}[{i}]"
        if not isinstance(t, dict):
            errs.invalid(tp, t, "must be an object")
            continue
        key = t.get("key") or ""
        if key:
            errs.extend_invalid(f"{tp}.key", key, qualified_name_errors(key))
        op = t.get("operator") or "Equal"
        if op not in _TOLERATION_OPS:
            errs.not_supported(f"{tp}.operator", op, _TOLERATION_OPS)
        if not key and op != "Exists":
            errs.invalid(f"{tp}.operator", op, "operator must be Exists when `key` is empty, which means \"match all "
                         "values and all keys\"")
        if op == "Exists" and t.get("value"):
            errs.invalid(f"{tp}.operator", t.get("value"), "value must be empty when `operator` is 'Exists'")
        effect = t.get("effect")
        if effect:
            _enum(errs, f"{tp}.effect", effect, _EFFECTS)
        if t.get("tolerationSeconds") is not None and effect != "NoExecute":
            errs.invalid(f"{tp}.effect", effect or "", "effect must be 'NoExecute' when `tolerationSeconds` is set")


def validate_pod_spec(spec: Any, path: str, errs: FieldErrors) -> None:
    """Every rule of a PodSpec we check, for pods and templates alike."""
    if not isinstance(spec, dict):
        errs.required(path)
        return
    volumes = _validate_volumes(spec.get("volumes"), f"{path}.volumes", errs)
    containers = spec.get("containers")
    names: set[str] = set()
    if not isinstance(containers, list) or not containers:
        errs.required(f"{path}.containers")
    else:
        for i, c in enumerate(containers):
            _validate_container(c, f"{path}.containers[{i}]", errs, names, volumes, init=False)
    for i, c in enumerate(spec.get("initContainers") or []):
        _validate_container(c, f"{path}.initContainers[{i}]", errs, names, volumes, init=True)
    _enum(errs, f"{path}.restartPolicy", spec.get("restartPolicy"), RESTART_POLICIES, required=True)
    _enum(errs, f"{path}.dnsPolicy", spec.get("dnsPolicy"), DNS_POLICIES, required=True)
    tgp = spec.get("terminationGracePeriodSeconds")
    if tgp is not None and not _int_in(tgp, 0):
        errs.invalid(f"{path}.terminationGracePeriodSeconds", tgp, "must be greater than or equal to 0")
    ads = spec.get("activeDeadlineSeconds")
    if ads is not None and not _int_in(ads, 1):
        errs.invalid(f"{path}.activeDeadlineSeconds", ads, "must be between 1 and 2147483647, inclusive")
    validate_labels(spec.get("nodeSelector"), f"{path}.nodeSelector", errs)
    for f in ("hostname", "subdomain"):
        if spec.get(f):
            errs.extend_invalid(f"{path}.{f}", spec[f], dns1123_label_errors(str(spec[f])))
    if spec.get("nodeName"):
        errs.extend_invalid(f"{path}.nodeName", spec["nodeName"], dns1123_subdomain_errors(str(spec["nodeName"])))
    if spec.get("serviceAccountName"):
        errs.extend_invalid(
            f"{path}.serviceAccountName", spec["serviceAccountName"],
            dns1123_subdomain_errors(str(spec["serviceAccountName"])),
        )
    _validate_tolerations(spec.get("tolerations"), f"{path}.tolerations", errs)
    if spec.get("dnsPolicy") == "None" and not spec.get("dnsConfig"):
        errs.required(f"{path}.dnsConfig", "must provide `dnsConfig` when `dnsPolicy` is None")
