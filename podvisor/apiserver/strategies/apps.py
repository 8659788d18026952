"""Deployments and ReplicaSets (apps/v1), and the ``scale`` subresource they share.

Defaults are Kubernetes': one replica, RollingUpdate 25%/25%, ten old ReplicaSets kept, a 600 s progress
deadline, and the pod template defaulted as a pod spec. Validation requires a non-empty selector that
matches the template's labels and a template that restarts Always; the selector never changes after
creation. ``/scale`` reads and writes ``spec.replicas`` through an autoscaling/v1 Scale, with the parent's
resourceVersion as its own.
"""

from __future__ import annotations

import copy
import re
from typing import TYPE_CHECKING, Any

from podvisor.apiserver import errors as api
from podvisor.apiserver.meta import meta
from podvisor.apiserver.rest import RequestOptions, WriteResult
from podvisor.apiserver.selectors import selector_from_dict
from podvisor.apiserver.strategies.base import Strategy, SubresourceHandler, set_default
from podvisor.apiserver.strategies.pod_validation import validate_pod_spec
from podvisor.apiserver.strategies.pods import default_pod_template
from podvisor.apiserver.validation import FieldErrors, validate_label_selector, validate_labels

if TYPE_CHECKING:
    from podvisor.apiserver.store import Store

__all__ = ["DeploymentStrategy", "ReplicaSetStrategy", "ScaleHandler", "validate_template", "SCALE_STRUCT"]

SCALE_STRUCT = "io.k8s.api.autoscaling.v1.Scale"
_PERCENT = re.compile(r"^[0-9]+%$")


