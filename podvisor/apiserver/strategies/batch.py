"""Jobs (batch/v1): defaults, the generated selector, and what may change after creation.

Unless ``manualSelector`` is true, a Job's selector is generated from its own uid (``batch.kubernetes.io/
controller-uid``) and the template gets the ``controller-uid`` and ``job-name`` labels (both spellings,
as Kubernetes writes them), so two Jobs never select each other's pods. The template must restart
OnFailure or Never and, like the selector and completions, may not change afterwards. Deleting a Job
without a propagation policy orphans its pods, as in Kubernetes (kubectl asks for Background).
"""

from __future__ import annotations

from typing import Any

from podvisor.apiserver.meta import meta
from podvisor.apiserver.strategies.apps import validate_template
from podvisor.apiserver.strategies.base import Context, Strategy, field_value, set_default
from podvisor.apiserver.strategies.pods import default_pod_template
from podvisor.apiserver.validation import FieldErrors

__all__ = ["JobStrategy", "CONTROLLER_UID", "JOB_NAME"]

CONTROLLER_UID = "batch.kubernetes.io/controller-uid"
JOB_NAME = "batch.kubernetes.io/job-name"
_LEGACY_UID = "controller-uid"
_LEGACY_NAME = "job-name"


def _nonneg(errs: FieldErrors, path: str, value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        errs.invalid(path, value, "must be greater than or equal to 0")


class JobStrategy(Strategy):
    tracks_generation = True
    gc_policy = "OrphanDependents"
    field_labels = ("status.successful",)

    def default(self, obj: dict[str, Any]) -> None:
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            return
        if spec.get("completions") is None and spec.get("parallelism") is None:
            spec["completions"] = 1
        set_default(spec, "parallelism", 1)
        if spec.get("backoffLimitPerIndex") is None:
            set_default(spec, "backoffLimit", 6)
        set_default(spec, "completionMode", "NonIndexed")
        set_default(spec, "suspend", False)
        if spec.get("podFailurePolicy") is None:
            set_default(spec, "podReplacementPolicy", "TerminatingOrFailed")
        default_pod_template(spec.get("template"))

    def prepare_for_create(self, obj: dict[str, Any], ctx: Context) -> None:
        super().prepare_for_create(obj, ctx)
        spec = obj.get("spec")
        if not isinstance(spec, dict) or spec.get("manualSelector") is True:
            return
        m = meta(obj)
        uid, name = m.get("uid", ""), m.get("name", "")
        template = spec.setdefault("template", {})
        if not isinstance(template, dict):
            return
        labels = template.setdefault("metadata", {}).setdefault("labels", {})
        labels.setdefault(CONTROLLER_UID, uid)
        labels.setdefault(JOB_NAME, name)
        labels.setdefault(_LEGACY_UID, uid)
        labels.setdefault(_LEGACY_NAME, name)
        if spec.get("selector") is None:
            spec["selector"] = {"matchLabels": {CONTROLLER_UID: uid}}

    def validate(self, obj: dict[str, Any]) -> FieldErrors:
        errs = FieldErrors()
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            errs.required("spec")
            return errs
        for f in ("parallelism", "completions", "backoffLimit"):
            _nonneg(errs, f"spec.{f}", spec.get(f))
        ads = spec.get("activeDeadlineSeconds")
        if ads is not None and (not isinstance(ads, int) or ads <= 0):
            errs.invalid("spec.activeDeadlineSeconds", ads, "must be greater than 0")
        mode = spec.get("completionMode")
        if mode not in ("NonIndexed", "Indexed"):
            errs.not_supported("spec.completionMode", mode, ("NonIndexed", "Indexed"))
        if mode == "Indexed" and spec.get("completions") is None:
            errs.required("spec.completions", "when completion mode is Indexed")
        template_spec = (spec.get("template") or {}).get("spec") or {}
        if not template_spec.get("restartPolicy") or template_spec.get("restartPolicy") == "Always":
            errs.not_supported("spec.template.spec.restartPolicy", template_spec.get("restartPolicy") or "",
                               ("OnFailure", "Never"))
        validate_template(spec, errs, restart_policies=("OnFailure", "Never", "Always"), what="job")
        if spec.get("manualSelector") is not True:
            uid = meta(obj).get("uid", "")
            selector = spec.get("selector") or {}
            labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
            if selector != {"matchLabels": {CONTROLLER_UID: uid}} or labels.get(CONTROLLER_UID) != uid:
                errs.invalid("spec.selector", selector, "`selector` not auto-generated")
        return errs

    def validate_update(self, obj: dict[str, Any], old: dict[str, Any]) -> FieldErrors:
        errs = self.validate(obj)
        spec, old_spec = obj.get("spec") or {}, old.get("spec") or {}
        for f in ("selector", "completions", "completionMode", "template"):
            if spec.get(f) != old_spec.get(f):
                if f == "template" and old_spec.get("suspend") and not (old.get("status") or {}).get("startTime"):
                    continue  # a suspended Job that never started may still change its template
                errs.immutable(f"spec.{f}", spec.get(f))
        return errs

    def extra_fields(self, obj: dict[str, Any]) -> dict[str, str]:
        return {"status.successful": field_value((obj.get("status") or {}).get("successful") or 0)}
