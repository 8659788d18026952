"""hostd's errors, each with its HTTP status and a stable code (the API's ``error.code``).

    HostdError (500 Internal)
    ├── BadRequest (400)
    ├── Unauthorized (401)
    ├── NotFound (404)
    ├── Conflict (409)          e.g. hot-plug on a running microvm, power-on of a VM being stopped
    ├── BundleRejected (412)    the CRX bundle failed verification: nothing was booted
    └── BootFailed (500)        QEMU or the guest did not come up
"""

from __future__ import annotations

__all__ = ["HostdError", "BadRequest", "Unauthorized", "NotFound", "Conflict", "BundleRejected", "BootFailed"]


class HostdError(Exception):
    status = 500
    code = "Internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_json(self) -> dict[str, object]:
        return {"error": {"code": self.code, "message": self.message}}


class BadRequest(HostdError):
    status = 400
    code = "BadRequest"


class Unauthorized(HostdError):
    status = 401
    code = "Unauthorized"


class NotFound(HostdError):
    status = 404
    code = "NotFound"


class Conflict(HostdError):
    status = 409
    code = "Conflict"


class BundleRejected(HostdError):
    status = 412
    code = "BundleRejected"


class BootFailed(HostdError):
    status = 500
    code = "BootFailed"
