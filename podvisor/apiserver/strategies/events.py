"""Events, served twice as Kubernetes serves them: core ``v1`` and ``events.k8s.io/v1``.

Both versions are one set of stored objects (core v1 shape, under the core key space), so an event
written through either API is listed by both, as ``kubectl get events`` and ``kubectl events`` expect.
events.k8s.io renames fields (``regarding`` for ``involvedObject``, ``note`` for ``message``,
``reportingController`` for ``reportingComponent``, ``deprecated*`` for the old counters); the conversion
happens at the store's boundary. Field selectors follow the core names; the events.k8s.io spellings of
the same fields are accepted too.
"""

from __future__ import annotations

from typing import Any

from podvisor.apiserver.strategies.base import Strategy, field_value
from podvisor.apiserver.validation import FieldErrors

__all__ = ["EventStrategy", "EventsV1Strategy", "to_events_v1", "to_core_event"]

_INVOLVED = ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath")

# core name -> events.k8s.io name
_RENAMES = {
    "involvedObject": "regarding",
    "message": "note",
    "reportingComponent": "reportingController",
    "source": "deprecatedSource",
    "firstTimestamp": "deprecatedFirstTimestamp",
    "lastTimestamp": "deprecatedLastTimestamp",
    "count": "deprecatedCount",
}
_BACK = {v: k for k, v in _RENAMES.items()}


def to_events_v1(obj: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in obj.items():
        out[_RENAMES.get(key, key)] = value
    out["apiVersion"] = "events.k8s.io/v1"
    out["kind"] = "Event"
    return out


def to_core_event(obj: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in obj.items():
        out[_BACK.get(key, key)] = value
    out["apiVersion"] = "v1"
    out["kind"] = "Event"
    return out


class EventStrategy(Strategy):
    tracks_generation = False
    allow_create_on_update = True
    gc_policy = "Unsupported"
    field_labels = (
        *(f"involvedObject.{f}" for f in _INVOLVED),
        "reason",
        "reportingComponent",
        "source",
        "type",
    )

    def validate(self, obj: dict[str, Any]) -> FieldErrors:
        errs = FieldErrors()
        ns = (obj.get("metadata") or {}).get("namespace") or ""
        involved = obj.get("involvedObject")
        if not isinstance(involved, dict):
            errs.required("involvedObject")
            return errs
        ino = involved.get("namespace") or ""
        if ino and ino != ns:
            errs.invalid("involvedObject.namespace", ino, "does not match event.namespace")
        etype = obj.get("type")
        if etype and etype not in ("Normal", "Warning"):
            errs.not_supported("type", etype, ("Normal", "Warning"))
        return errs

    def extra_fields(self, obj: dict[str, Any]) -> dict[str, str]:
        involved = obj.get("involvedObject") or {}
        out = {f"involvedObject.{f}": field_value(involved.get(f)) for f in _INVOLVED}
        out["reason"] = field_value(obj.get("reason"))
        out["reportingComponent"] = field_value(obj.get("reportingComponent"))
        out["source"] = field_value((obj.get("source") or {}).get("component"))
        out["type"] = field_value(obj.get("type"))
        return out


class EventsV1Strategy(EventStrategy):
    """events.k8s.io/v1: the same objects as core events, converted at the edge."""

    storage_group = ""
    storage_plural = "events"

    def to_internal(self, obj: dict[str, Any]) -> dict[str, Any]:
        return to_core_event(obj)

    def to_external(self, obj: dict[str, Any]) -> dict[str, Any]:
        return to_events_v1(obj)

    def convert_field_label(self, label: str) -> str:
        if label.startswith("regarding."):
            return "involvedObject." + label.removeprefix("regarding.")
        if label == "reportingController":
            return "reportingComponent"
        if label == "deprecatedSource":
            return "source"
        return label
