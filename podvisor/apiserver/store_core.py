"""The parts of the generic store every verb shares: keys, the codec, error wording, admission.

Keys are ``/registry/<group or core>/<plural>/<namespace>/<name>`` (no namespace segment for
cluster-scoped resources). Values are the object's JSON without ``resourceVersion``: the version is
always the storage ``mod_revision``, stamped on every read, never trusted from the stored bytes.
Objects are handled in their *internal* (stored) form and converted by the strategy at the edge, which
lets events.k8s.io serve the objects stored as core events.
"""

from __future__ import annotations

import copy
import json
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from podvisor.apiserver import errors as api
from podvisor.apiserver.meta import Clock, meta, utc_now
from podvisor.apiserver.rest import RequestOptions, UserInfo
from podvisor.apiserver.strategies.base import Context, Strategy
from podvisor.apiserver.validation import qualified_resource
from podvisor.schema.model import Resource
from podvisor.storage import interface as st

if TYPE_CHECKING:
    from podvisor.apiserver.store import Store

__all__ = [
    "StoreCore",
    "AdmissionRequest",
    "AdmissionPlugin",
    "TooLargeResourceVersionError",
    "object_key",
    "int_option",
    "parse_rv",
    "json_copy",
]


class TooLargeResourceVersionError(api.APIError):
    """504: a resourceVersion newer than anything stored was asked for."""

    code = 504
    reason = "Timeout"


@dataclass(slots=True)
class AdmissionRequest:
    """What an admission plugin sees. ``obj`` may be changed in place (mutating plugins); raise an
    `APIError` (usually Forbidden or Invalid) to refuse."""

    operation: str  # CREATE, UPDATE, DELETE
    resource: Resource
    subresource: str
    namespace: str
    name: str
    obj: dict[str, Any] | None
    old: dict[str, Any] | None
    user: UserInfo
    dry_run: bool


AdmissionPlugin = Callable[[AdmissionRequest], Awaitable[None]]


def object_key(group: str, plural: str, namespace: str, name: str) -> str:
    g = group or "core"
    return f"/registry/{g}/{plural}/{namespace}/{name}" if namespace else f"/registry/{g}/{plural}/{name}"


def int_option(options: dict[str, Any], key: str) -> int | None:
    value = options.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            return int(value)
        except (TypeError, ValueError):
            raise api.BadRequestError(f"invalid {key}: {value!r}") from None
    return value


_ATOMS = (str, int, float, bool, type(None))


def json_copy(value: Any) -> Any:
    """A deep copy of a JSON-shaped value (dicts, lists, strings, numbers, booleans, null), a few
    times faster than `copy.deepcopy`, which every write pays more than once. Values of any other
    type inside are deep-copied the usual way. Unlike `copy.deepcopy`, a sub-object that appears
    twice is copied twice."""
    kind = type(value)
    if kind is dict:
        return {k: json_copy(v) for k, v in value.items()}
    if kind is list:
        return [json_copy(v) for v in value]
    if kind in _ATOMS:
        return value
    return copy.deepcopy(value)


def parse_rv(rv: str) -> int:
    try:
        number = int(rv)
    except ValueError:
        raise api.BadRequestError(f'invalid resource version: resource version "{rv}" is not a valid number') from None
    if number < 0:
        raise api.BadRequestError(f'invalid resource version: resource version "{rv}" is not a valid number')
    return number


