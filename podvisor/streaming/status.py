"""The Status a streaming session ends with, as the client reads it from the error stream.

Protocol v4 and later carry a JSON ``metav1.Status``: ``Success``, or ``Failure`` with reason
``NonZeroExitCode`` and a cause ``{reason: ExitCode, message: "<code>"}`` - which is how kubectl learns
the exit code it exits with - or ``InternalError`` when the command could not run. Older protocols
carry only the error text, and nothing on success.
"""

from __future__ import annotations

import json
from typing import Any

from podvisor.streaming.target import ExitStatus

__all__ = ["success", "exit_code", "internal_error", "outcome_status", "encode_status", "normalize_exit_code"]


def normalize_exit_code(code: int) -> int:
    """0-255, as kubectl parses it (a uint8); a negative code (killed by signal N) becomes 128+N."""
    if code < 0:
        code = 128 + (-code & 0x7F)
    return code & 0xFF


def success() -> dict[str, Any]:
    return {"metadata": {}, "status": "Success"}


def exit_code(code: int, detail: str = "") -> dict[str, Any]:
    code = normalize_exit_code(code)
    message = f"command terminated with non-zero exit code: {detail or f'exit code {code}'}"
    return {
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }


def internal_error(detail: str) -> dict[str, Any]:
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"Internal error occurred: {detail}",
        "reason": "InternalError",
        "details": {"causes": [{"message": detail}]},
        "code": 500,
    }


def outcome_status(outcome: ExitStatus | BaseException) -> dict[str, Any]:
    """The Status for what ``run`` returned or raised."""
    if isinstance(outcome, BaseException):
        return internal_error(f"error executing command in container: {outcome}")
    if normalize_exit_code(outcome.code) == 0:
        return success()
    return exit_code(outcome.code, outcome.message)


def encode_status(status: dict[str, Any], *, structured: bool) -> bytes:
    """The bytes for the error stream: JSON for v4+, the bare message (or nothing) before."""
    if structured:
        return json.dumps(status, separators=(",", ":")).encode()
    if status.get("status") == "Success":
        return b""
    return str(status.get("message", "")).encode()
