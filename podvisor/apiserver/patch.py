"""Every patch flavour Kubernetes accepts, as pure functions on JSON-shaped objects.

| Content-Type                               | function                 |
|--------------------------------------------|--------------------------|
| ``application/json-patch+json``            | `json_patch` (RFC 6902)  |
| ``application/merge-patch+json``           | `merge_patch` (RFC 7386) |
| ``application/strategic-merge-patch+json`` | `strategic_merge_patch`  |
| ``application/apply-patch+yaml``           | `server_side_apply`      |

plus `update_managed_fields`, which every non-apply write (create, update, the first three patch
types) calls to record its field manager in ``metadata.managedFields``.

Errors are the API server's: a body that is not a patch of that type is 400 BadRequest; a patch that
cannot be applied to this object (a failed ``test``, a path that is not there) is 422 Invalid, worded
as Kubernetes words it with what went wrong appended; apply conflicts are 409 with one cause per field.
None of the functions modifies its arguments.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import jsonpointer

from podvisor.apiserver.apply import LAST_APPLIED_ANNOTATION, server_side_apply
from podvisor.apiserver.errors import (
    BadRequestError,
    Cause,
    InvalidError,
    RequestEntityTooLargeError,
)
from podvisor.apiserver.managedfields import update_managed_fields
from podvisor.apiserver.strategic import json_kind as _json_kind
from podvisor.apiserver.strategic import strategic_merge_patch

__all__ = [
    "json_patch",
    "merge_patch",
    "strategic_merge_patch",
    "server_side_apply",
    "update_managed_fields",
    "LAST_APPLIED_ANNOTATION",
    "MAX_JSON_PATCH_OPERATIONS",
]

MAX_JSON_PATCH_OPERATIONS = 10000
_REJECTED = "the server rejected our request due to an error in our request"


def _unprocessable(detail: str) -> InvalidError:
    return InvalidError(f"{_REJECTED}: {detail}")


def _not_an_object(result: Any) -> InvalidError:
    kind = "array" if isinstance(result, list) else type(result).__name__
    detail = f"cannot decode a JSON {kind} into an object"
    text = repr(result) if len(repr(result)) < 200 else repr(result)[:200] + "..."
    return InvalidError.of(
        "", "", [Cause("FieldValueInvalid", f"Invalid value: {text!r}: {detail}", "patch")]
    )


def _op_failure(op: dict[str, Any], doc: Any, err: Exception) -> str:
    kind = op.get("op")
    path = op.get("path")
    if isinstance(err, jsonpatch.JsonPatchTestFailed):
        return f"testing value {path} failed: test failed"
    if kind in ("move", "copy"):
        try:
            jsonpointer.resolve_pointer(doc, op.get("from", ""))
        except (jsonpointer.JsonPointerException, TypeError):
            return f'{kind} operation does not apply: doc is missing from path: "{op.get("from")}": missing value'
    if kind in ("add", "remove", "replace", "move", "copy", "test"):
        if isinstance(err, jsonpatch.JsonPatchConflict) and "outside of list" in str(err):
            return f'{kind} operation does not apply: index out of range in path: "{path}"'
        return f'{kind} operation does not apply: doc is missing path: "{path}": missing value'
    return str(err)


def json_patch(obj: dict[str, Any], ops: Any) -> dict[str, Any]:
    """Apply an RFC 6902 JSON patch (a list of operations) to ``obj``."""
    if not isinstance(ops, list):
        raise BadRequestError(
            f"json: cannot unmarshal {_json_kind(ops)} into Go value of type jsonpatch.Patch"
        )
    for op in ops:
        if not isinstance(op, dict):
            raise BadRequestError(
                f"json: cannot unmarshal {_json_kind(op)} into Go value of type jsonpatch.Operation"
            )
    if len(ops) > MAX_JSON_PATCH_OPERATIONS:
        raise RequestEntityTooLargeError(
            f"The allowed maximum operations in a JSON patch is {MAX_JSON_PATCH_OPERATIONS}, got {len(ops)}"
        )
    doc: Any = copy.deepcopy(obj)
    for op in ops:
        kind = op.get("op")
        if kind not in ("add", "remove", "replace", "move", "copy", "test"):
            raise _unprocessable(f"Unexpected kind: {kind if isinstance(kind, str) and kind else 'unknown'}")
        if not isinstance(op.get("path"), str):
            raise _unprocessable(f"{kind} operation is missing its path")
        if kind in ("move", "copy") and not isinstance(op.get("from"), str):
            raise _unprocessable(f"{kind} operation is missing its from path")
        if kind in ("add", "replace", "test") and "value" not in op:
            raise _unprocessable(f"{kind} operation is missing its value")
        try:
            doc = jsonpatch.apply_patch(doc, [op], in_place=True)
        except (
            jsonpatch.JsonPatchException,
            jsonpointer.JsonPointerException,
            TypeError,
            KeyError,
            IndexError,
        ) as e:
            raise _unprocessable(_op_failure(op, doc, e)) from None
    if not isinstance(doc, dict):
        raise _not_an_object(doc)
    return doc


def _merge(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict):
            out[k] = _merge(out.get(k), v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def merge_patch(obj: dict[str, Any], patch: Any) -> dict[str, Any]:
    """Apply an RFC 7386 JSON merge patch: objects merge, ``null`` deletes, anything else replaces."""
    if isinstance(patch, list):
        raise _not_an_object(patch)
    if not isinstance(patch, dict):
        raise BadRequestError("Invalid JSON Patch")
    result: dict[str, Any] = _merge(copy.deepcopy(obj) if isinstance(obj, dict) else {}, patch)
    return result
