"""Leases, RuntimeClasses, EndpointSlices and SelfSubjectAccessReviews.

Small resources with a few rules each. A SelfSubjectAccessReview is never stored: the create answers
with the review and its verdict. Authorization is a later seam (`Authorizer`); until one is plugged in,
every request is allowed and the review says so.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from podvisor.apiserver import errors as api
from podvisor.apiserver.rest import UserInfo
from podvisor.apiserver.strategies.base import Context, Strategy, set_default
from podvisor.apiserver.strategies.core import validate_ip
from podvisor.apiserver.validation import (
    FieldErrors,
    dns1123_label_errors,
    dns1123_subdomain_errors,
    port_errors,
)
from podvisor.schema.model import Resource

__all__ = [
    "LeaseStrategy",
    "RuntimeClassStrategy",
    "EndpointSliceStrategy",
    "SelfSubjectAccessReviewStrategy",
    "Authorizer",
    "allow_all",
]

# (user, review spec) -> (allowed, reason)
Authorizer = Callable[[UserInfo, dict[str, Any]], Awaitable[tuple[bool, str]]]


async def allow_all(user: UserInfo, spec: dict[str, Any]) -> tuple[bool, str]:
    return True, "podvisor does not enforce authorization yet: every authenticated request is allowed"


class LeaseStrategy(Strategy):
    tracks_generation = False
    allow_create_on_update = True

    def validate(self, obj: dict[str, Any]) -> FieldErrors:
        errs = FieldErrors()
        spec = obj.get("spec") or {}
        duration = spec.get("leaseDurationSeconds")
        if duration is not None and (not isinstance(duration, int) or duration <= 0):
            errs.invalid("spec.leaseDurationSeconds", duration, "must be greater than 0")
        transitions = spec.get("leaseTransitions")
        if transitions is not None and (not isinstance(transitions, int) or transitions < 0):
            errs.invalid("spec.leaseTransitions", transitions, "must be greater than or equal to 0")
        return errs


class RuntimeClassStrategy(Strategy):
    tracks_generation = False

    def validate(self, obj: dict[str, Any]) -> FieldErrors:
        errs = FieldErrors()
        handler = obj.get("handler")
        if not handler:
            errs.required("handler")
        else:
            errs.extend_invalid("handler", handler, dns1123_label_errors(str(handler)))
        return errs

    def validate_update(self, obj: dict[str, Any], old: dict[str, Any]) -> FieldErrors:
        errs = self.validate(obj)
        if obj.get("handler") != old.get("handler"):
            errs.immutable("handler", obj.get("handler"))
        return errs


_ADDRESS_TYPES = ("IPv4", "IPv6", "FQDN")


class EndpointSliceStrategy(Strategy):
    tracks_generation = False

    def default(self, obj: dict[str, Any]) -> None:
        for p in obj.get("ports") or []:
            if isinstance(p, dict):
                set_default(p, "protocol", "TCP")
        for e in obj.get("endpoints") or []:
            if isinstance(e, dict):
                set_default(e, "conditions", {})

    def validate(self, obj: dict[str, Any]) -> FieldErrors:
        errs = FieldErrors()
        typ = obj.get("addressType")
        if not typ:
            errs.required("addressType")
        elif typ not in _ADDRESS_TYPES:
            errs.not_supported("addressType", typ, _ADDRESS_TYPES)
        endpoints = obj.get("endpoints") or []
        if len(endpoints) > 1000:
            errs.too_many("endpoints", len(endpoints), 1000)
        for i, e in enumerate(endpoints):
            addresses = (e or {}).get("addresses") or []
            if not addresses:
                errs.required(f"endpoints[{i}].addresses", "must contain at least 1 address")
            for j, a in enumerate(addresses):
                path = f"endpoints[{i}].addresses[{j}]"
                if typ in ("IPv4", "IPv6"):
                    validate_ip(a, path, errs)
                else:
                    errs.extend_invalid(path, a, dns1123_subdomain_errors(str(a)))
        for i, p in enumerate(obj.get("ports") or []):
            port = (p or {}).get("port")
            if port is not None:
                errs.extend_invalid(f"ports[{i}].port", port, port_errors(port))
        return errs

    def validate_update(self, obj: dict[str, Any], old: dict[str, Any]) -> FieldErrors:
        errs = self.validate(obj)
        if obj.get("addressType") != old.get("addressType"):
            errs.immutable("addressType", obj.get("addressType"))
        return errs


class SelfSubjectAccessReviewStrategy(Strategy):
    stored = False
    tracks_generation = False

    def __init__(self, resource: Resource, *, authorizer: Authorizer = allow_all) -> None:
        super().__init__(resource)
        self.authorizer = authorizer

    async def create_unstored(self, obj: dict[str, Any], ctx: Context) -> dict[str, Any]:
        spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
        assert isinstance(spec, dict)
        has_res, has_non = spec.get("resourceAttributes") is not None, spec.get("nonResourceAttributes") is not None
        causes: list[api.Cause] = []
        if has_res and has_non:
            causes.append(api.Cause(
                "FieldValueInvalid",
                "Invalid value: \"\": cannot be specified in combination with resourceAttributes",
                "spec.nonResourceAttributes",
            ))
        elif not has_res and not has_non:
            causes.append(api.Cause(
                "FieldValueInvalid",
                "Invalid value: null: exactly one of nonResourceAttributes or resourceAttributes must be specified",
                "spec.resourceAttributes",
            ))
        if causes:
            raise api.InvalidError(
                f'SelfSubjectAccessReview.authorization.k8s.io "" is invalid: {causes[0].field}: {causes[0].message}',
                group="authorization.k8s.io", kind="SelfSubjectAccessReview", causes=causes,
            )
        allowed, reason = await self.authorizer(ctx.user, spec)
        status: dict[str, Any] = {"allowed": allowed}
        if reason:
            status["reason"] = reason
        if not allowed:
            status["denied"] = False
        return {
            "kind": "SelfSubjectAccessReview",
            "apiVersion": self.resource.api_version,
            "metadata": {"creationTimestamp": None},
            "spec": spec,
            "status": status,
        }
