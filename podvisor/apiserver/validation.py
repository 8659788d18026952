"""Field validation shared by every strategy, worded the way Kubernetes words it.

kubectl prints a 422's causes one per line (``* metadata.name: Invalid value: "Bad_Name": a lowercase
RFC 1123 subdomain must ...``), and users search the web for those exact sentences, so the messages here
follow apimachinery's wording: the error type (``Invalid value``, ``Required value``, ``Forbidden``,
``Unsupported value``, ``Duplicate value``, ``Too long``), the offending value quoted like Go's ``%q``,
then the detail. `FieldErrors` collects causes while a strategy walks an object; `raise_invalid`
turns a non-empty collection into the `InvalidError` the HTTP layer renders.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal, InvalidOperation
from typing import Any

from podvisor.apiserver.errors import Cause, InvalidError
from podvisor.schema.model import Resource

__all__ = [
    "FieldErrors",
    "format_value",
    "raise_invalid",
    "invalid_error",
    "qualified_kind",
    "qualified_resource",
    "dns1123_label_errors",
    "dns1123_subdomain_errors",
    "dns1035_label_errors",
    "qualified_name_errors",
    "label_value_errors",
    "config_key_errors",
    "path_segment_errors",
    "is_dns1123_label",
    "is_dns1123_subdomain",
    "NameValidator",
    "validate_object_meta",
    "validate_object_meta_update",
    "validate_labels",
    "validate_label_selector",
    "parse_quantity",
    "validate_quantity",
    "port_errors",
    "TOTAL_ANNOTATION_SIZE_LIMIT",
]

TOTAL_ANNOTATION_SIZE_LIMIT = 256 * 1024


def format_value(value: Any) -> str:
    """A bad value as apimachinery prints it: strings quoted, numbers and booleans bare."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)


class FieldErrors(list[Cause]):
    """An ordered list of field causes with one builder per apimachinery error type."""

    def invalid(self, path: str, value: Any, detail: str) -> None:
        msg = f"Invalid value: {format_value(value)}"
        if detail:
            msg += f": {detail}"
        self.append(Cause("FieldValueInvalid", msg, path))

    def required(self, path: str, detail: str = "") -> None:
        self.append(Cause("FieldValueRequired", "Required value" + (f": {detail}" if detail else ""), path))

    def forbidden(self, path: str, detail: str) -> None:
        self.append(Cause("FieldValueForbidden", "Forbidden" + (f": {detail}" if detail else ""), path))

    def duplicate(self, path: str, value: Any) -> None:
        self.append(Cause("FieldValueDuplicate", f"Duplicate value: {format_value(value)}", path))

    def not_supported(self, path: str, value: Any, supported: list[str] | tuple[str, ...]) -> None:
        msg = f"Unsupported value: {format_value(value)}"
        if supported:
            msg += ": supported values: " + ", ".join(json.dumps(s) for s in supported)
        self.append(Cause("FieldValueNotSupported", msg, path))

    def not_found(self, path: str, value: Any) -> None:
        self.append(Cause("FieldValueNotFound", f"Not found: {format_value(value)}", path))

    def too_long(self, path: str, max_len: int) -> None:
        self.append(Cause("FieldValueTooLong", f"Too long: may not be longer than {max_len}", path))

    def too_many(self, path: str, actual: int, max_items: int) -> None:
        self.append(Cause("FieldValueTooMany", f"Too many: {actual}: must have at most {max_items} items", path))

    def immutable(self, path: str, value: Any) -> None:
        self.invalid(path, value, "field is immutable")

    def extend_invalid(self, path: str, value: Any, details: list[str]) -> None:
        for d in details:
            self.invalid(path, value, d)


def qualified_kind(resource: Resource) -> str:
    """``ConfigMap`` for core kinds, ``Deployment.apps`` for grouped ones (GroupKind.String())."""
    return f"{resource.kind}.{resource.group}" if resource.group else resource.kind


def qualified_resource(resource: Resource) -> str:
    return f"{resource.plural}.{resource.group}" if resource.group else resource.plural


def invalid_error(resource: Resource, name: str, causes: list[Cause]) -> InvalidError:
    """The 422 for ``causes``, with the qualified kind in the message as Kubernetes writes it."""
    seen: set[str] = set()
    parts: list[str] = []
    for c in causes:
        text = f"{c.field}: {c.message}" if c.field else c.message
        if text not in seen:
            seen.add(text)
            parts.append(text)
    detail = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    return InvalidError(
        f'{qualified_kind(resource)} "{name}" is invalid: {detail}',
        name=name,
        group=resource.group,
        kind=resource.kind,
        causes=causes,
    )


def raise_invalid(resource: Resource, name: str, errs: list[Cause]) -> None:
    if errs:
        raise invalid_error(resource, name, errs)


