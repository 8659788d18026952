"""Namespaces, ConfigMaps, Secrets, ServiceAccounts, Endpoints and Nodes.

Namespaces follow Kubernetes' lifecycle: created ``Active`` with the ``kubernetes`` finalizer and the
``kubernetes.io/metadata.name`` label; the first DELETE only marks them ``Terminating``; the namespace
controller empties them and removes the finalizer through ``/finalize``, which removes the namespace.
``default``, ``kube-system`` and ``kube-public`` may not be deleted.

ServiceAccounts serve the ``token`` subresource when the API server can sign tokens.

ConfigMaps and Secrets check their keys, their 1 MiB size and ``immutable: true``; Secrets merge
``stringData`` into ``data`` and check the fields their ``type`` requires.
"""

from __future__ import annotations

import base64
import binascii
import copy
import ipaddress
import json
from typing import Any

from podvisor.apiserver import errors as api
from podvisor.apiserver.meta import format_time, meta
from podvisor.apiserver.strategies.base import Context, Strategy, SubresourceHandler, field_value, set_default
from podvisor.apiserver.validation import FieldErrors, config_key_errors, port_errors, qualified_name_errors
from podvisor.schema.model import Resource

__all__ = [
    "NamespaceStrategy",
    "ConfigMapStrategy",
    "SecretStrategy",
    "ServiceAccountStrategy",
    "EndpointsStrategy",
    "NodeStrategy",
    "IMMORTAL_NAMESPACES",
    "validate_ip",
]

IMMORTAL_NAMESPACES = frozenset({"default", "kube-system", "kube-public"})
NAME_LABEL = "kubernetes.io/metadata.name"
_MAX_DATA = 1024 * 1024


def validate_ip(value: Any, path: str, errs: FieldErrors) -> None:
    try:
        ipaddress.ip_address(str(value))
    except ValueError:
        errs.invalid(path, value, "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)")


class NamespaceStrategy(Strategy):
    name_validator = "label"
    tracks_generation = False
    return_deleted_object = True
    field_labels = ("status.phase",)

    def default(self, obj: dict[str, Any]) -> None:
        name = meta(obj).get("name")
        if name:
            meta(obj).setdefault("labels", {})[NAME_LABEL] = name
        status = obj.get("status")
        if isinstance(status, dict):
            set_default(status, "phase", "Active")

    def prepare_for_create(self, obj: dict[str, Any], ctx: Context) -> None:
        obj["status"] = {"phase": "Active"}
        spec = obj.setdefault("spec", {})
        finalizers = spec.get("finalizers") or []
        if "kubernetes" not in finalizers:
            finalizers.append("kubernetes")
        spec["finalizers"] = finalizers
        meta(obj).setdefault("labels", {})[NAME_LABEL] = meta(obj)["name"]

    def prepare_for_update(self, obj: dict[str, Any], old: dict[str, Any], ctx: Context) -> None:
        super().prepare_for_update(obj, old, ctx)
        obj.setdefault("spec", {})["finalizers"] = copy.deepcopy((old.get("spec") or {}).get("finalizers") or [])

    def validate(self, obj: dict[str, Any]) -> FieldErrors:
        errs = FieldErrors()
        for i, f in enumerate((obj.get("spec") or {}).get("finalizers") or []):
            errs.extend_invalid(f"spec.finalizers[{i}]", f, qualified_name_errors(str(f)))
        return errs

    def extra_fields(self, obj: dict[str, Any]) -> dict[str, str]:
        return {"status.phase": field_value((obj.get("status") or {}).get("phase"))}

    def on_delete(self, obj: dict[str, Any], ctx: Context) -> bool:
        m = meta(obj)
        name = m.get("name", "")
        if name in IMMORTAL_NAMESPACES:
            raise api.ForbiddenError(
                f'namespaces "{name}" is forbidden: this namespace may not be deleted',
                name=name, kind="namespaces",
            )
        if not m.get("deletionTimestamp"):
            m["deletionTimestamp"] = format_time(ctx.now)
            obj.setdefault("status", {})["phase"] = "Terminating"
            return True
        # the namespace controller has not finished yet
        return bool((obj.get("spec") or {}).get("finalizers"))

    def should_delete_during_update(self, obj: dict[str, Any], old: dict[str, Any]) -> bool:
        return not (obj.get("spec") or {}).get("finalizers")


