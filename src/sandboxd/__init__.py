"""sandboxd: self-hosted isolated sandboxes.

The public SDK names are exported lazily (PEP 562) so that the in-sandbox agent, which imports
`sandboxd.agent`, does not pay for importing the SDK and its HTTP stack at start-up.
"""
from __future__ import annotations

__version__ = "0.1.0"

# name -> module that defines it; filled in by the SDK.
_LAZY: dict[str, str] = {
    "Sandbox": "sandboxd.sdk",
    "AsyncSandbox": "sandboxd.sdk",
    "Client": "sandboxd.sdk",
    "AsyncClient": "sandboxd.sdk",
    "CommandHandle": "sandboxd.sdk",
    "AsyncCommandHandle": "sandboxd.sdk",
    "TerminalSession": "sandboxd.sdk",
    "AsyncTerminalSession": "sandboxd.sdk",
    "SandboxInfo": "sandboxd.sdk",
    "NetworkInfo": "sandboxd.sdk",
    "EgressDenied": "sandboxd.sdk",
    "Refusal": "sandboxd.sdk",
    "DestinationUsage": "sandboxd.sdk",
    "Execution": "sandboxd.sdk",
    "CellFailure": "sandboxd.sdk",
    "Result": "sandboxd.sdk",
    "CommandResult": "sandboxd.sdk",
    "ProcessInfo": "sandboxd.sdk",
    "FileEntry": "sandboxd.sdk",
    "FileEvent": "sandboxd.sdk",
    "Metric": "sandboxd.sdk",
    "SandboxEvent": "sandboxd.sdk",
    "ApiKey": "sandboxd.sdk",
    "TeamInfo": "sandboxd.sdk",
    "TemplateInfo": "sandboxd.sdk",
    "Usage": "sandboxd.sdk",
    "TeamUsage": "sandboxd.sdk",
    "SandboxUsage": "sandboxd.sdk",
    "SandboxError": "sandboxd.sdk",
    "AuthenticationError": "sandboxd.sdk",
    "PermissionDeniedError": "sandboxd.sdk",
    "NotFoundError": "sandboxd.sdk",
    "PathNotFoundError": "sandboxd.sdk",
    "InvalidRequestError": "sandboxd.sdk",
    "ConflictError": "sandboxd.sdk",
    "QuotaExceededError": "sandboxd.sdk",
    "RateLimitError": "sandboxd.sdk",
    "ServerError": "sandboxd.sdk",
    "NetworkError": "sandboxd.sdk",
    "RequestTimeoutError": "sandboxd.sdk",
    "CommandExitError": "sandboxd.sdk",
    "TemplateBuildError": "sandboxd.sdk",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sandboxd' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
