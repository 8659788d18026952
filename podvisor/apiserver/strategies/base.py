"""The strategy contract: what makes one resource different from another inside the generic store.

A strategy is a stateless value (apart from its configuration) consulted by `podvisor.apiserver.store.Store`
at fixed points of each verb, in the order Kubernetes' generic registry uses:

    create:  default → system metadata → generateName → prepare_for_create → validate → admission
             → begin_create (allocations) → storage create → finish
    update:  default → prepare_for_update (keeps status) or prepare_for_status_update (keeps spec)
             → validate_update / validate_status_update → admission → begin_update → storage CAS
    delete:  on_delete (namespaces) → grace_period (pods) → finalizers → storage delete → after_delete

Everything here works on plain JSON dicts. The defaults give the behaviour of an ordinary resource:
DNS-subdomain names, generation tracking when the object has a ``spec``, status kept apart when the
resource has a ``status`` subresource, unconditional PUTs allowed, no create-on-update.
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from podvisor.apiserver.errors import MethodNotAllowedError
from podvisor.apiserver.rest import RequestOptions, UserInfo, WriteResult
from podvisor.apiserver.validation import FieldErrors, NameValidator
from podvisor.schema.model import Resource
from podvisor.storage.interface import Storage

if TYPE_CHECKING:
    from podvisor.apiserver.store import Store

__all__ = [
    "Context",
    "Finish",
    "Strategy",
    "SubresourceHandler",
    "META_FIELDS",
    "nested",
    "set_default",
    "field_value",
]

# Finish callbacks run after the storage write: True when it succeeded, False to undo allocations.
Finish = Callable[[bool], Awaitable[None]]

META_FIELDS = ("metadata.name", "metadata.namespace")


@dataclass(slots=True)
class Context:
    """What a strategy hook may use: the storage (for allocations), the store serving the request,
    the request's user and clock reading, and whether this is a dry run."""

    storage: Storage
    store: Store
    user: UserInfo
    now: datetime
    dry_run: bool = False


def nested(obj: Any, *path: str) -> Any:
    """``obj[path[0]][path[1]]...`` or None when any step is missing or not a dict."""
    cur = obj
    for p in path:
        if not isinstance(cur, dict):
            return None
        cur = cur.get(p)
    return cur


def set_default(d: dict[str, Any], key: str, value: Any) -> Any:
    """Set ``d[key]`` when absent or None (Kubernetes' defaulting of nil pointers) and return it."""
    if d.get(key) is None:
        d[key] = copy.deepcopy(value)
    return d[key]


def field_value(value: Any) -> str:
    """A field's value as a field selector compares it: strings as is, booleans lower-case."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class SubresourceHandler:
    """A subresource with its own shape (``scale``, ``binding``, ``eviction``). ``status`` needs none:
    the store serves it with the strategy's status rules."""

    name = ""

    def _refuse(self, verb: str) -> MethodNotAllowedError:
        return MethodNotAllowedError(f"{verb} is not supported on the {self.name} subresource")

    async def get(self, store: Store, namespace: str, name: str) -> dict[str, Any]:
        raise self._refuse("get")

    async def create(
        self, store: Store, namespace: str, name: str, obj: dict[str, Any], opts: RequestOptions
    ) -> WriteResult:
        raise self._refuse("create")

    async def update(
        self, store: Store, namespace: str, name: str, obj: dict[str, Any], opts: RequestOptions
    ) -> WriteResult:
        raise self._refuse("update")

    async def patch(
        self, store: Store, namespace: str, name: str, patch_type: str, patch: Any, opts: RequestOptions
    ) -> WriteResult:
        raise self._refuse("patch")


