"""Agent errors: each carries the HTTP status and the UPPERCASE code the HopX clients switch on.

Services raise these (they know no HTTP otherwise); `App.error_response` turns them into the hybrid body.
"""
from __future__ import annotations

from typing import Any


class AgentError(Exception):
    status = 500
    code = "INTERNAL_ERROR"

    def __init__(self, message: str, **details: Any):
        super().__init__(message)
        self.message = message
        self.details = details


class InvalidRequest(AgentError):
    status, code = 400, "INVALID_REQUEST"


class MissingParameter(AgentError):
    status, code = 400, "MISSING_PARAMETER"


class InvalidPath(AgentError):
    status, code = 400, "INVALID_PATH"


class FileNotFound(AgentError):
    status, code = 404, "FILE_NOT_FOUND"


class DirectoryNotFound(AgentError):
    status, code = 404, "DIRECTORY_NOT_FOUND"


class PathNotAllowed(AgentError):
    status, code = 403, "PATH_NOT_ALLOWED"


class PermissionDenied(AgentError):
    status, code = 403, "PERMISSION_DENIED"


class FileExists(AgentError):
    status, code = 409, "FILE_ALREADY_EXISTS"


class ProcessNotFound(AgentError):
    status, code = 404, "PROCESS_NOT_FOUND"


def to_number(value, default: float, name: str) -> float:
    """A positive number from a request field (absent: default), else InvalidRequest. Here, not in
    execution.py, so /commands does not load the kernel manager at the agent's start (≈ 3.5 ms)."""
    if value is None:
        return default
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InvalidRequest(f"{name} must be a number") from None
    if v <= 0:
        raise InvalidRequest(f"{name} must be positive")
    return v