# --- names -------------------------------------------------------------------------------------

_DNS1123_LABEL = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_LABEL_RE = re.compile(f"^{_DNS1123_LABEL}$")
_DNS1123_SUBDOMAIN = _DNS1123_LABEL + r"(\." + _DNS1123_LABEL + ")*"
_DNS1123_SUBDOMAIN_RE = re.compile(f"^{_DNS1123_SUBDOMAIN}$")
_DNS1035_LABEL = "[a-z]([-a-z0-9]*[a-z0-9])?"
_DNS1035_LABEL_RE = re.compile(f"^{_DNS1035_LABEL}$")
_QNAME_CHAR = "[A-Za-z0-9]"
_QNAME_EXT = "[-A-Za-z0-9_.]"
_QUALIFIED_NAME = f"({_QNAME_CHAR}{_QNAME_EXT}*)?{_QNAME_CHAR}"
_QUALIFIED_NAME_RE = re.compile(f"^{_QUALIFIED_NAME}$")
_LABEL_VALUE = f"(({_QNAME_CHAR}{_QNAME_EXT}*)?{_QNAME_CHAR})?"
_LABEL_VALUE_RE = re.compile(f"^{_LABEL_VALUE}$")
_CONFIG_KEY = "[-._a-zA-Z0-9]+"
_CONFIG_KEY_RE = re.compile(f"^{_CONFIG_KEY}$")


def _regex_msg(what: str, examples: list[str], regex: str) -> str:
    ex = ",  or ".join(f"'{e}'" for e in examples)
    return f"{what} (e.g. {ex}, regex used for validation is '{regex}')"


_DNS1123_LABEL_MSG = _regex_msg(
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start "
    "and end with an alphanumeric character",
    ["my-name", "123-abc"],
    _DNS1123_LABEL,
)
_DNS1123_SUBDOMAIN_MSG = _regex_msg(
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must "
    "start and end with an alphanumeric character",
    ["example.com"],
    _DNS1123_SUBDOMAIN,
)
_DNS1035_LABEL_MSG = _regex_msg(
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic "
    "character, and end with an alphanumeric character",
    ["my-name", "abc-123"],
    _DNS1035_LABEL,
)
_QUALIFIED_NAME_MSG = _regex_msg(
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
    "alphanumeric character",
    ["MyName", "my.name", "123-abc"],
    _QUALIFIED_NAME,
)
_LABEL_VALUE_MSG = _regex_msg(
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must "
    "start and end with an alphanumeric character",
    ["MyValue", "my_value", "12345"],
    _LABEL_VALUE,
)
_CONFIG_KEY_MSG = _regex_msg(
    "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
    ["key.name", "KEY_NAME", "key-name"],
    _CONFIG_KEY,
)


def _max_len_msg(n: int) -> str:
    return f"must be no more than {n} characters"


def is_dns1123_label(value: str) -> bool:
    return len(value) <= 63 and bool(_DNS1123_LABEL_RE.match(value))


def is_dns1123_subdomain(value: str) -> bool:
    return len(value) <= 253 and bool(_DNS1123_SUBDOMAIN_RE.match(value))


def dns1123_label_errors(value: str) -> list[str]:
    errs: list[str] = []
    if len(value) > 63:
        errs.append(_max_len_msg(63))
    if not _DNS1123_LABEL_RE.match(value):
        errs.append(_DNS1123_LABEL_MSG)
    return errs


def dns1123_subdomain_errors(value: str) -> list[str]:
    errs: list[str] = []
    if len(value) > 253:
        errs.append(_max_len_msg(253))
    if not _DNS1123_SUBDOMAIN_RE.match(value):
        errs.append(_DNS1123_SUBDOMAIN_MSG)
    return errs


def dns1035_label_errors(value: str) -> list[str]:
    errs: list[str] = []
    if len(value) > 63:
        errs.append(_max_len_msg(63))
    if not _DNS1035_LABEL_RE.match(value):
        errs.append(_DNS1035_LABEL_MSG)
    return errs


def path_segment_errors(value: str) -> list[str]:
    if value in (".", ".."):
        return [f"may not be '{value}'"]
    errs = []
    for bad in ("/", "%"):
        if bad in value:
            errs.append(f"may not contain '{bad}'")
    return errs


def qualified_name_errors(value: str) -> list[str]:
    """A label or annotation key: an optional DNS subdomain prefix and '/', then a name part."""
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
        prefix = ""
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            return ["prefix part must be non-empty"]
    else:
        return [
            "a qualified name "
            + _QUALIFIED_NAME_MSG.removeprefix("name part ")
            + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ]
    errs: list[str] = []
    if prefix:
        errs.extend("prefix part " + e for e in dns1123_subdomain_errors(prefix))
    if not name:
        errs.append("name part must be non-empty")
    elif len(name) > 63:
        errs.append("name part " + _max_len_msg(63))
    if name and not _QUALIFIED_NAME_RE.match(name):
        errs.append(_QUALIFIED_NAME_MSG)
    return errs