def _nonneg(errs: FieldErrors, path: str, value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        errs.invalid(path, value, "must be greater than or equal to 0")


def validate_template(
    spec: dict[str, Any], errs: FieldErrors, *, restart_policies: tuple[str, ...], what: str
) -> None:
    """selector + template: the selector is required and non-empty and must select the template."""
    selector = spec.get("selector")
    if selector is None:
        errs.required("spec.selector")
    else:
        validate_label_selector(selector, "spec.selector", errs)
        if not (selector.get("matchLabels") or selector.get("matchExpressions")):
            errs.invalid("spec.selector", selector, f"empty selector is invalid for {what}")
    template = spec.get("template")
    if not isinstance(template, dict):
        errs.required("spec.template")
        return
    labels = (template.get("metadata") or {}).get("labels") or {}
    validate_labels(labels, "spec.template.metadata.labels", errs)
    if isinstance(selector, dict) and (selector.get("matchLabels") or selector.get("matchExpressions")):
        if not selector_from_dict(selector).matches({str(k): str(v) for k, v in labels.items()}):
            errs.invalid("spec.template.metadata.labels", labels, "`selector` does not match template `labels`")
    validate_pod_spec(template.get("spec"), "spec.template.spec", errs)
    policy = (template.get("spec") or {}).get("restartPolicy")
    if policy and policy not in restart_policies:
        errs.not_supported("spec.template.spec.restartPolicy", policy, restart_policies)


def _int_or_percent(errs: FieldErrors, path: str, value: Any) -> int | None:
    """The integer value, 0-100 for percents; None (with an error) when malformed."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            errs.invalid(path, value, "must be greater than or equal to 0")
        return value
    if isinstance(value, str) and _PERCENT.match(value):
        pct = int(value[:-1])
        if pct > 100:
            errs.invalid(path, value, "must not be greater than 100%")
        return pct
    errs.invalid(path, value, "a valid percent string must be a numeric string followed by an ending '%' "
                 "(e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')")
    return None


class _ReplicatedStrategy(Strategy):
    tracks_generation = True
    what = ""

    def validate_common(self, obj: dict[str, Any]) -> FieldErrors:
        errs = FieldErrors()
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            errs.required("spec")
            return errs
        _nonneg(errs, "spec.replicas", spec.get("replicas"))
        _nonneg(errs, "spec.minReadySeconds", spec.get("minReadySeconds"))
        validate_template(spec, errs, restart_policies=("Always",), what=self.what)
        return errs

    def validate_update(self, obj: dict[str, Any], old: dict[str, Any]) -> FieldErrors:
        errs = self.validate(obj)
        new_sel, old_sel = (obj.get("spec") or {}).get("selector"), (old.get("spec") or {}).get("selector")
        if new_sel != old_sel:
            errs.immutable("spec.selector", new_sel)
        return errs

    def subresource_handlers(self) -> dict[str, SubresourceHandler]:
        return {"scale": ScaleHandler()}


class DeploymentStrategy(_ReplicatedStrategy):
    generation_on_annotations = True
    what = "deployment"

    def default(self, obj: dict[str, Any]) -> None:
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            return
        set_default(spec, "replicas", 1)
        strategy = set_default(spec, "strategy", {})
        set_default(strategy, "type", "RollingUpdate")
        if strategy["type"] == "RollingUpdate":
            rolling = set_default(strategy, "rollingUpdate", {})
            set_default(rolling, "maxUnavailable", "25%")
            set_default(rolling, "maxSurge", "25%")
        set_default(spec, "revisionHistoryLimit", 10)
        set_default(spec, "progressDeadlineSeconds", 600)
        default_pod_template(spec.get("template"))

    def validate(self, obj: dict[str, Any]) -> FieldErrors:
        errs = self.validate_common(obj)
        spec = obj.get("spec") or {}
        strategy = spec.get("strategy") or {}
        typ = strategy.get("type")
        if typ not in ("Recreate", "RollingUpdate"):
            errs.not_supported("spec.strategy.type", typ, ("Recreate", "RollingUpdate"))
        rolling = strategy.get("rollingUpdate")
        if typ == "Recreate" and rolling is not None:
            errs.forbidden("spec.strategy.rollingUpdate", "may not be specified when strategy `type` is 'Recreate'")
        if typ == "RollingUpdate" and isinstance(rolling, dict):
            unavailable = _int_or_percent(errs, "spec.strategy.rollingUpdate.maxUnavailable", rolling.get("maxUnavailable"))
            surge = _int_or_percent(errs, "spec.strategy.rollingUpdate.maxSurge", rolling.get("maxSurge"))
            if unavailable == 0 and surge == 0:
                errs.invalid("spec.strategy.rollingUpdate.maxUnavailable", rolling.get("maxUnavailable"),
                             "may not be 0 when `maxSurge` is 0")
        _nonneg(errs, "spec.revisionHistoryLimit", spec.get("revisionHistoryLimit"))
        deadline = spec.get("progressDeadlineSeconds")
        _nonneg(errs, "spec.progressDeadlineSeconds", deadline)
        min_ready = spec.get("minReadySeconds") or 0
        if isinstance(deadline, int) and isinstance(min_ready, int) and deadline <= min_ready:
            errs.invalid("spec.progressDeadlineSeconds", deadline, "must be greater than minReadySeconds")
        return errs


class ReplicaSetStrategy(_ReplicatedStrategy):
    what = "replicaset"

    def default(self, obj: dict[str, Any]) -> None:
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            return
        set_default(spec, "replicas", 1)
        default_pod_template(spec.get("template"))

    def validate(self, obj: dict[str, Any]) -> FieldErrors:
        return self.validate_common(obj)


def _scale_of(store: Store, obj: dict[str, Any]) -> dict[str, Any]:
    m = meta(obj)
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    scale_meta = {k: m[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp") if k in m}
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": scale_meta,
        "spec": {"replicas": int(spec.get("replicas") or 0)},
        "status": {"replicas": int(status.get("replicas") or 0), "selector": str(selector_from_dict(spec.get("selector")))},
    }


def _replicas_of(name: str, scale: Any) -> int:
    replicas = (scale.get("spec") or {}).get("replicas") if isinstance(scale, dict) else None
    if replicas is None:
        replicas = 0
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
        cause = api.Cause("FieldValueInvalid", f"Invalid value: {replicas}: must be greater than or equal to 0",
                          "spec.replicas")
        raise api.InvalidError(f'Scale.autoscaling "{name}" is invalid: spec.replicas: {cause.message}',
                               name=name, group="autoscaling", kind="Scale", causes=[cause])
    return replicas


class ScaleHandler(SubresourceHandler):
    """``<resource>/scale``: the parent's ``spec.replicas`` as an autoscaling/v1 Scale."""

    name = "scale"

    async def get(self, store: Store, namespace: str, name: str) -> dict[str, Any]:
        obj, _ = await store.read(namespace, name)
        return _scale_of(store, obj)

    async def _write(self, store: Store, namespace: str, name: str, opts: RequestOptions, to_scale: Any) -> WriteResult:
        async def scaled(existing: dict[str, Any] | None) -> dict[str, Any]:
            assert existing is not None
            scale = await to_scale(_scale_of(store, existing))
            new = copy.deepcopy(existing)
            new.setdefault("spec", {})["replicas"] = _replicas_of(name, scale)
            rv = (scale.get("metadata") or {}).get("resourceVersion")
            if rv:
                meta(new)["resourceVersion"] = str(rv)
            return new

        result = await store.guaranteed_update(namespace, name, scaled, opts, subresource="scale", patch=True)
        return WriteResult(_scale_of(store, store.strategy.to_internal(result.body)), result.code)

    async def update(
        self, store: Store, namespace: str, name: str, obj: dict[str, Any], opts: RequestOptions
    ) -> WriteResult:
        if not isinstance(obj, dict):
            raise api.BadRequestError("the body of the request was not a Scale object")
        body_name = (obj.get("metadata") or {}).get("name")
        if body_name and body_name != name:
            raise api.BadRequestError(f"the name of the object ({body_name}) does not match the name on the URL ({name})")

        async def replace(_current: dict[str, Any]) -> dict[str, Any]:
            return obj

        return await self._write(store, namespace, name, opts, replace)

    async def patch(
        self, store: Store, namespace: str, name: str, patch_type: str, patch: Any, opts: RequestOptions
    ) -> WriteResult:
        async def patched(current: dict[str, Any]) -> dict[str, Any]:
            return store.apply_patch(current, patch_type, patch, opts, struct_name=SCALE_STRUCT,
                                     api_version="autoscaling/v1", kind="Scale", subresource="scale")

        return await self._write(store, namespace, name, opts, patched)
