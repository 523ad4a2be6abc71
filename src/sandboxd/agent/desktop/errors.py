"""Desktop errors: the agent wire code on classes of the shared tree (`sandboxd.errors`), no HTTP status.

The desktop ASGI adapter answers them with the agent's HopX table (`agent/errors.py` STATUSES) in the
hybrid error body of docs/clients/hopx.md.
"""
from __future__ import annotations

from sandboxd.errors import Invalid, NotFound, NotSupported, RuntimeFailure, SandboxdError


class DesktopError(SandboxdError):
    code = "DESKTOP_ERROR"


class DesktopNotAvailable(DesktopError, NotSupported):
    """Missing packages. 501, not 503: the SDKs retry 503 three times and nothing would change."""

    code = "DESKTOP_NOT_AVAILABLE"

    def __init__(self, missing: list[str], message: str | None = None):
        msg = message or ("Desktop automation is not available in this sandbox; missing: " + ", ".join(missing))
        super().__init__(msg, details={"missing_dependencies": list(missing)})
        self.missing = list(missing)


class DesktopInvalid(DesktopError, Invalid):
    code = "INVALID_REQUEST"


class DesktopNotFound(DesktopError, NotFound):
    code = "NOT_FOUND"


class DesktopToolFailed(DesktopError, RuntimeFailure):
    """An X tool (xdotool, ffmpeg, ...) exited non-zero; the stderr tail is in details."""

    code = "DESKTOP_ERROR"
