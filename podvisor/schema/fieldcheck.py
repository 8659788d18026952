"""Request objects checked against our schema: unknown fields, repeated fields, wrong JSON types.

The API server decodes a body into typed Go structs; what does not fit is reported as Kubernetes reports
it, and the handler's ``fieldValidation`` decides what happens (`apply_field_validation`):

- ``Strict``: 400 ``Deployment in version "v1" cannot be handled as a Deployment: strict decoding
  error: unknown field "spec.bogus", duplicate field "metadata.name"``;
- ``Warn`` (the default): the same findings as ``Warning`` header texts, and the object is stored without
  the unknown fields; ``Ignore``: dropped silently.

A value of the wrong JSON type is a 400 in every mode, worded as Go's JSON decoder words it
(``json: cannot unmarshal string into Go struct field DeploymentSpec.spec.replicas of type int32``).
``null`` is accepted anywhere (Go leaves the zero value). Free-form values (``raw``: RawExtension,
FieldsV1) are never looked into; map keys (labels, annotations, data) are free, their values are typed.

Paths are printed as Kubernetes prints them: ``spec.template.spec.containers[0].foo``, map keys joined
with a dot. Findings come in document order, deduplicated, at most 100, as upstream collects them.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from podvisor.apiserver.errors import BadRequestError, Cause, InvalidError
from podvisor.schema.bodies import DuplicateField
from podvisor.schema.model import SCALARS, ListOf, MapOf, Struct, TypeRef

__all__ = [
    "FieldValidation",
    "FieldReport",
    "check_object",
    "prune_unknown",
    "strict_warnings",
    "apply_field_validation",
]

FieldValidation = Literal["Strict", "Warn", "Ignore"]
StructLookup = Callable[[str], Struct]

_MAX_ERRORS = 100
_TOP_LEVEL = ("apiVersion", "kind")  # TypeMeta: known at the root of every object
_GO_SCALAR = {
    "string": "string",
    "boolean": "bool",
    "int32": "int32",
    "int64": "int64",
    "double": "float64",
    "bytes": "[]uint8",
    "date-time": "v1.Time",
    "micro-time": "v1.MicroTime",
    "quantity": "resource.Quantity",
    "int-or-string": "intstr.IntOrString",
    "raw": "runtime.RawExtension",
}
_INT_RANGE = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}
_QUANTITY = "^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"  # upstream's wording of the format
_QUANTITY_PARTS = re.compile(r"^([+-]?[0-9]*\.?[0-9]*)(.*)$", re.S)
_QUANTITY_SUFFIX = re.compile(r"^(?:|[numkMGTPE]|[KMGTPE]i|[eE][-+]?[0-9]+)$")
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})$")
_TIME_LAYOUT = "2006-01-02T15:04:05Z07:00"


@dataclass(slots=True)
class FieldReport:
    """What `check_object` found. ``strict_errors`` are the unknown and duplicate findings worded and
    in document order (``unknown field "spec.bogus"``, ``duplicate field "metadata.name"``)."""

    unknown: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    type_errors: list[Cause] = field(default_factory=list)
    strict_errors: list[str] = field(default_factory=list)


def _default_structs(name: str) -> Struct:
    from podvisor.schema import registry

    return registry.struct(name)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _json_type(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int | float):
        return "number"
    if isinstance(v, str):
        return "string"
    return "array" if isinstance(v, list) else "object"


def _go_type(t: TypeRef) -> str:
    if isinstance(t, ListOf):
        return "[]" + _go_type(t.item)
    if isinstance(t, MapOf):
        return "map[string]" + _go_type(t.value)
    if t in SCALARS:
        return _GO_SCALAR.get(t, t)
    package, _, name = t.rpartition(".")
    return f"{package.rpartition('.')[2]}.{name}"


def _base64_offset(text: str) -> int:
    """Where Go's decoder gives up on bad base64: the first byte outside the alphabet, else the end."""
    for i, c in enumerate(text):
        if not (c.isascii() and (c.isalnum() or c in "+/=")):
            return i
    body = text.rstrip("=")
    return len(body) if len(body) % 4 != 1 else len(body) - 1


def _short(struct_name: str) -> str:
    return struct_name.rpartition(".")[2]


