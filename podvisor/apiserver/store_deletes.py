"""The delete side of the generic store: preconditions, grace periods, finalizers, propagation.

It follows Kubernetes' registry: a DELETE first checks the uid/resourceVersion preconditions; a
graceful resource (pods) gets ``deletionTimestamp`` = now + grace and stays until its node agent deletes
it again with grace 0 (an object already being deleted may only have its grace shortened); the
propagation policy adds the garbage collector's ``orphan`` or ``foregroundDeletion`` finalizer; an
object with finalizers is only marked (``deletionTimestamp``, grace 0) and goes when an update clears
the last one. Deleted-now answers are a Success Status (or the object, for resources that return it);
pending ones answer with the object.
"""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

from podvisor.apiserver import errors as api
from podvisor.apiserver.meta import format_time, meta, parse_time
from podvisor.apiserver.rest import RequestOptions, WriteResult
from podvisor.apiserver.store_core import StoreCore, int_option
from podvisor.apiserver.strategies.base import Context
from podvisor.storage import interface as st

__all__ = ["StoreDeletes", "MAX_CAS_RETRIES"]

MAX_CAS_RETRIES = 32


class StoreDeletes(StoreCore):
    """The DELETE verb (delete-collection, which lists first, lives with the writes)."""

    # -- delete -----------------------------------------------------------------------------------

    async def delete(self, namespace: str, name: str, options: dict[str, Any], opts: RequestOptions) -> WriteResult:
        options = dict(options or {})
        _validate_delete_options(options)
        key = self.key(namespace, name)
        ctx = self._ctx(opts)
        for _ in range(MAX_CAS_RETRIES):
            obj, kv = await self.read(namespace, name)
            result = await self._delete_attempt(key, kv, obj, options, opts, ctx)
            if result is not None:
                return result
        raise self.conflict(name)

    def _check_preconditions(self, obj: dict[str, Any], options: dict[str, Any]) -> None:
        pre = options.get("preconditions") or {}
        m = meta(obj)
        kind_res = f"{self.resource.kind}.{self.resource.group}" if self.resource.group else self.resource.kind
        uid, rv = pre.get("uid"), pre.get("resourceVersion")
        if uid is not None and uid != m.get("uid"):
            raise api.ConflictError(
                f'Operation cannot be fulfilled on {kind_res} "{m.get("name")}": the UID in the precondition ({uid}) '
                f"does not match the UID in record ({m.get('uid')}). The object might have been deleted and then recreated",
                name=m.get("name", ""), group=self.resource.group, kind=self.resource.kind,
            )
        if rv is not None and str(rv) != m.get("resourceVersion"):
            raise api.ConflictError(
                f'Operation cannot be fulfilled on {kind_res} "{m.get("name")}": the ResourceVersion in the '
                f"precondition ({rv}) does not match the ResourceVersion in record ({m.get('resourceVersion')}). "
                "The object might have been modified",
                name=m.get("name", ""), group=self.resource.group, kind=self.resource.kind,
            )

    def _gc_finalizers(self, obj: dict[str, Any], options: dict[str, Any]) -> list[str]:
        current = list(meta(obj).get("finalizers") or [])
        if self.strategy.gc_policy == "Unsupported":
            return current
        orphan_opt = options.get("orphanDependents")
        policy = options.get("propagationPolicy")
        if orphan_opt is not None:
            orphan, foreground = bool(orphan_opt), False
        elif policy in ("Orphan", "Background", "Foreground"):
            orphan, foreground = policy == "Orphan", policy == "Foreground"
        else:
            orphan = "orphan" in current or (
                "foregroundDeletion" not in current and self.strategy.gc_policy == "OrphanDependents"
            )
            foreground = "foregroundDeletion" in current
        out = [f for f in current if f not in ("orphan", "foregroundDeletion")]
        if orphan:
            out.append("orphan")
        if foreground:
            out.append("foregroundDeletion")
        return out if set(out) != set(current) else current

    async def _delete_attempt(
        self, key: str, kv: st.KeyValue, obj: dict[str, Any], options: dict[str, Any],
        opts: RequestOptions, ctx: Context,
    ) -> WriteResult | None:
        s = self.strategy
        m = meta(obj)
        self._check_preconditions(obj, options)
        await self._admit("DELETE", m.get("namespace", ""), m.get("name", ""), None, obj, opts, "")
        before = copy.deepcopy(obj)
        if s.on_delete(obj, ctx):
            return await self._write_pending(key, kv, before, obj, opts, options)
        requested = int_option(options, "gracePeriodSeconds")
        if requested is not None and requested < 0:
            requested = 1
        now = ctx.now
        grace: int | None = None
        if m.get("deletionTimestamp"):
            current = m.get("deletionGracePeriodSeconds")
            if current:  # graceful deletion under way: it may only be shortened
                if requested is None or requested >= current:
                    return self._pending_result(obj, options)
                grace = requested
                due = (parse_time(m["deletionTimestamp"]) or now) - timedelta(seconds=current - requested)
                if due < now:
                    due = now
                    if grace:
                        grace = 1  # the period ran out: the node agent still does the final delete
                m["deletionTimestamp"] = format_time(due)
                m["deletionGracePeriodSeconds"] = grace
        else:
            grace = s.grace_period(obj, requested)
            if grace is not None:
                m["deletionTimestamp"] = format_time(now + timedelta(seconds=grace))
                m["deletionGracePeriodSeconds"] = grace
                if m.get("generation"):
                    m["generation"] = int(m["generation"]) + 1
        finalizers = self._gc_finalizers(obj, options)
        if finalizers != (m.get("finalizers") or []):
            m["finalizers"] = finalizers
        if finalizers and grace is None:
            if not m.get("deletionTimestamp") and m.get("generation"):
                m["generation"] = int(m["generation"]) + 1
            current_ts = parse_time(m.get("deletionTimestamp"))
            if current_ts is None or current_ts > now:
                m["deletionTimestamp"] = format_time(now)
            m["deletionGracePeriodSeconds"] = 0
        if finalizers or (grace is not None and grace > 0):
            return await self._write_pending(key, kv, before, obj, opts, options)
        # delete now
        if opts.dry_run:
            return self._deleted_result(obj)
        try:
            gone = await self.storage.delete(key, expected_revision=kv.mod_revision)
        except st.ConflictError:
            return None
        except st.KeyNotFoundError:
            raise self.not_found(m.get("name", "")) from None
        last = self._decode_internal(gone)
        await s.after_delete(last, ctx)
        return self._deleted_result(last)

    async def _write_pending(
        self, key: str, kv: st.KeyValue, before: dict[str, Any], obj: dict[str, Any],
        opts: RequestOptions, options: dict[str, Any],
    ) -> WriteResult | None:
        if obj == before or opts.dry_run:
            return self._pending_result(obj, options)
        try:
            out = await self.storage.update(key, self._encode(obj), expected_revision=kv.mod_revision)
        except (st.ConflictError, st.KeyNotFoundError):
            return None
        return self._pending_result(self._decode_internal(out), options)

    def _pending_result(self, obj: dict[str, Any], options: dict[str, Any]) -> WriteResult:
        code = 202 if options.get("orphanDependents") is False else 200
        return WriteResult(self.strategy.to_external(obj), code)

    def _deleted_result(self, obj: dict[str, Any]) -> WriteResult:
        if self.strategy.return_deleted_object:
            return WriteResult(self.strategy.to_external(obj), 200)
        m = meta(obj)
        details: dict[str, Any] = {"name": m.get("name", ""), "kind": self.resource.plural, "uid": m.get("uid", "")}
        if self.resource.group:
            details["group"] = self.resource.group
        return WriteResult(
            {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}, 200
        )


def _validate_delete_options(options: dict[str, Any]) -> None:
    policy = options.get("propagationPolicy")
    causes: list[api.Cause] = []
    if policy is not None and policy not in ("Orphan", "Background", "Foreground"):
        causes.append(api.Cause(
            "FieldValueNotSupported",
            f'Unsupported value: "{policy}": supported values: "Foreground", "Background", "Orphan", "nil"',
            "propagationPolicy",
        ))
    if policy is not None and options.get("orphanDependents") is not None:
        causes.append(api.Cause(
            "FieldValueInvalid",
            f'Invalid value: "{policy}": orphanDependents and deletionPropagation cannot be both set',
            "propagationPolicy",
        ))
    if causes:
        parts = [f"{c.field}: {c.message}" for c in causes]
        detail = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
        raise api.InvalidError(
            f'DeleteOptions.meta.k8s.io "" is invalid: {detail}', group="meta.k8s.io", kind="DeleteOptions",
            causes=causes,
        )
