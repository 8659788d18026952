"""The generic store: one implementation of every REST verb, configured per resource by a strategy.

Like Kubernetes' ``registry.Store``, nothing here knows what a Pod or a Service is. Each verb runs a fixed
sequence (see `podvisor.apiserver.strategies.base`) and the strategy fills in the differences. The rules
that make the API behave like Kubernetes live here once:

* keys are ``/registry/<group or core>/<plural>/<namespace>/<name>`` (no namespace segment for
  cluster-scoped resources); values are the object's JSON without ``resourceVersion``, which is always
  the storage ``mod_revision`` stamped on read, never trusted from the bytes;
* every update is a compare-and-swap in a retry loop (``GuaranteedUpdate``): a stale
  ``resourceVersion`` in the body is a 409 with Kubernetes' words, a lost race with no
  ``resourceVersion`` is retried against the fresh object; a write that changes nothing is not stored;
* deletion honours preconditions, graceful periods (pods), finalizers and the propagation policy's
  ``orphan``/``foregroundDeletion`` finalizers; an update that clears the last finalizer of an object
  being deleted removes it;
* lists and watches filter by label and field selectors; lists page with opaque ``continue`` tokens read
  at one revision; watches replay, translate selector transitions into ADDED/DELETED and send BOOKMARKs.

This module holds the write side (create, update, patch, delete-collection); the shared core, the read
side and deletion live in `store_core`, `store_reads` and `store_deletes`, and `Store` combines them.
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Awaitable, Callable
from typing import Any

from podvisor.apiserver import errors as api
from podvisor.apiserver.managedfields import update_managed_fields
from podvisor.apiserver.meta import format_time, meta, name_suffix, new_uid
from podvisor.apiserver.patch import json_patch, merge_patch, server_side_apply, strategic_merge_patch
from podvisor.apiserver.rest import ListOptions, RequestOptions, WriteResult
from podvisor.apiserver.store_core import (
    AdmissionPlugin,
    AdmissionRequest,
    TooLargeResourceVersionError,
    json_copy,
    object_key,
)
from podvisor.apiserver.store_deletes import MAX_CAS_RETRIES, StoreDeletes
from podvisor.apiserver.store_reads import INITIAL_EVENTS_END, StoreReads
from podvisor.apiserver.strategies.base import Context, Finish
from podvisor.apiserver.validation import (
    FieldErrors,
    raise_invalid,
    validate_object_meta,
    validate_object_meta_update,
)
from podvisor.storage import interface as st

__all__ = [
    "Store",
    "AdmissionRequest",
    "AdmissionPlugin",
    "TooLargeResourceVersionError",
    "object_key",
    "INITIAL_EVENTS_END",
    "APPLY_PATCH",
    "JSON_PATCH",
    "MERGE_PATCH",
    "STRATEGIC_PATCH",
]

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
_PATCH_TYPES = (JSON_PATCH, MERGE_PATCH, STRATEGIC_PATCH, APPLY_PATCH, "application/apply-patch+cbor")

_NAME_ATTEMPTS = 8


Transform = Callable[[dict[str, Any] | None], Awaitable[dict[str, Any]]]


def _compare_form(obj: dict[str, Any], *, keep_managed: bool) -> dict[str, Any]:
    out = dict(obj)
    m = dict(out.get("metadata") or {})
    m.pop("resourceVersion", None)
    if keep_managed:
        m["managedFields"] = [
            {k: v for k, v in e.items() if k != "time"} for e in m.get("managedFields") or [] if isinstance(e, dict)
        ]
    else:
        m.pop("managedFields", None)
    out["metadata"] = m
    return out


class Store(StoreReads, StoreDeletes):
    """`ResourceStore` for one resource: ``strategy`` decides what differs, ``storage`` keeps it."""

    # -- create -----------------------------------------------------------------------------------

    async def create(
        self, namespace: str, obj: dict[str, Any], opts: RequestOptions, *, subresource: str = "", name: str = ""
    ) -> WriteResult:
        if subresource:
            return await self._subresource(subresource).create(self, namespace, name, obj, opts)  # type: ignore[no-any-return]
        body = self._incoming(obj)
        if not self.strategy.stored:
            return WriteResult(await self.strategy.create_unstored(body, self._ctx(opts)), 201)
        self._set_namespace(namespace, body)
        m = meta(body)
        if m.get("resourceVersion"):
            raise api.BadRequestError("resourceVersion should not be set on objects to be created")
        if self.resource.namespaced:
            await self.check_namespace_accepts(namespace, m.get("name") or "")
        generated = bool(m.get("generateName")) and not m.get("name")
        for attempt in range(_NAME_ATTEMPTS if generated else 1):
            try:
                created = await self._create_once(json_copy(body), opts, generated=generated)
            except api.AlreadyExistsError:
                if not generated or attempt == _NAME_ATTEMPTS - 1:
                    raise
                continue
            return WriteResult(self.strategy.to_external(created), 201)
        raise api.InternalError("unreachable")

    def _generic_subresource(self, subresource: str) -> bool:
        """``status`` and namespaces' ``finalize`` are served by the store itself."""
        if subresource == "status":
            return self.strategy.has_status
        return subresource == "finalize" and self.resource.group == "" and self.resource.plural == "namespaces"

    def _set_namespace(self, namespace: str, body: dict[str, Any]) -> None:
        m = meta(body)
        if not self.resource.namespaced:
            m.pop("namespace", None)  # cluster-scoped objects have none, whatever the body says
            return
        if m.get("namespace") and namespace and m["namespace"] != namespace:
            raise api.BadRequestError(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        if namespace:
            m["namespace"] = namespace

    async def check_namespace_accepts(self, namespace: str, name: str) -> None:
        """NamespaceLifecycle: the namespace must exist and not be terminating."""
        if not namespace:
            return
        try:
            kv = await self.storage.get(object_key("", "namespaces", "", namespace))
        except st.KeyNotFoundError:
            raise api.NotFoundError.of("namespaces", namespace) from None
        ns = json.loads(kv.value)
        if (ns.get("metadata") or {}).get("deletionTimestamp") or (ns.get("status") or {}).get("phase") == "Terminating":
            what = f'{self._qres} "{name}"' if name else self._qres
            raise api.ForbiddenError(
                f"{what} is forbidden: unable to create new content in namespace {namespace} because it is "
                "being terminated",
                name=name,
                group=self.resource.group,
                kind=self.resource.plural,
                causes=[api.Cause("NamespaceTerminating", f"namespace {namespace} is being terminated", "metadata.namespace")],
            )

    async def _prepare_create(
        self, body: dict[str, Any], opts: RequestOptions, ctx: Context, *, applied: bool = False
    ) -> None:
        """Defaults, system metadata, strategy preparation, validation and admission for a new object."""
        s = self.strategy
        m = meta(body)
        s.default(body)
        m["uid"] = new_uid()
        m["creationTimestamp"] = format_time(ctx.now)
        for f in ("deletionTimestamp", "deletionGracePeriodSeconds", "resourceVersion", "selfLink"):
            m.pop(f, None)
        if m.get("generateName") and not m.get("name"):
            m["name"] = f"{m['generateName']}{name_suffix()}"
        if not applied:  # server-side apply recorded its own ownership
            # before preparation, as Kubernetes' field manager runs before the registry's own changes
            update_managed_fields(
                None, body, manager=self._manager(opts), api_version=self.resource.api_version,
                now=format_time(ctx.now), struct_name=self.resource.struct,
                ignore_fields=("status",) if s.has_status else (),
            )
        s.prepare_for_create(body, ctx)
        if s.uses_generation(body):
            m["generation"] = 1
        else:
            m.pop("generation", None)
        errs = FieldErrors()
        validate_object_meta(body, namespaced=self.resource.namespaced, name_validator=s.name_validator, errs=errs)
        errs.extend(s.validate(body))
        raise_invalid(self.resource, m.get("name") or "", errs)
        opts.warnings.extend(s.warnings(body, None))
        await self._admit("CREATE", m.get("namespace", ""), m.get("name", ""), body, None, opts, "")

    async def _create_once(self, body: dict[str, Any], opts: RequestOptions, *, generated: bool) -> dict[str, Any]:
        ctx = self._ctx(opts)
        await self._prepare_create(body, opts, ctx)
        m = meta(body)
        return await self._store_new(body, ctx, generated=generated, name=m["name"])

    async def _store_new(self, body: dict[str, Any], ctx: Context, *, generated: bool, name: str) -> dict[str, Any]:
        finish: Finish | None = await self.strategy.begin_create(body, ctx)
        ok = False
        try:
            if ctx.dry_run:
                ok = True
                return body
            key = self.key(meta(body).get("namespace", ""), name)
            try:
                kv = await self.storage.create(key, self._encode(body))
            except st.KeyExistsError:
                raise await self._already_exists(key, name, generated) from None
            ok = True
            return self._decode_internal(kv)
        finally:
            if finish is not None:
                await finish(ok)

    async def _already_exists(self, key: str, name: str, generated: bool) -> api.AlreadyExistsError:
        err = api.AlreadyExistsError.of(self.resource.plural, name, group=self.resource.group)
        with contextlib.suppress(st.StorageError):
            kv = await self.storage.get(key)
            if (json.loads(kv.value).get("metadata") or {}).get("deletionTimestamp"):
                err.message = f"object is being deleted: {err.message}"
                err.args = (err.message,)
        return err

    # -- update and patch -------------------------------------------------------------------------

    async def update(
        self, namespace: str, name: str, obj: dict[str, Any], opts: RequestOptions, *, subresource: str = ""
    ) -> WriteResult:
        if subresource and not self._generic_subresource(subresource):
            return await self._subresource(subresource).update(self, namespace, name, obj, opts)  # type: ignore[no-any-return]
        body = self._incoming(obj)
        m = meta(body)
        if m.get("name") and m["name"] != name:
            raise api.BadRequestError(f"the name of the object ({m['name']}) does not match the name on the URL ({name})")
        m["name"] = name
        self._set_namespace(namespace, body)

        async def replace(_existing: dict[str, Any] | None) -> dict[str, Any]:
            return json_copy(body)

        return await self.guaranteed_update(
            namespace, name, replace, opts, subresource=subresource, allow_create=self.strategy.allow_create_on_update,
            reads_current=False,
        )

    async def patch(
        self,
        namespace: str,
        name: str,
        patch_type: str,
        patch: Any,
        opts: RequestOptions,
        *,
        subresource: str = "",
    ) -> WriteResult:
        if subresource and not self._generic_subresource(subresource):
            return await self._subresource(subresource).patch(self, namespace, name, patch_type, patch, opts)  # type: ignore[no-any-return]
        apply = patch_type.startswith("application/apply-patch")
        if apply and not isinstance(patch, dict):
            raise api.BadRequestError("the body of an apply patch must be an object")
        if apply and not opts.field_manager:
            raise api.BadRequestError("fieldManager is required for apply requests")

        async def patched(existing: dict[str, Any] | None) -> dict[str, Any]:
            live = self.strategy.to_external(copy.deepcopy(existing)) if existing is not None else None
            result = self.apply_patch(live, patch_type, patch, opts, subresource=subresource)
            out = self._incoming(result)
            if existing is None:
                self._set_namespace(namespace, out)
                meta(out)["name"] = meta(out).get("name") or name
            elif meta(out).get("name") != name:
                raise api.BadRequestError(
                    f"the name of the object ({meta(out).get('name')}) does not match the name on the URL ({name})"
                )
            return out

        return await self.guaranteed_update(
            namespace, name, patched, opts, subresource=subresource, allow_create=apply and not subresource,
            patch=True, apply=apply,
        )

    def apply_patch(
        self, live: dict[str, Any] | None, patch_type: str, patch: Any, opts: RequestOptions, *,
        subresource: str = "", struct_name: str = "", api_version: str = "", kind: str = "",
    ) -> dict[str, Any]:
        """``patch`` applied to ``live`` (None only for server-side apply creating the object)."""
        struct_name = struct_name or self.resource.struct
        if patch_type.startswith("application/apply-patch"):
            return server_side_apply(
                live, patch, manager=opts.field_manager, force=opts.force, struct_name=struct_name,
                api_version=api_version or self.resource.api_version, now=format_time(self.clock()),
                kind=kind or self.resource.kind, subresource=subresource,
                ignore_fields=_ignored_fields(subresource, self.strategy.has_status) if not kind else (),
            )
        if live is None:
            raise api.InternalError("patch without an object")
        if patch_type == JSON_PATCH:
            return json_patch(live, patch)
        if patch_type == MERGE_PATCH:
            return merge_patch(live, patch)
        if patch_type == STRATEGIC_PATCH:
            return strategic_merge_patch(live, patch, struct_name)
        raise api.UnsupportedMediaTypeError(
            f"the media type {patch_type!r} is not supported for patches; supported: " + ", ".join(_PATCH_TYPES[:4])
        )

    async def guaranteed_update(
        self,
        namespace: str,
        name: str,
        transform: Transform,
        opts: RequestOptions,
        *,
        subresource: str = "",
        allow_create: bool = False,
        patch: bool = False,
        apply: bool = False,
        raw: bool = False,
        reads_current: bool = True,
    ) -> WriteResult:
        """Read, transform, check, compare-and-swap; again on a lost race. ``transform`` gets the
        current object (internal form; None when absent and ``allow_create``) and returns the new one.
        ``raw``: the transform is a subresource's own rule (binding) and replaces the strategy's
        update preparation and validation. ``reads_current=False``: the transform ignores the object
        it is given (a full replace), so it gets the stored one uncopied."""
        key = self.key(namespace, name)
        for _ in range(MAX_CAS_RETRIES):
            try:
                kv: st.KeyValue | None = await self.storage.get(key)
            except st.KeyNotFoundError:
                kv = None
            if kv is None:
                if not allow_create:
                    raise self.not_found(name)
                body = await transform(None)
                if meta(body).get("resourceVersion"):
                    raise self.not_found(name) if not apply else self.conflict(name)
                if self.resource.namespaced:
                    await self.check_namespace_accepts(namespace, name)
                ctx = self._ctx(opts)
                await self._prepare_create(body, opts, ctx, applied=apply)
                try:
                    created = await self._store_new(body, ctx, generated=False, name=name)
                except api.AlreadyExistsError:
                    continue
                return WriteResult(self.strategy.to_external(created), 201)
            existing = self._decode_internal(kv)
            new = await transform(json_copy(existing) if reads_current else existing)
            result = await self._update_existing(
                key, kv, existing, new, opts, subresource=subresource, patch=patch, apply=apply, raw=raw
            )
            if result is not None:
                return result
        raise self.conflict(name)

    async def _update_existing(
        self,
        key: str,
        kv: st.KeyValue,
        existing: dict[str, Any],
        new: dict[str, Any],
        opts: RequestOptions,
        *,
        subresource: str,
        patch: bool,
        apply: bool,
        raw: bool = False,
    ) -> WriteResult | None:
        """One CAS attempt; None when the race was lost and the loop should retry."""
        s = self.strategy
        ctx = self._ctx(opts)
        m, om = meta(new), meta(existing)
        name = om.get("name", "")
        new_rv = str(m.get("resourceVersion") or "")
        if not new_rv:
            if not (patch or s.allow_unconditional_update):
                cause = api.Cause(
                    "FieldValueInvalid", "Invalid value: 0x0: must be specified for an update", "metadata.resourceVersion"
                )
                raise api.InvalidError(
                    f'{self._qres} "{name}" is invalid: metadata.resourceVersion: {cause.message}',
                    name=name, group=self.resource.group, kind=self.resource.plural, causes=[cause],
                )
        elif new_rv != om.get("resourceVersion"):
            raise self.conflict(name)
        s.default(new)
        # system fields an update never changes
        if not m.get("uid"):
            m["uid"] = om.get("uid")
        for f in ("creationTimestamp", "deletionTimestamp", "generation"):
            if f in om:
                m[f] = om[f]
            else:
                m.pop(f, None)
        if om.get("deletionGracePeriodSeconds") is not None and m.get("deletionGracePeriodSeconds") is None:
            m["deletionGracePeriodSeconds"] = om["deletionGracePeriodSeconds"]
        if not om.get("deletionTimestamp"):
            m.pop("deletionGracePeriodSeconds", None)
        if not apply:
            update_managed_fields(
                existing, new, manager=self._manager(opts), api_version=self.resource.api_version,
                subresource=subresource, now=format_time(ctx.now), struct_name=self.resource.struct,
                ignore_fields=_ignored_fields(subresource, s.has_status),
            )
        if raw:
            pass
        elif subresource == "status":
            s.prepare_for_status_update(new, existing, ctx)
        elif subresource == "finalize":
            keep = copy.deepcopy(existing)
            finalizers = (new.get("spec") or {}).get("finalizers")
            keep.setdefault("spec", {})["finalizers"] = finalizers or []
            new = keep
            m = meta(new)
        else:
            s.prepare_for_update(new, existing, ctx)
            if s.uses_generation(new) and (
                new.get("spec") != existing.get("spec")
                or (s.generation_on_annotations and m.get("annotations") != om.get("annotations"))
            ):
                m["generation"] = int(om.get("generation") or 0) + 1
        errs = FieldErrors()
        validate_object_meta(new, namespaced=self.resource.namespaced, name_validator=s.name_validator, errs=errs)
        validate_object_meta_update(new, existing, errs=errs)
        if subresource == "status":
            errs.extend(s.validate_status_update(new, existing))
        elif not raw:
            errs.extend(s.validate_update(new, existing))
        raise_invalid(self.resource, name, errs)
        opts.warnings.extend(s.warnings(new, existing))
        if _compare_form(new, keep_managed=apply) == _compare_form(existing, keep_managed=apply):
            return WriteResult(s.to_external(existing), 200)
        await self._admit("UPDATE", om.get("namespace", ""), name, new, existing, opts, subresource)
        if om.get("deletionTimestamp") and not m.get("finalizers") and not om.get("deletionGracePeriodSeconds") \
                and s.should_delete_during_update(new, existing):
            return await self._delete_emptied(key, kv, new, ctx)
        finish = await s.begin_update(new, existing, ctx)
        ok = False
        try:
            if opts.dry_run:
                ok = True
                return WriteResult(s.to_external(new), 200)
            try:
                out = await self.storage.update(key, self._encode(new), expected_revision=kv.mod_revision)
            except (st.ConflictError, st.KeyNotFoundError):
                return None
            ok = True
            return WriteResult(self.decode(out), 200)
        finally:
            if finish is not None:
                await finish(ok)

    async def _delete_emptied(self, key: str, kv: st.KeyValue, new: dict[str, Any], ctx: Context) -> WriteResult | None:
        """The update cleared the last finalizer of an object being deleted: it goes now."""
        if not ctx.dry_run:
            try:
                await self.storage.delete(key, expected_revision=kv.mod_revision)
            except st.ConflictError:
                return None
            except st.KeyNotFoundError:
                pass
            await self.strategy.after_delete(new, ctx)
        return WriteResult(self.strategy.to_external(new), 200)

    async def delete_collection(
        self, namespace: str, options: dict[str, Any], list_opts: ListOptions, opts: RequestOptions
    ) -> WriteResult:
        listed = await self.list(namespace, list_opts)
        deleted: list[dict[str, Any]] = []
        for item in listed["items"]:
            m = item.get("metadata") or {}
            try:
                await self.delete(m.get("namespace", ""), m.get("name", ""), dict(options or {}), opts)
            except api.NotFoundError:
                continue
            deleted.append(item)
        listed["items"] = deleted
        listed["metadata"].pop("continue", None)
        return WriteResult(listed, 200)


def _ignored_fields(subresource: str, has_status: bool) -> tuple[str, ...]:
    if subresource == "status":
        return ("spec", "metadata")
    if subresource == "finalize":
        return ("metadata", "status")
    return ("status",) if has_status else ()
