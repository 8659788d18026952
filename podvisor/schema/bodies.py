"""Request bodies -> JSON-shaped values, whatever the Content-Type, as the Kubernetes API server reads them.

One entry point, `decode_body`, for every write: JSON (objects and the three JSON patch types), YAML
(objects and server-side apply's ``application/apply-patch+yaml``) and Kubernetes protobuf. Besides the
value it returns what strict field validation needs and a plain parser would throw away:

- repeated keys in JSON objects (``{"a":1,"a":2}``: the last wins, as in Go), as `DuplicateField`s;
  `podvisor.schema.fieldcheck` keeps those that sit where the schema looks (not inside free-form
  or unknown fields) and words them ``duplicate field "metadata.name"``;
- repeated keys in YAML mappings, worded as the Go YAML library does
  (``yaml: unmarshal errors:\\n  line 5: key "other" already set in map``);
- protobuf fields whose numbers the schema does not know (``unknown field "spec.<protobuf field 57>"``).

YAML is read the way the API server's YAML library (YAML 1.1, go-yaml v2) reads it, then made JSON-able
the way its YAML->JSON step does: timestamps stay strings; ``y``/``n``/``yes``/``off`` are booleans;
``1e3`` is a number; integral floats become integers; non-string keys become strings; only the first
document counts; excessive alias expansion is refused.

Errors are API errors: `BadRequestError` (400) for malformed bodies, with line and column;
`RequestEntityTooLargeError` (413) past `MAX_BODY`; `UnsupportedMediaTypeError` (415) for a
Content-Type the endpoint does not take.
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import math
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import yaml

from podvisor.apiserver.errors import (
    BadRequestError,
    RequestEntityTooLargeError,
    UnsupportedMediaTypeError,
)
from podvisor.schema.protobuf import PROTOBUF_CONTENT_TYPE, decode_unknown

__all__ = [
    "MAX_BODY",
    "JSON",
    "YAML",
    "PROTOBUF",
    "MERGE_PATCH",
    "STRATEGIC_MERGE_PATCH",
    "JSON_PATCH",
    "APPLY_PATCH",
    "OBJECT_MEDIA_TYPES",
    "PATCH_MEDIA_TYPES",
    "DuplicateField",
    "DecodedBody",
    "media_type",
    "decode_body",
]

MAX_BODY = 3 * 1024 * 1024  # the API server's request body limit (3 MiB)

JSON = "application/json"
YAML = "application/yaml"
PROTOBUF = PROTOBUF_CONTENT_TYPE
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"

# What create/update accept, and what PATCH accepts, in the order the 415 message lists them.
OBJECT_MEDIA_TYPES = (JSON, YAML, PROTOBUF)
PATCH_MEDIA_TYPES = (JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH, APPLY_PATCH)

_JSON_TYPES = frozenset({JSON, MERGE_PATCH, STRATEGIC_MERGE_PATCH, JSON_PATCH})
_YAML_TYPES = frozenset({YAML, APPLY_PATCH})


class DuplicateField(NamedTuple):
    """A key repeated in one JSON object: ``parent`` is the object's path ("" at the top)."""

    parent: str
    key: str

    @property
    def path(self) -> str:
        return f"{self.parent}.{self.key}" if self.parent else self.key


@dataclass(slots=True)
class DecodedBody:
    """``obj`` is the decoded value (a dict for objects, a list for JSON patches, None for ``null``).
    ``duplicates`` are repeated JSON keys; ``strict_errors`` other strict-decoding findings, already
    worded (the YAML duplicate-key error, unknown protobuf fields)."""

    obj: Any
    media_type: str
    duplicates: list[DuplicateField] = field(default_factory=list)
    strict_errors: list[str] = field(default_factory=list)


def media_type(content_type: str) -> str:
    """``application/json; charset=utf-8`` -> ``application/json``."""
    return content_type.split(";", 1)[0].strip().lower()


