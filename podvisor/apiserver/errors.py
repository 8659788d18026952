"""API errors as exceptions that render to a Kubernetes ``metav1.Status``.

Every failure a client can see is one of these; the HTTP layer turns any of them into a JSON
``Status`` body with the same code, reason, message and field causes kubectl prints. Anything else
escaping a handler is a bug and renders as a 500 InternalError without a traceback in the body.

    APIError
    ├── BadRequestError          400 BadRequest
    ├── UnauthorizedError        401 Unauthorized
    ├── ForbiddenError           403 Forbidden
    ├── NotFoundError            404 NotFound
    ├── MethodNotAllowedError    405 MethodNotAllowed
    ├── NotAcceptableError       406 NotAcceptable
    ├── AlreadyExistsError       409 AlreadyExists
    ├── ConflictError            409 Conflict
    ├── GoneError                410 Expired   (watch/list past the kept window, bad continue token)
    ├── RequestEntityTooLargeError 413 RequestEntityTooLarge
    ├── UnsupportedMediaTypeError 415 UnsupportedMediaType
    ├── InvalidError             422 Invalid   (field causes)
    ├── TooManyRequestsError     429 TooManyRequests
    ├── InternalError            500 InternalError
    └── ServiceUnavailableError  503 ServiceUnavailable
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

__all__ = [
    "Cause",
    "APIError",
    "BadRequestError",
    "UnauthorizedError",
    "ForbiddenError",
    "NotFoundError",
    "MethodNotAllowedError",
    "NotAcceptableError",
    "AlreadyExistsError",
    "ConflictError",
    "GoneError",
    "RequestEntityTooLargeError",
    "UnsupportedMediaTypeError",
    "InvalidError",
    "TooManyRequestsError",
    "InternalError",
    "ServiceUnavailableError",
    "status_dict",
]


@dataclass(frozen=True, slots=True)
class Cause:
    """One ``details.causes[]`` entry. ``reason`` is a metav1.CauseType such as ``FieldValueInvalid``,
    ``FieldValueRequired``, ``FieldValueNotSupported``, ``FieldValueDuplicate``, ``FieldValueForbidden``,
    ``FieldValueTooLong``, ``FieldValueTypeInvalid``, ``FieldManagerConflict``, ``UnexpectedServerResponse``."""

    reason: str
    message: str
    field: str = ""

    def to_dict(self) -> dict[str, str]:
        d = {"reason": self.reason, "message": self.message}
        if self.field:
            d["field"] = self.field
        return d


class APIError(Exception):
    code: ClassVar[int] = 500
    reason: ClassVar[str] = "InternalError"

    def __init__(
        self,
        message: str,
        *,
        name: str = "",
        group: str = "",
        kind: str = "",
        causes: list[Cause] | None = None,
        retry_after: int = 0,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.name = name
        self.group = group
        self.kind = kind
        self.causes = list(causes or [])
        self.retry_after = retry_after

    def status(self) -> dict[str, Any]:
        return status_dict(self)


class BadRequestError(APIError):
    code = 400
    reason = "BadRequest"


class UnauthorizedError(APIError):
    code = 401
    reason = "Unauthorized"


class ForbiddenError(APIError):
    code = 403
    reason = "Forbidden"


class NotFoundError(APIError):
    code = 404
    reason = "NotFound"

    @classmethod
    def of(cls, resource: str, name: str, *, group: str = "") -> NotFoundError:
        """Kubernetes' wording: ``configmaps "c1" not found`` (``deployments.apps "d" not found``)."""
        qualified = f"{resource}.{group}" if group else resource
        return cls(f'{qualified} "{name}" not found', name=name, group=group, kind=resource)


class MethodNotAllowedError(APIError):
    code = 405
    reason = "MethodNotAllowed"


class NotAcceptableError(APIError):
    code = 406
    reason = "NotAcceptable"


class AlreadyExistsError(APIError):
    code = 409
    reason = "AlreadyExists"

    @classmethod
    def of(cls, resource: str, name: str, *, group: str = "") -> AlreadyExistsError:
        qualified = f"{resource}.{group}" if group else resource
        return cls(f'{qualified} "{name}" already exists', name=name, group=group, kind=resource)


class ConflictError(APIError):
    code = 409
    reason = "Conflict"

    @classmethod
    def stale(cls, resource: str, name: str, *, group: str = "") -> ConflictError:
        """The optimistic-concurrency failure, worded as Kubernetes words it."""
        qualified = f"{resource}.{group}" if group else resource
        return cls(
            f'Operation cannot be fulfilled on {qualified} "{name}": the object has been modified; '
            "please apply your changes to the latest version and try again",
            name=name,
            group=group,
            kind=resource,
        )


class GoneError(APIError):
    code = 410
    reason = "Expired"


class RequestEntityTooLargeError(APIError):
    code = 413
    reason = "RequestEntityTooLarge"


class UnsupportedMediaTypeError(APIError):
    code = 415
    reason = "UnsupportedMediaType"


class InvalidError(APIError):
    """422 with one cause per offending field. The message follows Kubernetes:
    ``ConfigMap "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name": ...``."""

    code = 422
    reason = "Invalid"

    @classmethod
    def of(cls, kind: str, name: str, causes: list[Cause], *, group: str = "") -> InvalidError:
        parts = [f"{c.field}: {c.message}" if c.field else c.message for c in causes]
        if len(parts) == 1:
            detail = parts[0]
        else:
            detail = "[" + ", ".join(parts) + "]"
        return cls(f'{kind} "{name}" is invalid: {detail}', name=name, group=group, kind=kind, causes=causes)


class TooManyRequestsError(APIError):
    code = 429
    reason = "TooManyRequests"


class InternalError(APIError):
    code = 500
    reason = "InternalError"


class ServiceUnavailableError(APIError):
    code = 503
    reason = "ServiceUnavailable"


def status_dict(err: APIError) -> dict[str, Any]:
    """The ``metav1.Status`` body for an error."""
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": err.message,
        "reason": err.reason,
        "code": err.code,
    }
    details: dict[str, Any] = {}
    if err.name:
        details["name"] = err.name
    if err.group:
        details["group"] = err.group
    if err.kind:
        details["kind"] = err.kind
    if err.causes:
        details["causes"] = [c.to_dict() for c in err.causes]
    if err.retry_after:
        details["retryAfterSeconds"] = err.retry_after
    if details:
        body["details"] = details
    return body