def _data_errors(obj: dict[str, Any], errs: FieldErrors, *, binary_key: str) -> None:
    data = obj.get("data") or {}
    binary = (obj.get(binary_key) or {}) if binary_key else {}
    size = 0
    for field, values in (("data", data), (binary_key, binary)):
        if not field or not isinstance(values, dict):
            if field and values is not None:
                errs.invalid(field, values, "must be a map of keys to values")
            continue
        for key, value in values.items():
            errs.extend_invalid(f"{field}[{key}]", key, config_key_errors(str(key)))
            if field == "data" and binary_key == "binaryData" and key in binary:
                errs.invalid(f"data[{key}]", key, "duplicate of key present in binaryData")
            size += len(str(key)) + len(str(value or ""))
    if size > _MAX_DATA:
        errs.append(api.Cause("FieldValueTooLong", f"Too long: must have at most {_MAX_DATA} bytes", ""))


def _immutable_errors(obj: dict[str, Any], old: dict[str, Any], fields: tuple[str, ...], errs: FieldErrors) -> None:
    if old.get("immutable") is not True:
        return
    if obj.get("immutable") is not True:
        errs.forbidden("immutable", "field is immutable when `immutable` is set")
    for f in fields:
        if (obj.get(f) or {}) != (old.get(f) or {}):
            errs.forbidden(f, "field is immutable when `immutable` is set")


class ConfigMapStrategy(Strategy):
    tracks_generation = False

    def validate(self, obj: dict[str, Any]) -> FieldErrors:
        errs = FieldErrors()
        _data_errors(obj, errs, binary_key="binaryData")
        return errs

    def validate_update(self, obj: dict[str, Any], old: dict[str, Any]) -> FieldErrors:
        errs = self.validate(obj)
        _immutable_errors(obj, old, ("data", "binaryData"), errs)
        return errs


_SECRET_REQUIRED = {
    "kubernetes.io/dockercfg": (".dockercfg",),
    "kubernetes.io/dockerconfigjson": (".dockerconfigjson",),
    "kubernetes.io/ssh-auth": ("ssh-privatekey",),
    "kubernetes.io/tls": ("tls.crt", "tls.key"),
}


class SecretStrategy(Strategy):
    tracks_generation = False
    field_labels = ("type",)

    def default(self, obj: dict[str, Any]) -> None:
        if not obj.get("type"):
            obj["type"] = "Opaque"
        string_data = obj.pop("stringData", None)
        data = obj.get("data")
        if data is not None and not isinstance(data, dict):
            raise api.BadRequestError('Secret in version "v1" cannot be handled as a Secret: data must be an object')
        for key, value in (data or {}).items():
            try:
                base64.b64decode(str(value or ""), validate=True)
            except (binascii.Error, ValueError) as exc:
                raise api.BadRequestError(
                    f'Secret in version "v1" cannot be handled as a Secret: illegal base64 data for key "{key}": {exc}'
                ) from None
        if isinstance(string_data, dict) and string_data:
            if not isinstance(obj.get("data"), dict):
                obj["data"] = {}
            data = obj["data"]
            for key, value in string_data.items():
                data[str(key)] = base64.b64encode(str(value).encode()).decode()

    def _decoded(self, obj: dict[str, Any], key: str) -> bytes:
        try:
            return base64.b64decode(str((obj.get("data") or {}).get(key) or ""))
        except (binascii.Error, ValueError):
            return b""

    def validate(self, obj: dict[str, Any]) -> FieldErrors:
        errs = FieldErrors()
        _data_errors(obj, errs, binary_key="")
        typ = obj.get("type") or "Opaque"
        data = obj.get("data") or {}
        for key in _SECRET_REQUIRED.get(typ, ()):
            if not data.get(key):
                errs.required(f"data[{key}]")
        if typ == "kubernetes.io/dockerconfigjson" and data.get(".dockerconfigjson"):
            try:
                json.loads(self._decoded(obj, ".dockerconfigjson") or b"")
            except ValueError as exc:
                errs.invalid("data[.dockerconfigjson]", "<secret contents redacted>", str(exc))
        if typ == "kubernetes.io/basic-auth" and not data.get("username") and not data.get("password"):
            errs.required("data[username]")
            errs.required("data[password]")
        if typ == "kubernetes.io/service-account-token":
            if not (meta(obj).get("annotations") or {}).get("kubernetes.io/service-account.name"):
                errs.required("metadata.annotations[kubernetes.io/service-account.name]")
        return errs

    def validate_update(self, obj: dict[str, Any], old: dict[str, Any]) -> FieldErrors:
        errs = self.validate(obj)
        if (obj.get("type") or "Opaque") != (old.get("type") or "Opaque"):
            errs.immutable("type", obj.get("type"))
        _immutable_errors(obj, old, ("data",), errs)
        return errs

    def extra_fields(self, obj: dict[str, Any]) -> dict[str, str]:
        return {"type": field_value(obj.get("type"))}


