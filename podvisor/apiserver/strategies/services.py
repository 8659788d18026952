"""Services: type defaults, port rules, and cluster IP / node port allocation.

Defaults are Kubernetes' (type ClusterIP, TCP ports, ``targetPort`` = ``port``, session affinity None,
traffic policies Cluster, single-stack IPv4). A cluster IP comes from the service CIDR and node ports from
30000-32767 through `RangeAllocator` (allocated before the write, released if the write fails, when the
Service no longer needs them, and when it is deleted). Updates keep the allocated values a client did not
resend (``kubectl apply`` and ``replace`` omit them) and refuse changing a cluster IP once set.
"""

from __future__ import annotations

import copy
import ipaddress
import re
from typing import Any

from podvisor.apiserver import errors as api
from podvisor.apiserver.meta import meta
from podvisor.apiserver.strategies.allocator import (
    AlreadyAllocatedError,
    OutOfRangeError,
    RangeAllocator,
    RangeFullError,
)
from podvisor.apiserver.strategies.base import Context, Finish, Strategy, field_value, set_default
from podvisor.apiserver.validation import (
    FieldErrors,
    dns1123_label_errors,
    dns1123_subdomain_errors,
    format_value,
    invalid_error,
    validate_labels,
)
from podvisor.schema.model import Resource

__all__ = ["ServiceStrategy", "SERVICE_TYPES"]

SERVICE_TYPES = ("ClusterIP", "ExternalName", "LoadBalancer", "NodePort")
_PROTOCOLS = ("SCTP", "TCP", "UDP")
_IANA = re.compile("^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")


def _needs_ip(spec: dict[str, Any]) -> bool:
    return spec.get("type") != "ExternalName" and spec.get("clusterIP") != "None"


def _needs_node_ports(spec: dict[str, Any]) -> bool:
    return spec.get("type") in ("NodePort", "LoadBalancer")


def _port_key(p: dict[str, Any]) -> tuple[Any, str]:
    return p.get("port"), p.get("protocol") or "TCP"