class StoreCore:
    """State and helpers every verb shares: keys, the codec, error wording, admission."""

    def __init__(
        self,
        resource: Resource,
        strategy: Strategy,
        storage: st.Storage,
        *,
        admission: Sequence[AdmissionPlugin] = (),
        clock: Clock = utc_now,
        bookmark_interval: float = 60.0,
        indexed_fields: frozenset[str] = frozenset(),
    ) -> None:
        self.resource = resource
        self.strategy = strategy
        self.storage = storage
        self.admission = list(admission)
        self.clock = clock
        self.bookmark_interval = bookmark_interval
        self.indexed_fields = indexed_fields
        self._group = strategy.storage_group if strategy.storage_group is not None else resource.group
        self._plural = strategy.storage_plural or resource.plural
        self._qres = qualified_resource(resource)
        self._subresources = strategy.subresource_handlers()
        self._event_cache: OrderedDict[tuple[str, int, int], dict[str, Any]] = OrderedDict()

    # -- keys and codec ---------------------------------------------------------------------------

    def key(self, namespace: str, name: str) -> str:
        return object_key(self._group, self._plural, namespace if self.resource.namespaced else "", name)

    def prefix(self, namespace: str) -> str:
        base = f"/registry/{self._group or 'core'}/{self._plural}/"
        return f"{base}{namespace}/" if self.resource.namespaced and namespace else base

    def decode(self, kv: st.KeyValue) -> dict[str, Any]:
        try:
            obj = json.loads(kv.value)
        except ValueError as exc:
            raise api.InternalError(f"stored object at {kv.key} is not JSON: {exc}") from None
        meta(obj)["resourceVersion"] = str(kv.mod_revision)
        return self.strategy.to_external(obj)

    def _decode_internal(self, kv: st.KeyValue) -> dict[str, Any]:
        obj = json.loads(kv.value)
        meta(obj)["resourceVersion"] = str(kv.mod_revision)
        return obj  # type: ignore[no-any-return]

    def _encode(self, obj: dict[str, Any]) -> bytes:
        out = dict(obj)
        m = dict(out.get("metadata") or {})
        m.pop("resourceVersion", None)
        out["metadata"] = m
        return json.dumps(out, separators=(",", ":"), ensure_ascii=False).encode()

    def _incoming(self, obj: Any) -> dict[str, Any]:
        if not isinstance(obj, dict):
            raise api.BadRequestError(f"the body of the request was not a {self.resource.kind} object")
        body = json_copy(obj)
        if not isinstance(body.get("metadata"), dict):
            body["metadata"] = {}
        return self.strategy.to_internal(body)

    def _ctx(self, opts: RequestOptions) -> Context:
        return Context(storage=self.storage, store=cast("Store", self), user=opts.user, now=self.clock(), dry_run=opts.dry_run)

    def _manager(self, opts: RequestOptions) -> str:
        return opts.field_manager or "unknown"

    def not_found(self, name: str) -> api.NotFoundError:
        return api.NotFoundError.of(self.resource.plural, name, group=self.resource.group)

    def conflict(self, name: str, detail: str = "") -> api.ConflictError:
        if not detail:
            return api.ConflictError.stale(self.resource.plural, name, group=self.resource.group)
        return api.ConflictError(
            f'Operation cannot be fulfilled on {self._qres} "{name}": {detail}',
            name=name,
            group=self.resource.group,
            kind=self.resource.plural,
        )

    def _subresource(self, subresource: str) -> Any:
        handler = self._subresources.get(subresource)
        if handler is None:
            raise api.NotFoundError("the server could not find the requested resource")
        return handler

    async def _admit(self, op: str, ns: str, name: str, obj: Any, old: Any, opts: RequestOptions, sub: str) -> None:
        for plugin in self.admission:
            await plugin(AdmissionRequest(op, self.resource, sub, ns, name, obj, old, opts.user, opts.dry_run))

    # -- get --------------------------------------------------------------------------------------

    async def read(self, namespace: str, name: str) -> tuple[dict[str, Any], st.KeyValue]:
        """The stored object in its internal form, with its key-value (for CAS)."""
        try:
            kv = await self.storage.get(self.key(namespace, name))
        except st.KeyNotFoundError:
            raise self.not_found(name) from None
        return self._decode_internal(kv), kv

    async def get(self, namespace: str, name: str, *, subresource: str = "") -> dict[str, Any]:
        if subresource and not (subresource == "status" and self.strategy.has_status):
            return await self._subresource(subresource).get(self, namespace, name)  # type: ignore[no-any-return]
        obj, _ = await self.read(namespace, name)
        return self.strategy.to_external(obj)
