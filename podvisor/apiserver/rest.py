"""The seam between the HTTP layer and the resource registry.

The HTTP layer (routing, content negotiation, authentication, watch streaming) parses a request into
plain values and calls one `ResourceStore` method; the registry layer (generic store, per-resource
strategies, storage) never sees aiohttp. Objects cross the seam as JSON-shaped dicts, already decoded
(JSON, YAML or protobuf) and already checked for unknown fields according to ``fieldValidation``.
Errors cross it as `podvisor.apiserver.errors.APIError`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from podvisor.schema.model import Resource

__all__ = ["UserInfo", "RequestOptions", "ListOptions", "WriteResult", "ResourceStore", "Registry"]


@dataclass(frozen=True, slots=True)
class UserInfo:
    """Who is asking, as authentication found it (authorization is a later seam)."""

    name: str
    groups: tuple[str, ...] = ()
    uid: str = ""


@dataclass(slots=True)
class RequestOptions:
    """Options common to writes. ``warnings`` collects `Warning: 299` header texts the handler adds."""

    user: UserInfo
    dry_run: bool = False
    field_manager: str = ""
    force: bool = False  # server-side apply ?force=true
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ListOptions:
    label_selector: str = ""
    field_selector: str = ""
    limit: int = 0
    continue_token: str = ""
    resource_version: str = ""
    resource_version_match: str = ""
    # watch only
    allow_bookmarks: bool = False
    timeout_seconds: int = 0
    send_initial_events: bool | None = None


@dataclass(frozen=True, slots=True)
class WriteResult:
    """The object written (or, for deletes, the object or a Status) and the HTTP code to answer with:
    201 for a create, 200 for an update, 200/202 for a delete (202 when deletion is pending)."""

    body: dict[str, Any]
    code: int = 200


class ResourceStore(Protocol):
    """One served resource (and its subresources). ``namespace`` is "" for cluster-scoped resources
    and for namespaced lists across all namespaces. ``subresource`` is "" for the main resource or
    ``status``, ``scale``, ``binding``, ``eviction``."""

    resource: Resource

    async def get(self, namespace: str, name: str, *, subresource: str = "") -> dict[str, Any]: ...

    async def list(self, namespace: str, opts: ListOptions) -> dict[str, Any]:
        """A ``<Kind>List`` with ``metadata.resourceVersion`` and ``metadata.continue``."""
        ...

    def watch(self, namespace: str, opts: ListOptions) -> AsyncIterator[dict[str, Any]]:
        """``{"type": ADDED|MODIFIED|DELETED|BOOKMARK|ERROR, "object": {...}}`` events. Raises
        `GoneError` (before the first event) when ``resource_version`` is older than the kept window."""
        ...

    async def create(
        self, namespace: str, obj: dict[str, Any], opts: RequestOptions, *, subresource: str = "", name: str = ""
    ) -> WriteResult:
        """POST. For subresources (``pods/binding``, ``pods/eviction``) ``name`` is the parent's."""
        ...

    async def update(
        self, namespace: str, name: str, obj: dict[str, Any], opts: RequestOptions, *, subresource: str = ""
    ) -> WriteResult:
        """PUT with optimistic concurrency; creates when the resource allows create-on-update."""
        ...

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
        """``patch_type`` is the request's Content-Type: application/json-patch+json,
        application/merge-patch+json, application/strategic-merge-patch+json or
        application/apply-patch+yaml (``patch`` is then the decoded object)."""
        ...

    async def delete(
        self, namespace: str, name: str, options: dict[str, Any], opts: RequestOptions
    ) -> WriteResult:
        """``options`` is a DeleteOptions dict (gracePeriodSeconds, propagationPolicy, preconditions)."""
        ...

    async def delete_collection(
        self, namespace: str, options: dict[str, Any], list_opts: ListOptions, opts: RequestOptions
    ) -> WriteResult: ...


class Registry(Protocol):
    """All served resources, looked up the way URLs name them."""

    def lookup(self, group: str, version: str, plural: str) -> ResourceStore | None: ...

    def stores(self) -> list[ResourceStore]: ...