class ServiceStrategy(Strategy):
    name_validator = "dns1035"
    tracks_generation = False
    return_deleted_object = True
    field_labels = ("spec.clusterIP", "spec.type")

    def __init__(self, resource: Resource, *, ips: RangeAllocator, ports: RangeAllocator) -> None:
        super().__init__(resource)
        self.ips = ips
        self.ports = ports

    # -- defaults --------------------------------------------------------------------------------

    def default(self, obj: dict[str, Any]) -> None:
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            return
        set_default(spec, "type", "ClusterIP")
        set_default(spec, "sessionAffinity", "None")
        for p in spec.get("ports") or []:
            if isinstance(p, dict):
                set_default(p, "protocol", "TCP")
                if p.get("targetPort") in (None, "", 0):
                    p["targetPort"] = p.get("port")
        if spec["type"] != "ExternalName":
            set_default(spec, "internalTrafficPolicy", "Cluster")
        if spec["type"] in ("NodePort", "LoadBalancer"):
            set_default(spec, "externalTrafficPolicy", "Cluster")
        if spec["type"] == "LoadBalancer":
            set_default(spec, "allocateLoadBalancerNodePorts", True)
        if spec.get("sessionAffinity") == "ClientIP":
            cfg = set_default(spec, "sessionAffinityConfig", {})
            set_default(set_default(cfg, "clientIP", {}), "timeoutSeconds", 10800)

    def prepare_for_create(self, obj: dict[str, Any], ctx: Context) -> None:
        obj["status"] = {"loadBalancer": {}}

    def prepare_for_update(self, obj: dict[str, Any], old: dict[str, Any], ctx: Context) -> None:
        super().prepare_for_update(obj, old, ctx)
        spec, old_spec = obj.get("spec"), old.get("spec") or {}
        if not isinstance(spec, dict):
            return
        # keep what was allocated when the client did not send it back
        if _needs_ip(spec) and _needs_ip(old_spec) and not spec.get("clusterIP"):
            for f in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"):
                if f in old_spec and not spec.get(f):
                    spec[f] = copy.deepcopy(old_spec[f])
        if _needs_node_ports(spec) and _needs_node_ports(old_spec):
            old_ports = {_port_key(p): p.get("nodePort") for p in old_spec.get("ports") or [] if isinstance(p, dict)}
            for p in spec.get("ports") or []:
                if isinstance(p, dict) and not p.get("nodePort") and old_ports.get(_port_key(p)):
                    p["nodePort"] = old_ports[_port_key(p)]
        if spec.get("type") == "ExternalName" and _needs_ip(old_spec):
            for f in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy", "internalTrafficPolicy"):
                spec.pop(f, None)
        if not _needs_node_ports(spec):
            for p in spec.get("ports") or []:
                if isinstance(p, dict) and p.get("nodePort") and _needs_node_ports(old_spec):
                    p.pop("nodePort", None)

    # -- validation ------------------------------------------------------------------------------

    def validate(self, obj: dict[str, Any]) -> FieldErrors:
        errs = FieldErrors()
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            errs.required("spec")
            return errs
        typ = spec.get("type")
        if typ not in SERVICE_TYPES:
            errs.not_supported("spec.type", typ, SERVICE_TYPES)
        if typ == "ExternalName":
            ext = spec.get("externalName")
            if not ext:
                errs.required("spec.externalName")
            else:
                errs.extend_invalid("spec.externalName", ext, dns1123_subdomain_errors(str(ext).rstrip(".")))
        ports = spec.get("ports") or []
        if not ports and typ != "ExternalName" and spec.get("clusterIP") != "None":
            errs.required("spec.ports")
        names: set[str] = set()
        seen: set[tuple[Any, str]] = set()
        for i, p in enumerate(ports):
            pp = f"spec.ports[{i}]"
            if not isinstance(p, dict):
                errs.invalid(pp, p, "must be an object")
                continue
            name = p.get("name")
            if len(ports) > 1 and not name:
                errs.required(f"{pp}.name")
            if name:
                errs.extend_invalid(f"{pp}.name", name, dns1123_label_errors(str(name)))
                if name in names:
                    errs.duplicate(f"{pp}.name", name)
                names.add(name)
            port = p.get("port")
            if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
                errs.invalid(f"{pp}.port", port, "must be between 1 and 65535, inclusive")
            proto = p.get("protocol")
            if proto not in _PROTOCOLS:
                errs.not_supported(f"{pp}.protocol", proto, _PROTOCOLS)
            if _port_key(p) in seen:
                errs.duplicate(pp, {"port": port, "protocol": proto})
            seen.add(_port_key(p))
            target = p.get("targetPort")
            if isinstance(target, int) and not isinstance(target, bool):
                if not 1 <= target <= 65535:
                    errs.invalid(f"{pp}.targetPort", target, "must be between 1 and 65535, inclusive")
            elif isinstance(target, str) and not (len(target) <= 15 and _IANA.match(target)):
                errs.invalid(f"{pp}.targetPort", target, "must contain only alpha-numeric characters (a-z, 0-9), "
                             "and hyphens (-)")
            node_port = p.get("nodePort")
            if node_port and typ in ("ClusterIP", "ExternalName"):
                errs.forbidden(f"{pp}.nodePort", f"may not be used when `type` is '{typ}'")
        cip = spec.get("clusterIP")
        if cip and cip != "None":
            try:
                ipaddress.ip_address(str(cip))
            except ValueError:
                errs.invalid("spec.clusterIPs[0]", cip, "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)")
        validate_labels(spec.get("selector"), "spec.selector", errs)
        aff = spec.get("sessionAffinity")
        if aff not in ("ClientIP", "None"):
            errs.not_supported("spec.sessionAffinity", aff, ("ClientIP", "None"))
        return errs

    def validate_update(self, obj: dict[str, Any], old: dict[str, Any]) -> FieldErrors:
        errs = self.validate(obj)
        spec, old_spec = obj.get("spec") or {}, old.get("spec") or {}
        if _needs_ip(spec) and _needs_ip(old_spec) and old_spec.get("clusterIP"):
            if spec.get("clusterIP") != old_spec.get("clusterIP"):
                errs.invalid("spec.clusterIPs[0]", [spec.get("clusterIP")], "may not change once set")
        return errs

    def extra_fields(self, obj: dict[str, Any]) -> dict[str, str]:
        spec = obj.get("spec") or {}
        return {"spec.clusterIP": field_value(spec.get("clusterIP")), "spec.type": field_value(spec.get("type"))}

    # -- allocation ------------------------------------------------------------------------------

    def _owner(self, obj: dict[str, Any]) -> str:
        m = meta(obj)
        return f"{m.get('namespace', '')}/{m.get('name', '')}"

    async def _allocate(
        self, obj: dict[str, Any], old: dict[str, Any] | None, ctx: Context
    ) -> tuple[list[str], list[str]]:
        """Allocate what ``obj`` needs and ``old`` did not have; returns (ips, ports) newly taken."""
        spec = obj.get("spec") or {}
        old_spec = (old or {}).get("spec") or {}
        owner = self._owner(obj)
        name = meta(obj).get("name", "")
        ips: list[str] = []
        ports: list[str] = []
        try:
            if _needs_ip(spec) and not (old and _needs_ip(old_spec) and old_spec.get("clusterIP")):
                wanted = spec.get("clusterIP")
                if wanted:
                    try:
                        await self.ips.allocate_value(str(wanted), owner, dry_run=ctx.dry_run)
                    except OutOfRangeError:
                        raise self._ip_error(name, wanted, f"the provided IP ({wanted}) is not in the valid range. "
                                             f"The range of valid IPs is {self.ips.description.split()[-1]}") from None
                    except AlreadyAllocatedError:
                        raise self._ip_error(name, wanted, "provided IP is already allocated") from None
                    ip = str(wanted)
                else:
                    try:
                        ip = await self.ips.allocate(owner, dry_run=ctx.dry_run)
                    except RangeFullError:
                        raise api.InternalError("failed to allocate a serviceIP: range is full") from None
                if not ctx.dry_run:
                    ips.append(ip)
                spec["clusterIP"] = ip
            if _needs_ip(spec):
                spec["clusterIPs"] = [spec["clusterIP"]]
            elif spec.get("clusterIP") == "None":
                spec["clusterIPs"] = ["None"]
            if spec.get("type") != "ExternalName":
                spec["ipFamilies"] = spec.get("ipFamilies") or ["IPv4"]
                spec["ipFamilyPolicy"] = spec.get("ipFamilyPolicy") or "SingleStack"
            if _needs_node_ports(spec):
                held = {str(p.get("nodePort")) for p in old_spec.get("ports") or [] if p.get("nodePort")}
                held = held if _needs_node_ports(old_spec) else set()
                for i, p in enumerate(spec.get("ports") or []):
                    np = p.get("nodePort")
                    if np and str(np) in held:
                        continue
                    if np:
                        try:
                            await self.ports.allocate_value(str(np), owner, dry_run=ctx.dry_run)
                        except (OutOfRangeError, AlreadyAllocatedError) as exc:
                            detail = ("provided port is already allocated" if isinstance(exc, AlreadyAllocatedError)
                                      else f"provided port is not in the valid range. The range of valid ports is "
                                      f"{self.ports.description.split()[-1]}")
                            raise invalid_error(self.resource, name, [api.Cause(
                                "FieldValueInvalid", f"Invalid value: {np}: {detail}", f"spec.ports[{i}].nodePort"
                            )]) from None
                        port = str(np)
                    else:
                        try:
                            port = await self.ports.allocate(owner, dry_run=ctx.dry_run)
                        except RangeFullError:
                            raise api.InternalError("failed to allocate a nodePort: range is full") from None
                        p["nodePort"] = int(port)
                    if not ctx.dry_run:
                        ports.append(port)
        except BaseException:
            await self._release(ips, ports)
            raise
        return ips, ports

    def _ip_error(self, name: str, ip: Any, detail: str) -> api.InvalidError:
        return invalid_error(self.resource, name, [api.Cause(
            "FieldValueInvalid", f"Invalid value: {format_value([ip])}: failed to allocate IP {ip}: {detail}",
            "spec.clusterIPs",
        )])

    async def _release(self, ips: list[str], ports: list[str]) -> None:
        for ip in ips:
            await self.ips.release(ip)
        for port in ports:
            await self.ports.release(port)

    @staticmethod
    def _held(obj: dict[str, Any] | None) -> tuple[set[str], set[str]]:
        spec = (obj or {}).get("spec") or {}
        ips = {str(spec["clusterIP"])} if _needs_ip(spec) and spec.get("clusterIP") else set()
        ports = {str(p["nodePort"]) for p in spec.get("ports") or [] if isinstance(p, dict) and p.get("nodePort")}
        return ips, ports if _needs_node_ports(spec) else set()

    async def begin_create(self, obj: dict[str, Any], ctx: Context) -> Finish | None:
        ips, ports = await self._allocate(obj, None, ctx)

        async def finish(ok: bool) -> None:
            if not ok:
                await self._release(ips, ports)

        return finish

    async def begin_update(self, obj: dict[str, Any], old: dict[str, Any], ctx: Context) -> Finish | None:
        ips, ports = await self._allocate(obj, old, ctx)

        async def finish(ok: bool) -> None:
            if not ok:
                await self._release(ips, ports)
                return
            if ctx.dry_run:
                return
            old_ips, old_ports = self._held(old)
            new_ips, new_ports = self._held(obj)
            await self._release(sorted(old_ips - new_ips), sorted(old_ports - new_ports))

        return finish

    async def after_delete(self, obj: dict[str, Any], ctx: Context) -> None:
        ips, ports = self._held(obj)
        await self._release(sorted(ips), sorted(ports))
