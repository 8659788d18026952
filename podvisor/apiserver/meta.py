"""Object metadata helpers shared by the store, the strategies and the table printer.

Objects cross the registry as JSON-shaped dicts. These helpers read and write the ``metadata`` block
without each caller re-checking for missing keys, and produce the few system values Kubernetes stamps
on objects: UIDs, RFC 3339 timestamps at second precision with a ``Z`` suffix, and the random
five-character suffixes of ``generateName``. Time is taken from an injectable clock so tests can move it.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import posixpath
import secrets
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from podvisor.apiserver.errors import BadRequestError

__all__ = [
    "Clock",
    "utc_now",
    "format_time",
    "parse_time",
    "new_uid",
    "name_suffix",
    "meta",
    "deep_copy",
    "labels_of",
    "annotations_of",
    "finalizers_of",
    "is_terminating",
    "add_seconds",
    "encode_continue",
    "decode_continue",
]

Clock = Callable[[], datetime]

# Kubernetes' random name alphabet: lower-case consonants and digits that cannot spell words
# or be confused with each other (no vowels, no 0/1/3).
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def utc_now() -> datetime:
    return datetime.now(UTC)


def format_time(t: datetime) -> str:
    """RFC 3339 at second precision, UTC, ``Z`` suffix: ``2024-05-01T12:00:00Z``."""
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: Any) -> datetime | None:
    """Parse an RFC 3339 timestamp (``Z`` or offset, optional fraction); None if absent or malformed."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    if text.endswith("Z") or text.endswith("z"):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def add_seconds(t: datetime, seconds: int) -> datetime:
    return t + timedelta(seconds=seconds)


def new_uid() -> str:
    return str(uuid.uuid4())


def name_suffix(length: int = 5) -> str:
    return "".join(secrets.choice(_SUFFIX_ALPHABET) for _ in range(length))


def meta(obj: dict[str, Any]) -> dict[str, Any]:
    """The object's ``metadata`` dict, created if missing or not a dict."""
    m = obj.get("metadata")
    if not isinstance(m, dict):
        m = {}
        obj["metadata"] = m
    return m


def deep_copy(obj: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(obj)


def _str_map(m: dict[str, Any], key: str) -> dict[str, str]:
    v = m.get(key)
    if not isinstance(v, dict):
        return {}
    return {str(k): str(x) if x is not None else "" for k, x in v.items()}


def labels_of(obj: dict[str, Any]) -> dict[str, str]:
    m = obj.get("metadata")
    return _str_map(m, "labels") if isinstance(m, dict) else {}


def annotations_of(obj: dict[str, Any]) -> dict[str, str]:
    m = obj.get("metadata")
    return _str_map(m, "annotations") if isinstance(m, dict) else {}


def finalizers_of(obj: dict[str, Any]) -> list[str]:
    m = obj.get("metadata")
    if not isinstance(m, dict):
        return []
    f = m.get("finalizers")
    return [str(x) for x in f] if isinstance(f, list) else []


def is_terminating(obj: dict[str, Any]) -> bool:
    m = obj.get("metadata")
    return isinstance(m, dict) and bool(m.get("deletionTimestamp"))


# --- list continue tokens ----------------------------------------------------------------------
# The token is opaque to clients but, like Kubernetes', base64url (unpadded) JSON naming the revision the
# first page was read at and the key (relative to the list's prefix) to resume from. A NUL after the
# last returned key makes the start inclusive-of-next, as in Kubernetes' tokens.

_CONTINUE_VERSION = "meta.k8s.io/v1"


def encode_continue(revision: int, last_key: str) -> str:
    payload = {"v": _CONTINUE_VERSION, "rv": revision, "start": last_key + "\x00"}
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _bad_continue(detail: str) -> BadRequestError:
    return BadRequestError(f"invalid continue token: continue key is not valid{detail}")


def decode_continue(token: str) -> tuple[int, str]:
    """``(revision, start_after)``: resume after ``start_after`` (relative to the list prefix) at
    ``revision``. Raises `BadRequestError` worded as Kubernetes words a bad token."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise _bad_continue(f": {exc}") from None
    if not isinstance(data, dict):
        raise _bad_continue(": not an object")
    if data.get("v") != _CONTINUE_VERSION:
        raise _bad_continue(f": server does not recognize this encoded version {data.get('v')}")
    rv = data.get("rv")
    if isinstance(rv, bool) or not isinstance(rv, int) or rv <= 0:
        raise _bad_continue(f": incorrect encoded start resourceVersion (version {_CONTINUE_VERSION})")
    start = data.get("start")
    if not isinstance(start, str) or not start:
        raise _bad_continue(f": encoded start key empty (version {_CONTINUE_VERSION})")
    key = start if start.startswith("/") else "/" + start
    if posixpath.normpath(key) != key:
        raise _bad_continue(f": {start}")
    start = key[1:]
    return rv, start[:-1] if start.endswith("\x00") else start
