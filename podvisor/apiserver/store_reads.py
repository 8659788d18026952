"""The read side of the generic store: lists and watches with selectors, pages and bookmarks.

Lists read one consistent revision: a paged list hands out an opaque ``continue`` token naming that
revision and the last key, so every page comes from the same snapshot (410 once history no longer reaches
it). ``resourceVersion``/``resourceVersionMatch`` follow Kubernetes: unset is a consistent read of the
latest, ``Exact`` (or a legacy paged list with a version) reads that revision, ``NotOlderThan``/``0``
serve the latest. A plain JSON list without selectors can skip decoding and re-encoding every object
(`StoreReads.list_json`): the stored bytes pass through with their ``resourceVersion`` spliced in.

Watches from ``resourceVersion`` N stream changes after N; with "" or "0" they first send the current
objects as synthetic ADDED events. Selector transitions are translated as Kubernetes' cacher does: an
object that stops matching is DELETED (its previous state, at the event's revision), one that starts
matching is ADDED. Bookmarks carry the newest revision the watch has seen through; an initial-events-end
bookmark ends the replay of ``sendInitialEvents``. From the watch cache, a watch drains every event a
write brought before it waits again, so the stream writes them in one go.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any, TypeVar

from podvisor.apiserver import errors as api
from podvisor.apiserver.meta import decode_continue, encode_continue, meta
from podvisor.apiserver.rest import ListOptions
from podvisor.apiserver.selectors import (
    FieldSelector,
    LabelSelector,
    parse_field_selector,
    parse_label_selector,
)
from podvisor.apiserver.store_core import StoreCore, TooLargeResourceVersionError, parse_rv
from podvisor.apiserver.strategies.base import Strategy
from podvisor.storage import interface as st

__all__ = ["StoreReads", "INITIAL_EVENTS_END"]

INITIAL_EVENTS_END = "k8s.io/initial-events-end"
_CONTINUE_EXPIRED = (
    "The provided continue parameter is too old to display a consistent list result. You can start a new "
    "list without the continue parameter."
)


# module-level alias: inside the class ``list`` is the list verb
_Events = list[dict[str, Any]]
_T = TypeVar("_T")
_Items = list[_T]


class StoreReads(StoreCore):
    """The LIST and WATCH verbs."""

    # -- list -------------------------------------------------------------------------------------

    def selectors(self, opts: ListOptions) -> tuple[LabelSelector, FieldSelector]:
        labels = parse_label_selector(opts.label_selector)
        fields = parse_field_selector(opts.field_selector)
        allowed = {"metadata.name", "metadata.namespace", *self.strategy.field_labels}
        converted = []
        for req in fields.requirements:
            name = self.strategy.convert_field_label(req.field)
            if name not in allowed:
                if self.resource.group:
                    raise api.BadRequestError(
                        f'"{req.field}" is not a known field selector: only "metadata.name", "metadata.namespace"'
                    )
                raise api.BadRequestError(f"field label not supported: {req.field}")
            converted.append(type(req)(name, req.op, req.value))
        return labels, FieldSelector(tuple(converted))

    def matches(self, obj: dict[str, Any], labels: LabelSelector, fields: FieldSelector) -> bool:
        if not labels.empty():
            lab = (obj.get("metadata") or {}).get("labels") or {}
            if not labels.matches({str(k): str(v) for k, v in lab.items()}):
                return False
        return fields.empty() or fields.matches(self.strategy.fields(obj))

    def _narrow(self, namespace: str, fields: FieldSelector) -> str:
        if self.resource.namespaced and not namespace:
            namespace = fields.exact("metadata.namespace") or ""
        return namespace

    async def list(self, namespace: str, opts: ListOptions) -> dict[str, Any]:
        labels, fields = self.selectors(opts)
        filtering = not labels.empty() or not fields.empty()

        def keep(kv: st.KeyValue) -> dict[str, Any] | None:
            obj = self._decode_internal(kv)
            if filtering and not self.matches(obj, labels, fields):
                return None
            return self.strategy.to_external(obj)

        items, list_meta = await self._collect(namespace, opts, fields, filtering, keep)
        return {
            "kind": f"{self.resource.kind}List",
            "apiVersion": self.resource.api_version,
            "metadata": list_meta,
            "items": items,
        }

    async def list_json(self, namespace: str, opts: ListOptions) -> bytes | None:
        """`list`, already encoded as compact JSON, or None when this list needs its objects decoded
        (selectors to match, or a strategy that converts stored objects).

        Decoding every stored object only to encode it again is most of a list's cost. The stored
        bytes already are the object as served, less its ``resourceVersion``: when their layout
        shows ``apiVersion``/``kind`` as served and ``metadata`` at the top level (see `_spliceable`),
        the version is spliced into ``metadata`` and the bytes pass through. Any other item is
        decoded and encoded as `list` would. Only the order of keys can differ from `list`'s."""
        if type(self.strategy).to_external is not Strategy.to_external or type(self).list is not StoreReads.list:
            return None
        labels, fields = self.selectors(opts)
        if not labels.empty() or not fields.empty():
            return None
        av, kind = _json_str(self.resource.api_version), _json_str(self.resource.kind)
        heads = (
            b'{"apiVersion":' + av + b',"kind":' + kind + b',"metadata":{',
            b'{"kind":' + kind + b',"apiVersion":' + av + b',"metadata":{',
        )
        tail = b',"apiVersion":' + av + b',"kind":' + kind + b"}"

        def keep(kv: st.KeyValue) -> bytes:
            value = kv.value
            head = _spliceable(value, heads, tail)
            if head:
                version = b'"resourceVersion":"%d"' % kv.mod_revision
                rest = value[head:]
                return b"".join((value[:head], version, rest if rest[:1] == b"}" else b"," + rest))
            return _compact(self.strategy.to_external(self._decode_internal(kv))).encode()

        items, list_meta = await self._collect(namespace, opts, fields, False, keep)
        envelope = _compact({"kind": f"{self.resource.kind}List", "apiVersion": self.resource.api_version,
                             "metadata": list_meta})
        return b"".join((envelope[:-1].encode(), b',"items":[', b",".join(items), b"]}"))

    async def _collect(
        self, namespace: str, opts: ListOptions, fields: FieldSelector, filtering: bool,
        keep: Callable[[st.KeyValue], _T | None],
    ) -> tuple[_Items[_T], dict[str, Any]]:
        """The items of a list (``keep`` turns each stored key-value into one, or None to skip it)
        and the list's metadata: one revision, pages of at most ``limit``, a ``continue`` token."""
        namespace = self._narrow(namespace, fields)
        prefix = self.prefix(namespace)
        revision, start_after = self._list_start(opts, prefix)
        if not revision and opts.resource_version not in ("", "0") and not opts.continue_token:
            # "not older than": the latest state serves, unless it is older than what was asked
            wanted = parse_rv(opts.resource_version)
            current = await self.storage.current_revision()
            if wanted > current:
                raise _too_large(wanted, current)
        limit = max(opts.limit, 0)
        items: _Items[_T] = []
        last_key = ""
        more = False
        while True:
            fetch = 0 if not limit else (max(limit * 2, 256) if filtering else limit - len(items))
            try:
                page = await self.storage.list(prefix, start_after=start_after, limit=fetch, revision=revision)
            except st.RevisionCompactedError as exc:
                if opts.continue_token:
                    raise api.GoneError(_CONTINUE_EXPIRED) from None
                raise api.GoneError(f"too old resource version: {revision} ({exc.oldest})") from None
            except st.StorageError as exc:
                if revision:
                    current = await self.storage.current_revision()
                    if revision > current:
                        raise _too_large(revision, current) from None
                raise api.InternalError(str(exc)) from None
            revision = page.revision
            for i, kv in enumerate(page.items):
                item = keep(kv)
                if item is None:
                    continue
                items.append(item)
                if limit and len(items) >= limit:
                    last_key = kv.key
                    more = i < len(page.items) - 1 or page.more
                    break
            if (limit and len(items) >= limit) or not page.more or not page.items:
                break
            start_after = page.items[-1].key
        list_meta: dict[str, Any] = {"resourceVersion": str(revision)}
        if more and last_key:
            list_meta["continue"] = encode_continue(revision, last_key[len(prefix):])
        return items, list_meta

    def _list_start(self, opts: ListOptions, prefix: str) -> tuple[int, str | None]:
        rv, match = opts.resource_version, opts.resource_version_match
        if opts.continue_token:
            if rv and rv != "0":
                raise api.BadRequestError("specifying resource version is not allowed when using continue")
            revision, start = decode_continue(opts.continue_token)
            return revision, prefix + start
        if match and not rv:
            raise _list_options_invalid(
                "resourceVersionMatch", "Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided"
            )
        if match not in ("", "Exact", "NotOlderThan"):
            raise _list_options_invalid(
                "resourceVersionMatch", f'Unsupported value: "{match}": supported values: "Exact", "NotOlderThan"'
            )
        number = parse_rv(rv) if rv else 0
        if match == "Exact":
            if number == 0:
                raise _list_options_invalid(
                    "resourceVersionMatch", 'Forbidden: resourceVersionMatch "exact" is forbidden for resourceVersion "0"'
                )
            return number, None
        if not match and number and opts.limit > 0:
            return number, None  # legacy: a paged list at an explicit resourceVersion is exact
        return 0, None

    # -- watch ------------------------------------------------------------------------------------

    def watch(self, namespace: str, opts: ListOptions) -> AsyncIterator[dict[str, Any]]:
        labels, fields = self.selectors(opts)
        namespace = self._narrow(namespace, fields)
        rv = opts.resource_version
        if rv and rv != "0":
            parse_rv(rv)
        return self._watch(self.prefix(namespace), labels, fields, opts)

    def _bookmark(self, revision: int, *, initial_end: bool = False) -> dict[str, Any]:
        m: dict[str, Any] = {"resourceVersion": str(revision)}
        if initial_end:
            m["annotations"] = {INITIAL_EVENTS_END: "true"}
        obj = self.strategy.to_external({"metadata": m})
        return {"type": "BOOKMARK", "object": obj}

    def _event_object(self, kv: st.KeyValue, revision: int | None = None) -> dict[str, Any]:
        """Decoded once per (key, revision) and shared between watchers: never mutated."""
        rev = revision if revision is not None else kv.mod_revision
        ck = (kv.key, kv.mod_revision, rev)
        hit = self._event_cache.get(ck)
        if hit is not None:
            self._event_cache.move_to_end(ck)
            return hit
        obj = json.loads(kv.value)
        meta(obj)["resourceVersion"] = str(rev)
        self._event_cache[ck] = obj
        if len(self._event_cache) > 2048:
            self._event_cache.popitem(last=False)
        return obj

    def _translate(self, ev: st.WatchEvent, labels: LabelSelector, fields: FieldSelector) -> dict[str, Any] | None:
        filtering = not labels.empty() or not fields.empty()
        if ev.type == st.EventType.DELETE:
            obj = self._event_object(ev.kv)
            if filtering and not self.matches(obj, labels, fields):
                return None
            return {"type": "DELETED", "object": self.strategy.to_external(obj)}
        obj = self._event_object(ev.kv)
        now = not filtering or self.matches(obj, labels, fields)
        if ev.prev is None:
            return {"type": "ADDED", "object": self.strategy.to_external(obj)} if now else None
        before = not filtering or self.matches(self._event_object(ev.prev), labels, fields)
        if now:
            return {"type": "MODIFIED" if before else "ADDED", "object": self.strategy.to_external(obj)}
        if before:
            return {"type": "DELETED", "object": self.strategy.to_external(self._event_object(ev.prev, ev.revision))}
        return None

    async def _initial(
        self, prefix: str, labels: LabelSelector, fields: FieldSelector
    ) -> tuple[_Events, int]:
        events: _Events = []
        start_after: str | None = None
        revision = 0
        while True:
            page = await self.storage.list(prefix, start_after=start_after, limit=1000, revision=revision)
            revision = page.revision
            for kv in page.items:
                obj = self._event_object(kv)
                if self.matches(obj, labels, fields):
                    events.append({"type": "ADDED", "object": self.strategy.to_external(obj)})
            if not page.more or not page.items:
                return events, revision
            start_after = page.items[-1].key

    def _storage_watch(self, prefix: str, start: int, fields: FieldSelector) -> AsyncIterator[st.WatchEvent]:
        for name in self.indexed_fields:
            value = fields.exact(name)
            if value is not None:
                return self.storage.watch(prefix, from_revision=start, index=(name, value))  # type: ignore[call-arg]
        return self.storage.watch(prefix, from_revision=start)

    async def _watch(
        self, prefix: str, labels: LabelSelector, fields: FieldSelector, opts: ListOptions
    ) -> AsyncIterator[dict[str, Any]]:
        rv = opts.resource_version
        send_initial = opts.send_initial_events
        if send_initial is True or (rv in ("", "0") and send_initial is None):
            initial, start = await self._initial(prefix, labels, fields)
            for added in initial:
                yield added
            if send_initial is True and opts.allow_bookmarks:
                yield self._bookmark(start, initial_end=True)
        elif rv in ("", "0"):
            start = await self.storage.current_revision()
        else:
            start = parse_rv(rv)
        deadline = time.monotonic() + opts.timeout_seconds if opts.timeout_seconds > 0 else None
        interval = self.bookmark_interval if opts.allow_bookmarks else None
        next_bookmark = time.monotonic() + interval if interval else None
        progress = start
        source = self._storage_watch(prefix, start, fields)
        nowait = getattr(source, "next_nowait", None)
        wait = getattr(source, "wait", None)
        try:
            if nowait is not None and wait is not None:
                # The watch cache's cursor: drain whatever is ready without awaiting, so a burst of
                # events reaches the stream in one step (one write), and wait only when it is empty.
                while True:
                    try:
                        ev = nowait()
                    except StopAsyncIteration:
                        return
                    except st.RevisionCompactedError as exc:
                        raise api.GoneError(f"too old resource version: {exc.requested} ({exc.oldest})") from None
                    if ev is not None:
                        progress = max(progress, ev.revision)
                        out = self._translate(ev, labels, fields)
                        if out is not None:
                            yield out
                        continue
                    now = time.monotonic()
                    if deadline is not None and now >= deadline:
                        return
                    if next_bookmark is not None and interval and now >= next_bookmark:
                        next_bookmark = now + interval
                        progress = max(progress, _progress_of(source))
                        yield self._bookmark(progress)
                    waits = [t - now for t in (deadline, next_bookmark) if t is not None]
                    await wait(max(min(waits), 0) if waits else None)
            else:
                inner = self._watch_iter(source, labels, fields, deadline, interval, next_bookmark, progress)
                async with contextlib.aclosing(inner):
                    async for out in inner:
                        yield out
        finally:
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    async def _watch_iter(
        self, source: AsyncIterator[st.WatchEvent], labels: LabelSelector, fields: FieldSelector,
        deadline: float | None, interval: float | None, next_bookmark: float | None, progress: int,
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Any engine's watch iterator, each event awaited in a task so timeouts never cancel it."""
        it = source.__aiter__()
        pending: asyncio.Future[st.WatchEvent] | None = None
        try:
            while True:
                if pending is None:
                    pending = asyncio.ensure_future(it.__anext__())
                now = time.monotonic()
                waits = [t - now for t in (deadline, next_bookmark) if t is not None]
                timeout = max(min(waits), 0) if waits else None
                done, _ = await asyncio.wait({pending}, timeout=timeout)
                if pending in done:
                    task, pending = pending, None
                    try:
                        ev = task.result()
                    except StopAsyncIteration:
                        return
                    except st.RevisionCompactedError as exc:
                        raise api.GoneError(f"too old resource version: {exc.requested} ({exc.oldest})") from None
                    progress = max(progress, ev.revision)
                    out = self._translate(ev, labels, fields)
                    if out is not None:
                        yield out
                    continue
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    return
                if next_bookmark is not None and interval and now >= next_bookmark:
                    next_bookmark = now + interval
                    progress = max(progress, _progress_of(source))
                    yield self._bookmark(progress)
        finally:
            if pending is not None:
                pending.cancel()
                with contextlib.suppress(BaseException):
                    await pending


def _progress_of(source: object) -> int:
    """The revision through which a storage watch has seen everything (0 when it cannot tell)."""
    progress = getattr(source, "progress_revision", None)
    if callable(progress):
        progress = progress()
    return int(progress or 0)


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _json_str(text: str) -> bytes:
    return _compact(text).encode()


def _spliceable(value: bytes, heads: tuple[bytes, ...], tail: bytes) -> int:
    """Where ``resourceVersion`` goes into this stored object (just inside its ``metadata``), or 0
    when it cannot be placed without decoding. Stored objects are compact JSON, so a value that
    opens with ``{"apiVersion":..,"kind":..,"metadata":{`` (or kind first: a body that named them
    first) or opens with ``{"metadata":{`` and ends with ``,"apiVersion":..,"kind":..}`` (a body
    that left them to the server, which appends them) has them at the top level, as served. A value
    that holds ``"resourceVersion"`` anywhere is decoded instead (the decoded path replaces it)."""
    if b'"resourceVersion"' in value:
        return 0
    for head in heads:
        if value.startswith(head):
            return len(head)
    if value.startswith(_METADATA_FIRST) and value.endswith(tail):
        return len(_METADATA_FIRST)
    return 0


_METADATA_FIRST = b'{"metadata":{'


def _too_large(wanted: int, current: int) -> TooLargeResourceVersionError:
    return TooLargeResourceVersionError(
        f"Too large resource version: {wanted}, current: {current}",
        causes=[api.Cause("ResourceVersionTooLarge", "Too large resource version")],
        retry_after=1,
    )


def _list_options_invalid(field: str, message: str) -> api.InvalidError:
    return api.InvalidError(
        f'ListOptions.meta.k8s.io "" is invalid: {field}: {message}',
        group="meta.k8s.io",
        kind="ListOptions",
        causes=[api.Cause("FieldValueInvalid" if "Invalid" in message else "FieldValueForbidden", message, field)],
    )