class ServiceAccountStrategy(Strategy):
    """ServiceAccounts are plain objects; with a ``tokens`` handler (the API server has a signing key)
    they also serve ``serviceaccounts/<name>/token`` (`podvisor.apiserver.strategies.token_request`)."""

    tracks_generation = False

    def __init__(self, resource: Resource, *, tokens: SubresourceHandler | None = None) -> None:
        super().__init__(resource)
        self._tokens = tokens

    def subresource_handlers(self) -> dict[str, SubresourceHandler]:
        return {"token": self._tokens} if self._tokens is not None else {}


class EndpointsStrategy(Strategy):
    tracks_generation = False
    allow_create_on_update = True
    gc_policy = "Unsupported"

    def default(self, obj: dict[str, Any]) -> None:
        for subset in obj.get("subsets") or []:
            for p in (subset or {}).get("ports") or []:
                if isinstance(p, dict):
                    set_default(p, "protocol", "TCP")

    def validate(self, obj: dict[str, Any]) -> FieldErrors:
        errs = FieldErrors()
        for i, subset in enumerate(obj.get("subsets") or []):
            sp = f"subsets[{i}]"
            for kind in ("addresses", "notReadyAddresses"):
                for j, a in enumerate((subset or {}).get(kind) or []):
                    validate_ip((a or {}).get("ip"), f"{sp}.{kind}[{j}].ip", errs)
            for j, p in enumerate((subset or {}).get("ports") or []):
                errs.extend_invalid(f"{sp}.ports[{j}].port", (p or {}).get("port"), port_errors((p or {}).get("port")))
        return errs


class NodeStrategy(Strategy):
    tracks_generation = False
    return_deleted_object = False
    field_labels = ("spec.unschedulable",)

    def prepare_for_create(self, obj: dict[str, Any], ctx: Context) -> None:
        """A node agent registers its node with its status: it is kept (as Kubernetes keeps it)."""

    def default(self, obj: dict[str, Any]) -> None:
        status = obj.get("status")
        if isinstance(status, dict) and status.get("capacity") and status.get("allocatable") is None:
            status["allocatable"] = copy.deepcopy(status["capacity"])

    def validate(self, obj: dict[str, Any]) -> FieldErrors:
        errs = FieldErrors()
        spec = obj.get("spec") or {}
        for i, t in enumerate(spec.get("taints") or []):
            tp = f"spec.taints[{i}]"
            if not (t or {}).get("key"):
                errs.required(f"{tp}.key")
            else:
                errs.extend_invalid(f"{tp}.key", t["key"], qualified_name_errors(str(t["key"])))
            effect = (t or {}).get("effect")
            if effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
                errs.not_supported(f"{tp}.effect", effect or "", ("NoSchedule", "PreferNoSchedule", "NoExecute"))
        for f in ("podCIDR",):
            if spec.get(f):
                try:
                    ipaddress.ip_network(str(spec[f]), strict=False)
                except ValueError:
                    errs.invalid(f"spec.{f}", spec[f], "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)")
        return errs

    def validate_update(self, obj: dict[str, Any], old: dict[str, Any]) -> FieldErrors:
        errs = self.validate(obj)
        old_cidr = (old.get("spec") or {}).get("podCIDR")
        if old_cidr and (obj.get("spec") or {}).get("podCIDR") != old_cidr:
            errs.forbidden("spec.podCIDR", "node updates may not change podCIDR except from \"\" to valid")
        return errs

    def extra_fields(self, obj: dict[str, Any]) -> dict[str, str]:
        return {"spec.unschedulable": field_value(bool((obj.get("spec") or {}).get("unschedulable")))}