class Strategy:
    """Generic behaviour; subclass per resource family and override what differs."""

    # validation of metadata.name: "subdomain", "label", "dns1035" or "path"
    name_validator: NameValidator = "subdomain"
    # metadata.generation: None = tracked when the object has a spec
    tracks_generation: bool | None = None
    # annotations changes bump generation too (Deployments, for their rollback annotation)
    generation_on_annotations = False
    allow_create_on_update = False
    allow_unconditional_update = True
    # a DELETE answers with the deleted object instead of a Success Status
    return_deleted_object = False
    # False for review-style resources (SelfSubjectAccessReview): create answers, nothing is kept
    stored = True
    # field selector labels beyond metadata.name and metadata.namespace
    field_labels: tuple[str, ...] = ()
    # "DeleteDependents" (background), "OrphanDependents", or "Unsupported" (no GC finalizers)
    gc_policy = "DeleteDependents"
    # where objects live, when another resource owns the storage (events.k8s.io → core events)
    storage_group: str | None = None
    storage_plural: str | None = None

    def __init__(self, resource: Resource) -> None:
        self.resource = resource
        self.has_status = any(s.name == "status" for s in resource.subresources)

    # -- conversion at the store's boundary ------------------------------------------------------

    def to_internal(self, obj: dict[str, Any]) -> dict[str, Any]:
        """An incoming object in the form it is stored in (identity except for converted groups)."""
        obj["apiVersion"] = self.resource.api_version
        obj["kind"] = self.resource.kind
        return obj

    def to_external(self, obj: dict[str, Any]) -> dict[str, Any]:
        """A stored object as this resource serves it."""
        obj["apiVersion"] = self.resource.api_version
        obj["kind"] = self.resource.kind
        return obj

    # -- defaults, preparation, validation ----------------------------------------------------------

    def default(self, obj: dict[str, Any]) -> None:
        """Scheme defaulting, applied to every incoming body and patch result."""

    def uses_generation(self, obj: dict[str, Any]) -> bool:
        if self.tracks_generation is None:
            return isinstance(obj.get("spec"), dict)
        return self.tracks_generation

    def prepare_for_create(self, obj: dict[str, Any], ctx: Context) -> None:
        """Clear what a client may not set on create (status, when kept apart)."""
        if self.has_status:
            self.reset_status(obj)

    def reset_status(self, obj: dict[str, Any]) -> None:
        obj.pop("status", None)

    def prepare_for_update(self, obj: dict[str, Any], old: dict[str, Any], ctx: Context) -> None:
        """The main endpoint never changes status when it has its own subresource."""
        if self.has_status:
            if "status" in old:
                obj["status"] = copy.deepcopy(old["status"])
            else:
                obj.pop("status", None)

    def prepare_for_status_update(self, obj: dict[str, Any], old: dict[str, Any], ctx: Context) -> None:
        """``/status`` changes only status (and free-form metadata): everything else is kept."""
        for key, value in old.items():
            if key not in ("status", "metadata"):
                obj[key] = copy.deepcopy(value)
        for key in list(obj):
            if key not in old and key not in ("status", "metadata", "apiVersion", "kind"):
                del obj[key]
        m, om = obj.setdefault("metadata", {}), old.get("metadata") or {}
        for key in ("labels", "ownerReferences"):
            if key in om:
                m[key] = copy.deepcopy(om[key])
            else:
                m.pop(key, None)

    def validate(self, obj: dict[str, Any]) -> FieldErrors:
        """Resource-specific rules on create (ObjectMeta's are checked by the store)."""
        return FieldErrors()

    def validate_update(self, obj: dict[str, Any], old: dict[str, Any]) -> FieldErrors:
        return self.validate(obj)

    def validate_status_update(self, obj: dict[str, Any], old: dict[str, Any]) -> FieldErrors:
        return FieldErrors()

    def warnings(self, obj: dict[str, Any], old: dict[str, Any] | None) -> list[str]:
        return []

    # -- selectors ----------------------------------------------------------------------------

    def fields(self, obj: dict[str, Any]) -> dict[str, str]:
        """The object's field-selector values (always metadata.name and metadata.namespace)."""
        m = obj.get("metadata") or {}
        out = {"metadata.name": str(m.get("name") or ""), "metadata.namespace": str(m.get("namespace") or "")}
        out.update(self.extra_fields(obj))
        return out

    def extra_fields(self, obj: dict[str, Any]) -> dict[str, str]:
        return {}

    def convert_field_label(self, label: str) -> str:
        """The stored name of a field label this resource accepts (events.k8s.io renames a few)."""
        return label

    # -- deletion -----------------------------------------------------------------------------

    def grace_period(self, obj: dict[str, Any], requested: int | None) -> int | None:
        """None: not gracefully deleted. Otherwise the grace period to wait (0 = delete now)."""
        return None

    def on_delete(self, obj: dict[str, Any], ctx: Context) -> bool:
        """Before the generic delete. Return True to stop there: the (possibly changed) object is
        written and answered as pending (namespaces: mark Terminating)."""
        return False

    def should_delete_during_update(self, obj: dict[str, Any], old: dict[str, Any]) -> bool:
        """Extra condition for removing an object whose last finalizer an update cleared."""
        return True

    # -- hooks with I/O -----------------------------------------------------------------------

    async def begin_create(self, obj: dict[str, Any], ctx: Context) -> Finish | None:
        """Allocate what the object needs before it is stored (Service IPs and ports)."""
        return None

    async def begin_update(self, obj: dict[str, Any], old: dict[str, Any], ctx: Context) -> Finish | None:
        return None

    async def after_delete(self, obj: dict[str, Any], ctx: Context) -> None:
        """Release what the object held once it is gone from storage."""

    def subresource_handlers(self) -> dict[str, SubresourceHandler]:
        return {}

    async def create_unstored(self, obj: dict[str, Any], ctx: Context) -> dict[str, Any]:
        """For ``stored = False`` resources: the answer to a create."""
        raise NotImplementedError
