"""``pods/binding`` and ``pods/eviction``: the two POST-only subresources of a pod.

A Binding is how the scheduler places a pod: it sets ``spec.nodeName`` once (409 if the pod is already
bound or being deleted) and marks the pod ``PodScheduled``. An Eviction is a delete with the options it
carries (``kubectl drain`` sends them); disruption budgets would be checked here when they exist. Both
answer 201 with a Success Status, as Kubernetes does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from podvisor.apiserver import errors as api
from podvisor.apiserver.meta import format_time, meta
from podvisor.apiserver.rest import RequestOptions, WriteResult
from podvisor.apiserver.strategies.base import SubresourceHandler
from podvisor.apiserver.validation import FieldErrors

if TYPE_CHECKING:
    from podvisor.apiserver.store import Store

__all__ = ["BindingHandler", "EvictionHandler", "success_status"]


def success_status(code: int = 201) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": code}


def _check_name(obj: Any, name: str, kind: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise api.BadRequestError(f"the body of the request was not a {kind} object")
    body_name = (obj.get("metadata") or {}).get("name")
    if body_name and name and body_name != name:
        raise api.BadRequestError(f"name in URL does not match name in {kind} object")
    return obj


class BindingHandler(SubresourceHandler):
    name = "binding"

    async def create(
        self, store: Store, namespace: str, name: str, obj: dict[str, Any], opts: RequestOptions
    ) -> WriteResult:
        body = _check_name(obj, name, "Binding")
        name = name or (body.get("metadata") or {}).get("name") or ""
        target: dict[str, Any] = body["target"] if isinstance(body.get("target"), dict) else {}
        errs = FieldErrors()
        if target.get("kind") not in (None, "", "Node"):
            errs.not_supported("target.kind", target.get("kind"), ("Node", "<empty>"))
        if not target.get("name"):
            errs.required("target.name")
        if errs:
            parts = [f"{c.field}: {c.message}" for c in errs]
            raise api.InvalidError(
                f'Binding "{name}" is invalid: ' + (parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"),
                name=name, kind="Binding", causes=list(errs),
            )
        node = str(target["name"])
        want_uid = (body.get("metadata") or {}).get("uid")
        annotations = (body.get("metadata") or {}).get("annotations") or {}

        async def bind(existing: dict[str, Any] | None) -> dict[str, Any]:
            assert existing is not None
            m = meta(existing)
            if want_uid and want_uid != m.get("uid"):
                raise store.conflict(name, f"Precondition failed: UID in precondition: {want_uid}, UID in object meta: {m.get('uid')}")
            if m.get("deletionTimestamp"):
                raise _binding_conflict(name, f"pod {name} is being deleted, cannot be assigned to a host")
            spec = existing.setdefault("spec", {})
            if spec.get("nodeName"):
                raise _binding_conflict(name, f'pod {name} is already assigned to node "{spec["nodeName"]}"')
            spec["nodeName"] = node
            if annotations:
                m.setdefault("annotations", {}).update({str(k): str(v) for k, v in annotations.items()})
            status = existing.setdefault("status", {})
            conditions = [c for c in status.get("conditions") or [] if c.get("type") != "PodScheduled"]
            conditions.append({
                "type": "PodScheduled", "status": "True", "lastProbeTime": None,
                "lastTransitionTime": format_time(store.clock()),
            })
            status["conditions"] = conditions
            return existing

        await store.guaranteed_update(namespace, name, bind, opts, subresource="binding", raw=True)
        return WriteResult(success_status(201), 201)


def _binding_conflict(name: str, detail: str) -> api.ConflictError:
    return api.ConflictError(
        f'Operation cannot be fulfilled on pods/binding "{name}": {detail}', name=name, kind="pods/binding"
    )


class EvictionHandler(SubresourceHandler):
    name = "eviction"

    async def create(
        self, store: Store, namespace: str, name: str, obj: dict[str, Any], opts: RequestOptions
    ) -> WriteResult:
        body = _check_name(obj, name, "Eviction")
        name = name or (body.get("metadata") or {}).get("name") or ""
        options: dict[str, Any] = body["deleteOptions"] if isinstance(body.get("deleteOptions"), dict) else {}
        if options.get("dryRun"):
            opts.dry_run = True
        await store.read(namespace, name)  # 404 for a missing pod, before anything else
        await store.delete(namespace, name, dict(options), opts)
        return WriteResult(success_status(201), 201)
