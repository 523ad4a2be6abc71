"""sandboxd's Python SDK: `Sandbox` / `AsyncSandbox` for working in a sandbox, `Client` /
`AsyncClient` for the control plane by id (keys, teams, templates), and one exception tree rooted at
`SandboxError`. Configuration: SANDBOXD_URL (default http://127.0.0.1:8080) and SANDBOXD_API_KEY."""
from __future__ import annotations

from ._async_parts import AsyncCommandHandle, AsyncTerminalSession
from ._async_sandbox import AsyncSandbox
from ._client import AsyncClient, Client
from ._errors import (
    AuthenticationError,
    CommandExitError,
    ConflictError,
    InvalidRequestError,
    NetworkError,
    NotFoundError,
    PathNotFoundError,
    PermissionDeniedError,
    QuotaExceededError,
    RateLimitError,
    RequestTimeoutError,
    SandboxError,
    ServerError,
    TemplateBuildError,
)
from ._models import (
    ApiKey,
    CommandResult,
    Execution,
    CellFailure,
    DestinationUsage,
    EgressDenied,
    FileEntry,
    FileEvent,
    Metric,
    NetworkInfo,
    ProcessInfo,
    Refusal,
    Result,
    SandboxEvent,
    SandboxInfo,
    TeamInfo,
    TemplateInfo,
    SandboxUsage,
    TeamUsage,
    Usage,
)
from ._parts import CommandHandle, TerminalSession
from ._sandbox import Sandbox

__all__ = [
    "Sandbox", "AsyncSandbox", "Client", "AsyncClient",
    "CommandHandle", "AsyncCommandHandle", "TerminalSession", "AsyncTerminalSession",
    "SandboxInfo", "Execution", "CellFailure", "Result", "CommandResult", "ProcessInfo", "FileEntry",
    "FileEvent", "Metric", "SandboxEvent", "ApiKey", "TeamInfo", "TemplateInfo", "Usage", "TeamUsage",
    "SandboxUsage", "NetworkInfo", "EgressDenied", "Refusal", "DestinationUsage",
    "SandboxError", "AuthenticationError", "PermissionDeniedError", "NotFoundError", "PathNotFoundError",
    "InvalidRequestError", "ConflictError", "QuotaExceededError", "RateLimitError", "ServerError", "NetworkError",
    "RequestTimeoutError", "CommandExitError", "TemplateBuildError",
]
