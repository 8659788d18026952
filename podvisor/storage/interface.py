"""The storage contract: one narrow async key-value interface with a single revision counter.

Every engine (SQLite embedded, etcd for scale-out) and the watch cache in front of them implement
`Storage`. Keys are strings such as ``/registry/core/configmaps/default/c1``; values are opaque bytes
(the API server stores JSON). Every successful write bumps one global revision counter by exactly one,
and that revision is the object's resourceVersion. Writes are compare-and-swap on the key's
``mod_revision``; callers build the Kubernetes ``GuaranteedUpdate`` retry loop on top.

Errors come in one layer here (`StorageError` subclasses); the API server translates them per verb
into Kubernetes API errors (NotFound, AlreadyExists, Conflict, Expired/410).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, runtime_checkable

__all__ = [
    "KeyValue",
    "ListResult",
    "EventType",
    "WatchEvent",
    "Storage",
    "StorageError",
    "KeyNotFoundError",
    "KeyExistsError",
    "ConflictError",
    "RevisionCompactedError",
    "UnavailableError",
]


@dataclass(frozen=True, slots=True)
class KeyValue:
    """One stored value. ``mod_revision`` is the revision of the last write to the key;
    ``create_revision`` the revision that created it (reset when a key is deleted and made again)."""

    key: str
    value: bytes
    create_revision: int
    mod_revision: int


@dataclass(frozen=True, slots=True)
class ListResult:
    """A consistent page of a prefix. ``revision`` is the store revision the page was read at;
    ``more`` says keys after the last returned one exist (for `limit`/`continue`)."""

    items: list[KeyValue]
    revision: int
    more: bool


class EventType(StrEnum):
    PUT = "PUT"  # create or update; `prev` tells which (None = created)
    DELETE = "DELETE"


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """A change. For PUT, ``kv`` is the new value and ``prev`` the previous one (None on create).
    For DELETE, ``kv`` carries the deleted key with the last value and ``mod_revision`` set to the
    deleting revision; ``prev`` is the value before deletion. ``revision`` is the event's revision."""

    type: EventType
    kv: KeyValue
    prev: KeyValue | None
    revision: int


class StorageError(Exception):
    """Base of every storage failure."""

    def __init__(self, key: str, message: str = "") -> None:
        super().__init__(message or f"{type(self).__name__}: {key}")
        self.key = key


class KeyNotFoundError(StorageError):
    pass


class KeyExistsError(StorageError):
    pass


class ConflictError(StorageError):
    """The compare-and-swap failed: the key's current mod_revision is not the expected one
    (or the key vanished). ``current`` is the value found, if any, so callers can retry."""

    def __init__(self, key: str, current: KeyValue | None) -> None:
        super().__init__(key, f"conflict on {key}")
        self.current = current


class RevisionCompactedError(StorageError):
    """A watch or list asked for a revision older than the kept window (Kubernetes answers 410 Gone)."""

    def __init__(self, key: str, requested: int, oldest: int) -> None:
        super().__init__(key, f"revision {requested} is compacted (oldest kept {oldest})")
        self.requested = requested
        self.oldest = oldest


class UnavailableError(StorageError):
    """The engine cannot serve right now (closed, etcd unreachable)."""


@runtime_checkable
class Storage(Protocol):
    """The engine interface. All methods are safe to call concurrently from one event loop."""

    async def get(self, key: str) -> KeyValue:
        """The current value; `KeyNotFoundError` if absent."""
        ...

    async def list(
        self, prefix: str, *, start_after: str | None = None, limit: int = 0, revision: int = 0
    ) -> ListResult:
        """Keys with ``prefix`` in key order, after ``start_after`` (exclusive), at most ``limit``
        (0 = all). ``revision`` 0 reads the latest; otherwise reads the state as of that revision
        (`RevisionCompactedError` if no longer kept)."""
        ...

    async def create(self, key: str, value: bytes) -> KeyValue:
        """Create; `KeyExistsError` if present. Returns the stored value with its new revision."""
        ...

    async def update(self, key: str, value: bytes, *, expected_revision: int) -> KeyValue:
        """Replace if the key's mod_revision equals ``expected_revision``, else `ConflictError`
        (`KeyNotFoundError` if absent)."""
        ...

    async def delete(self, key: str, *, expected_revision: int = 0) -> KeyValue:
        """Delete (if ``expected_revision`` is non-zero, only when it matches, else `ConflictError`).
        Returns the deleted value with ``mod_revision`` = the deleting revision."""
        ...

    def watch(self, prefix: str, *, from_revision: int) -> AsyncIterator[WatchEvent]:
        """Events for keys with ``prefix`` with revision > ``from_revision``, in order, then live
        ones until the iterator is closed. `RevisionCompactedError` (raised on first iteration) if
        events after ``from_revision`` are no longer kept."""
        ...

    async def current_revision(self) -> int:
        """The latest revision of the store (0 for an empty new store)."""
        ...

    async def count(self, prefix: str) -> int:
        ...

    async def close(self) -> None:
        ...