class _Checker:
    def __init__(
        self, structs: StructLookup, duplicates: Sequence[DuplicateField | str], prune: bool
    ) -> None:
        self.structs = structs
        self.prune = prune
        self.report = FieldReport()
        self.dups: dict[str, list[str]] = {}
        for d in duplicates:
            if isinstance(d, DuplicateField):
                self.dups.setdefault(d.parent, []).append(d.key)
            else:
                self._strict(f'duplicate field "{d}"', duplicate=d)

    def _strict(self, text: str, *, unknown: str = "", duplicate: str = "") -> None:
        r = self.report
        if text in r.strict_errors or len(r.strict_errors) >= _MAX_ERRORS:
            return
        r.strict_errors.append(text)
        if unknown:
            r.unknown.append(unknown)
        if duplicate:
            r.duplicates.append(duplicate)

    def _type_error(self, path: str, message: str) -> None:
        if len(self.report.type_errors) < _MAX_ERRORS:
            self.report.type_errors.append(Cause("FieldValueTypeInvalid", message, path))

    def _mismatch(self, v: Any, t: TypeRef, path: str, owner: str, go_path: str, value: str = "") -> None:
        what = value or _json_type(v)
        if owner:
            msg = (
                f"json: cannot unmarshal {what} into Go struct field {owner}.{go_path} of type {_go_type(t)}"
            )
        else:
            msg = f"json: cannot unmarshal {what} into Go value of type {_go_type(t)}"
        self._type_error(path, msg)

    def struct(self, obj: Any, name: str, path: str, owner: str, go_path: str, *, root: bool = False) -> Any:
        if not isinstance(obj, dict):
            self._mismatch(obj, name, path, owner, go_path)
            return obj
        try:
            s = self.structs(name)
        except LookupError:
            return obj  # a struct the schema does not describe is taken as free-form
        repeated = self.dups.get(path, ())
        out: dict[str, Any] = {}
        for key, v in obj.items():
            f = s.fields.get(key)
            child = _join(path, key)
            if f is not None:
                out[key] = self.value(v, f.type, child, _short(s.name), _join(go_path, key))
            elif root and key in _TOP_LEVEL:
                out[key] = self.value(v, "string", child, _short(s.name), key)
            else:
                self._strict(f'unknown field "{child}"', unknown=child)
                if not self.prune:
                    out[key] = v
                continue
            if key in repeated:
                self._strict(f'duplicate field "{child}"', duplicate=child)
        return out

    def value(self, v: Any, t: TypeRef, path: str, owner: str, go_path: str) -> Any:
        if v is None:
            return None
        if isinstance(t, ListOf):
            if not isinstance(v, list):
                self._mismatch(v, t, path, owner, go_path)
                return v
            return [self.value(x, t.item, f"{path}[{i}]", owner, go_path) for i, x in enumerate(v)]
        if isinstance(t, MapOf):
            if not isinstance(v, dict):
                self._mismatch(v, t, path, owner, go_path)
                return v
            repeated = self.dups.get(path, ())
            out = {}
            for key, x in v.items():
                out[key] = self.value(x, t.value, _join(path, key), owner, go_path)
                if key in repeated:
                    self._strict(f'duplicate field "{_join(path, key)}"', duplicate=_join(path, key))
            return out
        if t not in SCALARS:
            return self.struct(v, t, path, owner, go_path)
        self.scalar(v, t, path, owner, go_path)
        return v

    def scalar(self, v: Any, t: str, path: str, owner: str, go_path: str) -> None:
        if t == "raw":
            return
        if t == "string":
            if not isinstance(v, str):
                self._mismatch(v, t, path, owner, go_path)
        elif t == "boolean":
            if not isinstance(v, bool):
                self._mismatch(v, t, path, owner, go_path)
        elif t in _INT_RANGE:
            self.integer(v, t, path, owner, go_path)
        elif t == "double":
            if isinstance(v, bool) or not isinstance(v, int | float):
                self._mismatch(v, t, path, owner, go_path)
        elif t == "bytes":
            if not isinstance(v, str):
                self._mismatch(v, t, path, owner, go_path)
            else:
                try:
                    base64.b64decode(v, validate=True)
                except (binascii.Error, ValueError):
                    self._type_error(path, f"illegal base64 data at input byte {_base64_offset(v)}")
        elif t in ("date-time", "micro-time"):
            self.time(v, path)
        elif t == "quantity":
            self.quantity(v, path)
        elif t == "int-or-string" and not isinstance(v, str):
            self.integer(v, "int32", path, "", "")

    def integer(self, v: Any, t: str, path: str, owner: str, go_path: str) -> None:
        if isinstance(v, bool) or not isinstance(v, int | float):
            self._mismatch(v, t, path, owner, go_path)
            return
        low, high = _INT_RANGE[t]
        if isinstance(v, float) or not low <= v <= high:
            self._mismatch(v, t, path, owner, go_path, value=f"number {json.dumps(v)}")

    def time(self, v: Any, path: str) -> None:
        if not isinstance(v, str):
            self._type_error(path, f"json: cannot unmarshal {_json_type(v)} into Go value of type string")
            return
        ok = bool(_RFC3339.match(v))
        if ok:
            try:
                datetime.fromisoformat(v.replace("Z", "+00:00").replace("z", "+00:00").replace("t", "T"))
            except ValueError:
                ok = False
        if not ok:
            self._type_error(path, f'parsing time "{v}" as "{_TIME_LAYOUT}": not an RFC 3339 time')

    def quantity(self, v: Any, path: str) -> None:
        # a string, or a bare JSON number (upstream parses the number's text)
        text = v if isinstance(v, str) else json.dumps(v)
        m = _QUANTITY_PARTS.match(text.strip())
        assert m is not None  # the pattern matches every string
        if not any(c.isdigit() for c in m.group(1)):
            self._type_error(path, f"quantities must match the regular expression '{_QUANTITY}'")
        elif not _QUANTITY_SUFFIX.match(m.group(2)):
            self._type_error(path, "unable to parse quantity's suffix")


