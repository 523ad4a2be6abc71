"""The one error vocabulary of sandboxd, on the ground floor: every layer raises these (or subclasses of them),
never an HTTP type. Each carries a machine code and details; each edge has one table that turns them into
its wire form: api/errors.py (HopX and E2B control plane), the gateway's and the agent's own tables.

    SandboxdError                 internal_error
    +-- NotFound                  not_found
    +-- Invalid                   invalid_request
    +-- Conflict                  conflict
    +-- Unauthorized              unauthorized
    +-- Forbidden                 forbidden
    +-- RateLimited               rate_limited
    +-- QuotaExceeded             quota_exceeded         (a team's quota: retrying does not help)
    +-- CapacityExceeded          capacity_exceeded      (retry later: 503 with Retry-After)
    +-- NotSupported              not_supported          (the backend cannot do this)
    +-- RuntimeFailure            runtime_error          (crun, mount, cgroups, netlink... failed)
    +-- TemplateError             template_error
        +-- BuildFailed           build_failed
"""
from __future__ import annotations

from typing import Any


class SandboxdError(Exception):
    code = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.details = details or {}


class NotFound(SandboxdError):
    code = "not_found"


class Invalid(SandboxdError):
    code = "invalid_request"


class Conflict(SandboxdError):
    code = "conflict"


class Unauthorized(SandboxdError):
    code = "unauthorized"


class Forbidden(SandboxdError):
    code = "forbidden"


class RateLimited(SandboxdError):
    code = "rate_limited"


class QuotaExceeded(SandboxdError):
    """The caller's team would go over a quota the operator set (docs/teams.md#quotas); details name the
    quota, its limit and the current use."""

    code = "quota_exceeded"


class CapacityExceeded(SandboxdError):
    """No room for another sandbox right now; the client should retry later."""

    code = "capacity_exceeded"


class NotSupported(SandboxdError):
    """The backend cannot do this operation (declared in its Capabilities)."""

    code = "not_supported"


class RuntimeFailure(SandboxdError):
    """The isolation runtime (crun, mount, cgroups, netlink...) failed; wraps OSError/CalledProcessError."""

    code = "runtime_error"


class TemplateError(SandboxdError):
    code = "template_error"


class BuildFailed(TemplateError):
    code = "build_failed"
