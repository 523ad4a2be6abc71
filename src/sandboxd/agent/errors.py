"""Agent errors: subclasses of the ground-floor vocabulary (`sandboxd.errors`) whose `code` is the
UPPERCASE code the HopX clients switch on. They carry no HTTP status: each wire adapter has one table
that answers them (`STATUSES` below for HopX and the desktop API, `envd/wire.py` for E2B's envd).
"""
from __future__ import annotations

from typing import Any

from sandboxd.errors import (CapacityExceeded, Conflict, Forbidden, Invalid, NotFound, NotSupported, RateLimited,
                             RuntimeFailure, SandboxdError, Unauthorized)


class AgentError(SandboxdError):
    """Base of the agent's own errors; keyword arguments become `details`."""

    code = "INTERNAL_ERROR"

    def __init__(self, message: str, **details: Any):
        super().__init__(message, details=details)


class InvalidRequest(AgentError, Invalid):
    code = "INVALID_REQUEST"


class InvalidJSON(AgentError, Invalid):
    code = "INVALID_JSON"


class MissingParameter(AgentError, Invalid):
    code = "MISSING_PARAMETER"


class InvalidPath(AgentError, Invalid):
    code = "INVALID_PATH"


class BodyTooLarge(AgentError, Invalid):
    code = "INVALID_REQUEST"


class MethodNotAllowed(AgentError, Invalid):
    code = "METHOD_NOT_ALLOWED"


class RouteNotFound(AgentError, NotFound):
    code = "NOT_FOUND"


class FileNotFound(AgentError, NotFound):
    code = "FILE_NOT_FOUND"


class DirectoryNotFound(AgentError, NotFound):
    code = "DIRECTORY_NOT_FOUND"


class ProcessNotFound(AgentError, NotFound):
    code = "PROCESS_NOT_FOUND"


class WatcherNotFound(AgentError, NotFound):
    code = "NOT_FOUND"


class PathNotAllowed(AgentError, Forbidden):
    code = "PATH_NOT_ALLOWED"


class PermissionDenied(AgentError, Forbidden):
    code = "PERMISSION_DENIED"


class FileExists(AgentError, Conflict):
    code = "FILE_ALREADY_EXISTS"


class FailedPrecondition(AgentError, Invalid):
    """The call is well formed but the target's state refuses it (stdin closed, no PTY)."""

    code = "FAILED_PRECONDITION"


class CannotFork(AgentError, CapacityExceeded):
    """The sandbox has no room for another process (its pids limit): the caller may retry later."""

    code = "INTERNAL_ERROR"


class PortNotOpen(AgentError, RuntimeFailure):
    """Nothing in the sandbox listens on the port a CONNECT names."""

    code = "port_not_open"


# HopX's (and the desktop API's) one table: the first class in an error's MRO found here gives its status.
STATUSES: dict[type, int] = {
    BodyTooLarge: 413, MethodNotAllowed: 405, PortNotOpen: 502,
    Invalid: 400, Unauthorized: 401, Forbidden: 403, NotFound: 404, Conflict: 409, RateLimited: 429,
    NotSupported: 501, CapacityExceeded: 503, SandboxdError: 500,
}


def lookup(table: dict, exc: BaseException, default):
    """The entry of exc's nearest class in an adapter's table (so a subclass may answer apart)."""
    for cls in type(exc).__mro__:
        if cls in table:
            return table[cls]
    return default


def status_of(exc: SandboxdError) -> int:
    return lookup(STATUSES, exc, 500)


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