def check_object(
    obj: Any,
    struct_name: str,
    *,
    duplicates: Sequence[DuplicateField | str] = (),
    structs: StructLookup | None = None,
) -> FieldReport:
    """Walk ``obj`` along the schema of ``struct_name``. ``duplicates`` are the repeated keys
    `podvisor.schema.bodies.decode_body` found; only those where the schema looks are reported
    (plain strings are taken as paths and always reported)."""
    checker = _Checker(structs or _default_structs, duplicates, prune=False)
    checker.struct(obj, struct_name, "", "", "", root=True)
    return checker.report


def prune_unknown(
    obj: dict[str, Any], struct_name: str, *, structs: StructLookup | None = None
) -> dict[str, Any]:
    """A copy of ``obj`` without the fields the schema does not know (what Warn and Ignore store)."""
    checker = _Checker(structs or _default_structs, (), prune=True)
    out = checker.struct(obj, struct_name, "", "", "", root=True)
    return out if isinstance(out, dict) else obj


def strict_warnings(errors: Sequence[str]) -> list[str]:
    """``Warning`` header texts for strict findings: the YAML error block is split into its lines."""
    out: list[str] = []
    for e in errors:
        for prefix in (
            "error converting YAML to JSON: yaml: unmarshal errors:\n",
            "yaml: unmarshal errors:\n",
        ):
            if e.startswith(prefix):
                out.extend(line.strip() for line in e[len(prefix) :].split("\n") if line.strip())
                break
        else:
            out.append(e)
    return out


def _decode_error_prefix(obj: Any, struct_name: str) -> str:
    """``Deployment in version "v1" cannot be handled as a Deployment: ``."""
    target = _short(struct_name)
    kind = obj.get("kind") if isinstance(obj, dict) else None
    api_version = obj.get("apiVersion") if isinstance(obj, dict) else None
    kind = kind if isinstance(kind, str) and kind else target
    version = api_version.rpartition("/")[2] if isinstance(api_version, str) else ""
    return f'{kind} in version "{version}" cannot be handled as a {target}: '


def apply_field_validation(
    obj: dict[str, Any],
    struct_name: str,
    mode: str,
    duplicates: Sequence[DuplicateField | str] = (),
    *,
    strict_errors: Sequence[str] = (),
    patch: bool = False,
    structs: StructLookup | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """Check a decoded body and apply ``fieldValidation`` (``Strict``, ``Warn`` or ``Ignore``; ""
    means Warn, as upstream). Returns the object to go on with (unknown fields dropped) and the
    ``Warning`` texts to send. ``duplicates``/``strict_errors`` come from `DecodedBody`.

    Raises `BadRequestError` for a wrong JSON type (any mode) or, in Strict mode, for unknown or
    repeated fields. With ``patch=True`` (the object is a patch applied to the stored one) the error is
    upstream's 422 instead: ``  "" is invalid: patch: Invalid value: "...": strict decoding error: ...``."""
    mode = mode or "Warn"
    if mode not in ("Strict", "Warn", "Ignore"):
        raise BadRequestError(
            f'fieldValidation: Unsupported value: "{mode}": supported values: "Ignore", "Strict", "Warn"'
        )
    lookup = structs or _default_structs
    report = check_object(obj, struct_name, duplicates=duplicates, structs=lookup)
    if report.type_errors:
        first = report.type_errors[0]
        if patch:
            raise _patch_invalid(obj, first.message)
        raise BadRequestError(
            _decode_error_prefix(obj, struct_name) + first.message, causes=report.type_errors[:1]
        )
    errors = list(strict_errors) + report.strict_errors
    if mode == "Strict" and errors:
        message = "strict decoding error: " + ", ".join(errors)
        if patch:
            raise _patch_invalid(obj, message)
        raise BadRequestError(_decode_error_prefix(obj, struct_name) + message)
    pruned = prune_unknown(obj, struct_name, structs=lookup) if report.unknown else obj
    return pruned, strict_warnings(errors) if mode == "Warn" else []


def _patch_invalid(obj: Any, detail: str) -> InvalidError:
    value = json.dumps(json.dumps(obj, separators=(",", ":")), ensure_ascii=False)
    cause = Cause("FieldValueInvalid", f"Invalid value: {value}: {detail}", "patch")
    return InvalidError(f' "" is invalid: patch: {cause.message}', causes=[cause])