def decode_body(
    body: bytes, content_type: str, *, accepted: Collection[str] = OBJECT_MEDIA_TYPES + PATCH_MEDIA_TYPES
) -> DecodedBody:
    """Decode a request body. ``accepted`` lists the media types this endpoint takes (create/update:
    `OBJECT_MEDIA_TYPES`, PATCH: `PATCH_MEDIA_TYPES`); an empty Content-Type means the first of them."""
    mt = media_type(content_type) or next(iter(accepted), JSON)
    if mt not in accepted or mt not in _JSON_TYPES | _YAML_TYPES | {PROTOBUF}:
        raise UnsupportedMediaTypeError(
            "the body of the request was in an unknown format - accepted media types include: "
            + ", ".join(accepted)
        )
    if len(body) > MAX_BODY:
        raise RequestEntityTooLargeError(f"Request entity too large: limit is {MAX_BODY}")
    if mt == PROTOBUF:
        unknown: list[str] = []
        obj = decode_unknown(body, unknown=unknown)
        return DecodedBody(obj, mt, strict_errors=[f'unknown field "{p}"' for p in unknown])
    if mt in _YAML_TYPES:
        obj, errors = _decode_yaml(body)
        return DecodedBody(obj, mt, strict_errors=errors)
    obj, dups = _decode_json(body)
    return DecodedBody(obj, mt, duplicates=dups)


# -------------------------------------------------------------------------------------------- JSON


class _Pairs(dict[str, Any]):
    """A JSON object that remembers which of its keys were repeated."""

    __slots__ = ("repeated",)

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        super().__init__(pairs)
        self.repeated: list[str] = []
        if len(self) != len(pairs):
            seen: set[str] = set()
            for k, _ in pairs:
                if k in seen and k not in self.repeated:
                    self.repeated.append(k)
                seen.add(k)


def _no_constant(name: str) -> Any:
    raise ValueError(f"invalid character '{name[0]}' looking for beginning of value")


def _decode_json(body: bytes) -> tuple[Any, list[DuplicateField]]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadRequestError(f"json parse error: invalid UTF-8 at byte offset {e.start}") from e
    if not text.strip():
        raise BadRequestError("json parse error: unexpected end of JSON input (the body is empty)")
    try:
        raw = json.loads(text, object_pairs_hook=_Pairs, parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        raise BadRequestError(f"json parse error: {e.msg} at line {e.lineno}, column {e.colno}") from e
    except ValueError as e:
        raise BadRequestError(f"json parse error: {e}") from e
    except RecursionError as e:
        raise BadRequestError("json parse error: exceeded max depth") from e
    dups: list[DuplicateField] = []
    return _plain(raw, "", dups), dups


def _plain(v: Any, path: str, dups: list[DuplicateField]) -> Any:
    """Plain dicts again, collecting repeated keys with Kubernetes-style paths."""
    if isinstance(v, _Pairs):
        dups.extend(DuplicateField(path, k) for k in v.repeated)
        return {k: _plain(x, f"{path}.{k}" if path else k, dups) for k, x in v.items()}
    if isinstance(v, list):
        return [_plain(x, f"{path}[{i}]", dups) for i, x in enumerate(v)]
    return v


# -------------------------------------------------------------------------------------------- YAML

_BOOL = {"y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON"}
_BOOL |= {"n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF"}
_TRUE = frozenset({"y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON"})
_INT = re.compile(r"^[-+]?(?:0b[01_]+|0o[0-7_]+|0x[0-9a-fA-F_]+|[0-9][0-9_]*)$")
_FLOAT = re.compile(r"^[-+]?(?:\.[0-9_]+|[0-9][0-9_]*(?:\.[0-9_]*)?)(?:[eE][-+]?[0-9]+)?$")
_SPECIAL_FLOAT = re.compile(r"^(?:[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$")
_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")
_MAX_STRICT_ERRORS = 100  # as upstream, stop collecting after this many


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """YAML 1.1 as go-yaml v2 resolves plain scalars, noting repeated mapping keys."""

    yaml_implicit_resolvers: dict[Any, Any] = {}
    repeated: list[str]


def _add(tag: str, regexp: re.Pattern[str], first: str | None) -> None:
    _Loader.add_implicit_resolver(tag, regexp, list(first) if first is not None else None)


_add("tag:yaml.org,2002:bool", re.compile("^(?:" + "|".join(sorted(_BOOL)) + ")$"), "yYnNtTfFoO")
_add("tag:yaml.org,2002:int", _INT, "-+0123456789")
_add("tag:yaml.org,2002:float", _FLOAT, "-+0123456789.")
_add("tag:yaml.org,2002:float", _SPECIAL_FLOAT, "-+.")
_Loader.add_implicit_resolver("tag:yaml.org,2002:null", _NULL, ["~", "n", "N", ""])
_add("tag:yaml.org,2002:merge", re.compile(r"^(?:<<)$"), "<")


def _construct_bool(loader: _Loader, node: yaml.ScalarNode) -> bool:
    return str(loader.construct_scalar(node)) in _TRUE


def _construct_int(loader: _Loader, node: yaml.ScalarNode) -> int | float:
    text = str(loader.construct_scalar(node)).replace("_", "")
    sign = -1 if text.startswith("-") else 1
    digits = text.lstrip("+-")
    if len(digits) > 1 and digits[0] == "0" and digits[1] in "01234567":
        value = int(digits, 8)  # YAML 1.1 octal: 0755
    else:
        value = int(digits, 0) if digits[:2].lower() in ("0x", "0o", "0b") else int(digits)
    value *= sign
    return value if -(2**63) <= value < 2**64 else float(value)


def _construct_float(loader: _Loader, node: yaml.ScalarNode) -> float:
    text = str(loader.construct_scalar(node)).replace("_", "")
    low = text.lower()
    if low.endswith("inf"):
        return -math.inf if low.startswith("-") else math.inf
    if low.endswith("nan"):
        return math.nan
    return float(text)


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> dict[str, Any]:
    # go-yaml v2 (strict) compares the keys' source text pairwise and reports every later repeat
    keys = [k for k, _ in node.value if isinstance(k, yaml.ScalarNode)]
    where: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        where.setdefault(k.value, []).append(i)
    if len(where) < len(keys):
        for i, k in enumerate(keys):
            for j in where[k.value]:
                if j > i and len(loader.repeated) < _MAX_STRICT_ERRORS:
                    later = keys[j]
                    loader.repeated.append(
                        f"line {later.start_mark.line + 1}: key {_go_quote(later.value)} already set in map"
                    )
    loader.flatten_mapping(node)  # merges (<<) first, then the mapping's own keys override them
    out: dict[str, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, list | dict | set):
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark, "found unhashable key", key_node.start_mark
            )
        # keys become JSON strings now: 1 and true are different YAML keys but equal Python ones
        out[_json_key(key)] = loader.construct_object(value_node, deep=True)
    return out


