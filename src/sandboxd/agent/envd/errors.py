"""envd's one error table: the agent's errors (`sandboxd.errors` and the subclasses in agent/errors.py)
to Connect codes for the RPCs and to statuses for the plain HTTP routes (`/files`, the interpreter).

`connect.ConnectError` is the wire answer only; services raise the shared vocabulary.
"""
from __future__ import annotations

from sandboxd.errors import (CapacityExceeded, Conflict, Forbidden, Invalid, NotFound, NotSupported, RateLimited,
                             SandboxdError, Unauthorized)

from ..errors import (AgentError, BodyTooLarge, DirectoryNotFound, FailedPrecondition, FileExists, FileNotFound,
                      PermissionDenied, lookup)
from .connect import ConnectError


class DiskFull(AgentError):
    """ENOSPC/EDQUOT on a write."""

    code = "DISK_FULL"


CONNECT_CODES: dict[type, str] = {
    FailedPrecondition: "failed_precondition", BodyTooLarge: "resource_exhausted", DirectoryNotFound: "invalid_argument",
    Invalid: "invalid_argument", Unauthorized: "unauthenticated", Forbidden: "permission_denied",
    NotFound: "not_found", Conflict: "already_exists", RateLimited: "resource_exhausted",
    CapacityExceeded: "resource_exhausted", NotSupported: "unimplemented", SandboxdError: "internal",
}

# envd answers a file it may not touch with 401 (the SDK's permission error), a user it cannot act as with 403.
HTTP_STATUSES: dict[type, int] = {
    BodyTooLarge: 413, PermissionDenied: 401, DiskFull: 507, DirectoryNotFound: 400,
    Invalid: 400, Unauthorized: 401, Forbidden: 403, NotFound: 404, SandboxdError: 500,
}


# envd's wording for the files service's errors, filled from their details (the SDK keys on the code; people
# read the words). envd answers a path through something that is not a directory as an invalid argument.
MESSAGES: dict[type, str] = {
    FileNotFound: "path '{path}' does not exist",
    DirectoryNotFound: "path '{path}' is not a directory",
    FileExists: "{kind} '{path}' already exists",
}


def message(exc: SandboxdError) -> str:
    template = lookup(MESSAGES, exc, None)
    if template is None or "path" not in exc.details:
        return exc.message
    return template.format(kind=exc.details.get("kind", "path"), path=exc.details["path"])


def to_connect(exc: BaseException) -> ConnectError | None:
    """The Connect answer to exc; None for an unexpected failure (the codec answers `internal`)."""
    if isinstance(exc, ConnectError):
        return exc
    if isinstance(exc, SandboxdError):
        return ConnectError(lookup(CONNECT_CODES, exc, "internal"), message(exc))
    if isinstance(exc, PermissionError):
        return ConnectError("permission_denied", str(exc))
    if isinstance(exc, (ValueError, TypeError, KeyError)):
        return ConnectError("invalid_argument", f"{type(exc).__name__}: {exc}")
    return None


def http_status(exc: SandboxdError) -> int:
    return lookup(HTTP_STATUSES, exc, 500)
