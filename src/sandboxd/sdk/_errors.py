"""The SDK's one exception tree. Every failure a caller can see is a `SandboxError`; httpx and
websockets exceptions are translated at the transport boundary and never escape."""
from __future__ import annotations

from typing import Any


class SandboxError(Exception):
    """Root of every SDK error. `status_code`, `code` and `request_id` are set when a server answered."""

    def __init__(self, message: str, *, status_code: int | None = None, code: str | None = None,
                 request_id: str | None = None, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.code = code
        self.request_id = request_id
        self.details = details or {}

    def __str__(self) -> str:
        extra = [f"{k}={v}" for k, v in (("status", self.status_code), ("code", self.code),
                                         ("request_id", self.request_id)) if v]
        return f"{self.message} ({', '.join(extra)})" if extra else self.message


class AuthenticationError(SandboxError):
    """401: the API key (or sandbox token) is missing, unknown or revoked."""


class PermissionDeniedError(SandboxError):
    """403: the key is valid but not allowed to do this (e.g. key management needs an admin key)."""


class QuotaExceededError(PermissionDeniedError):
    """403 `quota_exceeded`: the key's team would go over a quota the operator set."""

    @property
    def quota(self) -> str | None:
        return self.details.get("quota")

    @property
    def limit(self) -> int | None:
        return self.details.get("limit")

    @property
    def current(self) -> int | float | None:
        return self.details.get("current")


class NotFoundError(SandboxError):
    """404: the sandbox, template, key or path does not exist (a killed sandbox is not found)."""


class PathNotFoundError(NotFoundError):
    """A file or directory inside the sandbox does not exist."""

    @property
    def path(self) -> str | None:
        return self.details.get("path")


class InvalidRequestError(SandboxError):
    """400/422: the server rejected the arguments."""


class ConflictError(SandboxError):
    """409: the sandbox is in a state that does not allow this (e.g. running code in a paused sandbox)."""


class RateLimitError(SandboxError):
    """429: too many requests; `retry_after` seconds is the server's hint."""

    @property
    def retry_after(self) -> float | None:
        value = self.details.get("retry_after_seconds")
        return float(value) if value is not None else None


class ServerError(SandboxError):
    """5xx: the server failed; the request may be retried."""


class NetworkError(SandboxError):
    """The server could not be reached, or the connection broke."""


class RequestTimeoutError(NetworkError):
    """No answer within the client's timeout."""


class CommandExitError(SandboxError):
    """`commands.run(..., check=True)` and `handle.wait(check=True)`: the command exited non-zero."""

    def __init__(self, result: Any):
        super().__init__(f"command exited with code {result.exit_code}: {result.stderr.strip()[-500:]}",
                         code="command_failed", details={"exit_code": result.exit_code})
        self.result = result

    @property
    def exit_code(self) -> int:
        return self.result.exit_code


class TemplateBuildError(SandboxError):
    """A template build ended in a failed state."""


_BY_STATUS: dict[int, type[SandboxError]] = {
    400: InvalidRequestError, 401: AuthenticationError, 403: PermissionDeniedError, 404: NotFoundError,
    409: ConflictError, 410: NotFoundError, 413: InvalidRequestError, 422: InvalidRequestError,
    429: RateLimitError,
}
_PATH_CODES = {"FILE_NOT_FOUND", "DIRECTORY_NOT_FOUND"}


def error_from_response(status: int, body: Any, text: str, request_id: str | None) -> SandboxError:
    """Build the right exception from an error response in either of our two shapes: the control
    plane's hybrid body (`error` is an object) and the agent's flat one (`error` is a string)."""
    message: str | None = None
    code: str | None = None
    details: dict[str, Any] = {}
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            message, code = err.get("message"), err.get("code")
            details = err.get("details") or {}
            request_id = request_id or err.get("request_id")
        elif isinstance(err, str):
            message = err
        message = body.get("message") or message
        code = body.get("code") or code
        if isinstance(body.get("details"), dict):
            details = {**body["details"], **details}
        if body.get("path") and "path" not in details:
            details["path"] = body["path"]
        if isinstance(body.get("detail"), (str, list)):  # plain FastAPI validation/HTTP errors
            message = message or str(body["detail"])
        request_id = request_id or body.get("request_id")
    message = message or (text.strip()[:500] if text else "") or f"HTTP {status}"
    if code in _PATH_CODES:
        cls: type[SandboxError] = PathNotFoundError
    elif code == "quota_exceeded":
        cls = QuotaExceededError
    elif status >= 500:
        cls = ServerError
    else:
        cls = _BY_STATUS.get(status, SandboxError)
    return cls(message, status_code=status, code=code, request_id=request_id, details=details)