def _go_quote(text: str) -> str:
    """Go's %#v of a string."""
    return json.dumps(text, ensure_ascii=False)


_Loader.add_constructor("tag:yaml.org,2002:bool", _construct_bool)
_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_Loader.add_constructor("tag:yaml.org,2002:float", _construct_float)
_Loader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)


def _decode_yaml(body: bytes) -> tuple[Any, list[str]]:
    loader = _Loader(body)
    loader.repeated = []
    try:
        node = loader.get_node() if loader.check_node() else None
        value = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = e.problem or e.context or "invalid YAML"
        raise BadRequestError(f"error converting YAML to JSON: yaml: {where}{problem}") from e
    except (yaml.YAMLError, ValueError) as e:
        raise BadRequestError(f"error converting YAML to JSON: yaml: {e}") from e
    except RecursionError as e:
        raise BadRequestError("error converting YAML to JSON: yaml: exceeded max depth") from e
    finally:
        loader.dispose()
    budget = [len(body) + 400_000]
    try:
        obj = _jsonable(value, budget)
    except RecursionError as e:
        raise BadRequestError("error converting YAML to JSON: yaml: exceeded max depth") from e
    errors = ["yaml: unmarshal errors:\n  " + "\n  ".join(loader.repeated)] if loader.repeated else []
    return obj, errors


def _jsonable(v: Any, budget: list[int]) -> Any:
    """YAML values -> what the API server's YAML->JSON step makes of them."""
    budget[0] -= 1
    if budget[0] < 0:
        raise BadRequestError("error converting YAML to JSON: yaml: document contains excessive aliasing")
    if isinstance(v, dict):
        return {str(k): _jsonable(x, budget) for k, x in v.items()}
    if isinstance(v, set):
        return {_json_key(k): None for k in v}
    if isinstance(v, list | tuple):
        return [_jsonable(x, budget) for x in v]
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            raise BadRequestError(f"error converting YAML to JSON: json: unsupported value: {_go_float(v)}")
        return int(v) if v.is_integer() and abs(v) < 1e21 else v
    if isinstance(v, bytes):
        return base64.b64encode(v).decode("ascii")
    if isinstance(v, _dt.datetime | _dt.date):
        return v.isoformat().replace("+00:00", "Z")
    return v


def _json_key(k: Any) -> str:
    if isinstance(k, str):
        return k
    if isinstance(k, bool):
        return "true" if k else "false"
    if isinstance(k, int):
        return str(k)
    if isinstance(k, float):
        return _go_float(k) if math.isnan(k) or math.isinf(k) else format(k, "g")
    raise BadRequestError(
        f"error converting YAML to JSON: unsupported map key of type: {type(k).__name__}, key: {k!r}"
    )


def _go_float(f: float) -> str:
    if math.isnan(f):
        return "NaN"
    return "+Inf" if f > 0 else "-Inf"
