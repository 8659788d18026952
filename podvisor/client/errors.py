"""Client-side errors: a non-2xx answer becomes one of these, carrying the server's Status.

    APIStatusError (any non-2xx)
    ├── NotFound (404)
    ├── Conflict (409 Conflict)
    ├── AlreadyExists (409 AlreadyExists)
    └── Gone (410: relist)
"""

from __future__ import annotations

from typing import Any

__all__ = ["APIStatusError", "NotFound", "Conflict", "AlreadyExists", "Gone", "error_for"]


class APIStatusError(Exception):
    def __init__(self, code: int, status: dict[str, Any]) -> None:
        self.code = code
        self.status = status
        self.reason = str(status.get("reason", ""))
        super().__init__(f"HTTP {code} {self.reason}: {status.get('message', '')}")


class NotFound(APIStatusError):
    pass


class Conflict(APIStatusError):
    pass


class AlreadyExists(APIStatusError):
    pass


class Gone(APIStatusError):
    pass


def error_for(code: int, status: dict[str, Any]) -> APIStatusError:
    if code == 404:
        return NotFound(code, status)
    if code == 409:
        return AlreadyExists(code, status) if status.get("reason") == "AlreadyExists" else Conflict(code, status)
    if code == 410:
        return Gone(code, status)
    return APIStatusError(code, status)
