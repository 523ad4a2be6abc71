"""Desktop errors. Each carries the agent wire code and the HTTP status it is answered with.

They subclass the shared domain tree so the agent's own error table can map them too; the desktop
ASGI adapter renders them itself (hybrid error body of contracts/hopx.md §3.0) so it works standalone.
"""
from __future__ import annotations

from sandboxd.errors import SandboxdError


class DesktopError(SandboxdError):
    code = "DESKTOP_ERROR"
    status = 500


class DesktopNotAvailable(DesktopError):
    """Missing packages. 501, not 503: the SDKs retry 503 three times and nothing would change."""

    code = "DESKTOP_NOT_AVAILABLE"
    status = 501

    def __init__(self, missing: list[str], message: str | None = None):
        msg = message or ("Desktop automation is not available in this sandbox; missing: " + ", ".join(missing))
        super().__init__(msg, details={"missing_dependencies": list(missing)})
        self.missing = list(missing)


class DesktopInvalid(DesktopError):
    code = "INVALID_REQUEST"
    status = 400


class DesktopNotFound(DesktopError):
    code = "NOT_FOUND"
    status = 404


class DesktopToolFailed(DesktopError):
    """An X tool (xdotool, ffmpeg, ...) exited non-zero; the stderr tail is in details."""

    code = "DESKTOP_ERROR"
    status = 500