def label_value_errors(value: str) -> list[str]:
    errs: list[str] = []
    if len(value) > 63:
        errs.append(_max_len_msg(63))
    if not _LABEL_VALUE_RE.match(value):
        errs.append(_LABEL_VALUE_MSG)
    return errs


def config_key_errors(value: str) -> list[str]:
    errs: list[str] = []
    if len(value) > 253:
        errs.append(_max_len_msg(253))
    if not _CONFIG_KEY_RE.match(value):
        errs.append(_CONFIG_KEY_MSG)
    if value in (".", ".."):
        errs.append(f"must not be '{value}'")
    elif value.startswith(".."):
        errs.append("must not start with '..'")
    return errs


# --- object metadata ---------------------------------------------------------------------------

NameValidator = str  # "subdomain" | "label" | "dns1035" | "path"

_NAME_CHECKS = {
    "subdomain": dns1123_subdomain_errors,
    "label": dns1123_label_errors,
    "dns1035": dns1035_label_errors,
    "path": path_segment_errors,
}


def _name_errors(kind: NameValidator, value: str, *, prefix: bool) -> list[str]:
    check = _NAME_CHECKS.get(kind, dns1123_subdomain_errors)
    if prefix and kind != "path":
        # generateName is a prefix: a trailing '-' is fine, a random suffix follows it
        value = value[:-1] + "a" if value.endswith("-") else value
    return check(value)


def validate_labels(labels: Any, path: str, errs: FieldErrors) -> None:
    if labels is None:
        return
    if not isinstance(labels, dict):
        errs.invalid(path, labels, "must be a map of string keys to string values")
        return
    for k, v in labels.items():
        errs.extend_invalid(path, k, qualified_name_errors(str(k)))
        if not isinstance(v, str):
            errs.invalid(f"{path}[{k}]", v, "must be a string")
            continue
        errs.extend_invalid(path, v, label_value_errors(v))


def _validate_annotations(annotations: Any, path: str, errs: FieldErrors) -> None:
    if annotations is None:
        return
    if not isinstance(annotations, dict):
        errs.invalid(path, annotations, "must be a map of string keys to string values")
        return
    total = 0
    for k, v in annotations.items():
        key = str(k)
        errs.extend_invalid(path, key.lower(), qualified_name_errors(key.lower()))
        total += len(key) + len(str(v) if v is not None else "")
    if total > TOTAL_ANNOTATION_SIZE_LIMIT:
        errs.append(Cause("FieldValueTooLong", f"Too long: must have at most {TOTAL_ANNOTATION_SIZE_LIMIT} bytes", path))


def _validate_owner_references(refs: Any, path: str, errs: FieldErrors) -> None:
    if refs is None:
        return
    if not isinstance(refs, list):
        errs.invalid(path, refs, "must be a list")
        return
    controllers: list[str] = []
    for i, ref in enumerate(refs):
        if not isinstance(ref, dict):
            errs.invalid(f"{path}[{i}]", ref, "must be an object")
            continue
        for f in ("apiVersion", "kind", "name"):
            if not ref.get(f):
                errs.invalid(f"{path}.{f}", ref.get(f, ""), f"{f} must not be empty")
        if not ref.get("uid"):
            errs.invalid(f"{path}.uid", ref.get("uid", ""), "uid must not be empty")
        if ref.get("controller") is True:
            controllers.append(f"{ref.get('kind', '')}/{ref.get('name', '')}")
    if len(controllers) > 1:
        errs.invalid(
            path,
            refs,
            "Only one reference can have Controller set to true. Found \"true\" in references for "
            + " and ".join(controllers),
        )


def _validate_finalizers(finalizers: Any, path: str, errs: FieldErrors) -> None:
    if finalizers is None:
        return
    if not isinstance(finalizers, list):
        errs.invalid(path, finalizers, "must be a list of strings")
        return
    for f in finalizers:
        errs.extend_invalid(path, f, qualified_name_errors(str(f)))
    if "orphan" in finalizers and "foregroundDeletion" in finalizers:
        errs.invalid(path, finalizers, "finalizer orphan and foregroundDeletion cannot be both set")


def validate_object_meta(
    obj: dict[str, Any], *, namespaced: bool, name_validator: NameValidator, errs: FieldErrors
) -> None:
    """ObjectMeta rules common to every resource (apimachinery's ValidateObjectMeta)."""
    m = obj.get("metadata")
    if not isinstance(m, dict):
        errs.required("metadata")
        return
    name = m.get("name") or ""
    generate = m.get("generateName") or ""
    if generate:
        errs.extend_invalid("metadata.generateName", generate, _name_errors(name_validator, generate, prefix=True))
    if not name:
        if not generate:
            errs.required("metadata.name", "name or generateName is required")
    else:
        errs.extend_invalid("metadata.name", name, _name_errors(name_validator, name, prefix=False))
    ns = m.get("namespace") or ""
    if namespaced:
        if not ns:
            errs.required("metadata.namespace")
        else:
            errs.extend_invalid("metadata.namespace", ns, dns1123_label_errors(ns))
    elif ns:
        errs.forbidden("metadata.namespace", "not allowed on this type")
    gen = m.get("generation")
    if isinstance(gen, int) and gen < 0:
        errs.invalid("metadata.generation", gen, "must be greater than or equal to 0")
    validate_labels(m.get("labels"), "metadata.labels", errs)
    _validate_annotations(m.get("annotations"), "metadata.annotations", errs)
    _validate_owner_references(m.get("ownerReferences"), "metadata.ownerReferences", errs)
    _validate_finalizers(m.get("finalizers"), "metadata.finalizers", errs)


def validate_object_meta_update(new: dict[str, Any], old: dict[str, Any], *, errs: FieldErrors) -> None:
    """Fields an update may not change, and finalizers that may not be added while deleting."""
    nm = new.get("metadata") or {}
    om = old.get("metadata") or {}
    for f in ("name", "namespace", "uid"):
        if (nm.get(f) or "") != (om.get(f) or ""):
            errs.immutable(f"metadata.{f}", nm.get(f) or "")
    if om.get("deletionTimestamp"):
        added = [f for f in (nm.get("finalizers") or []) if f not in (om.get("finalizers") or [])]
        if added:
            errs.forbidden(
                "metadata.finalizers",
                "no new finalizers can be added if the object is being deleted, found new finalizers "
                + format_value(added),
            )


def validate_label_selector(sel: Any, path: str, errs: FieldErrors) -> None:
    """A metav1.LabelSelector: matchLabels and matchExpressions with their operators."""
    if sel is None:
        return
    if not isinstance(sel, dict):
        errs.invalid(path, sel, "must be an object")
        return
    validate_labels(sel.get("matchLabels"), f"{path}.matchLabels", errs)
    exprs = sel.get("matchExpressions") or []
    if not isinstance(exprs, list):
        errs.invalid(f"{path}.matchExpressions", exprs, "must be a list")
        return
    for i, e in enumerate(exprs):
        p = f"{path}.matchExpressions[{i}]"
        if not isinstance(e, dict):
            errs.invalid(p, e, "must be an object")
            continue
        key = e.get("key") or ""
        errs.extend_invalid(f"{p}.key", key, qualified_name_errors(str(key)))
        op = e.get("operator")
        values = e.get("values") or []
        if op in ("In", "NotIn"):
            if not values:
                errs.required(f"{p}.values", "must be specified when `operator` is 'In' or 'NotIn'")
        elif op in ("Exists", "DoesNotExist"):
            if values:
                errs.forbidden(f"{p}.values", "may not be specified when `operator` is 'Exists' or 'DoesNotExist'")
        else:
            errs.invalid(f"{p}.operator", op, "not a valid selector operator")
        for v in values:
            errs.extend_invalid(f"{p}.values", v, label_value_errors(str(v)))


# --- quantities and ports ----------------------------------------------------------------------

_QUANTITY_RE = re.compile(r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$")
_SUFFIX = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "P": Decimal(10**15),
    "E": Decimal(10**18),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}
QUANTITY_MSG = "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"


def parse_quantity(value: Any) -> Decimal | None:
    """A resource.Quantity's value, or None when it does not parse."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return Decimal(str(value))
    if not isinstance(value, str):
        return None
    m = _QUANTITY_RE.match(value.strip())
    if not m:
        return None
    number, suffix = m.groups()
    try:
        base = Decimal(number)
    except InvalidOperation:
        return None
    if suffix in _SUFFIX:
        return base * _SUFFIX[suffix]
    if suffix[:1] in ("e", "E"):
        try:
            return base * (Decimal(10) ** int(suffix[1:]))
        except ValueError:
            return None
    return None


def validate_quantity(value: Any, path: str, errs: FieldErrors) -> Decimal | None:
    q = parse_quantity(value)
    if q is None:
        errs.invalid(path, value, QUANTITY_MSG)
        return None
    if q < 0:
        errs.invalid(path, value, "must be greater than or equal to 0")
    return q


def port_errors(port: Any) -> list[str]:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        return ["must be between 1 and 65535, inclusive"]
    return []
