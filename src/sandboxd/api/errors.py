"""THE one table: domain exception -> HTTP status + machine code + the hybrid error body (docs/api.md).

The body satisfies both official clients: Python reads `error` as an object, JS reads top-level
`code`/`message`. Every error response carries X-Request-ID.
"""
from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from sandboxd import errors as E

log = logging.getLogger(__name__)

class PayloadTooLarge(E.Invalid):
    code = "payload_too_large"


STATUS: list[tuple[type[E.SandboxdError], int]] = [
    (PayloadTooLarge, 413),
    (E.NotFound, 404),
    (E.Invalid, 400),
    (E.Conflict, 409),
    (E.Unauthorized, 401),
    (E.Forbidden, 403),
    (E.RateLimited, 429),
    (E.QuotaExceeded, 403),  # HopX clients read 403 + "limit" as a resource limit; E2B's table says 429
    (E.CapacityExceeded, 503),
    (E.NotSupported, 501),
    (E.TemplateError, 400),
    (E.RuntimeFailure, 500),
    (E.SandboxdError, 500),
]

HTTP_CODES = {400: "invalid_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
              405: "method_not_allowed", 409: "conflict", 413: "payload_too_large", 415: "unsupported_media_type",
              429: "rate_limited", 500: "internal_error", 503: "service_unavailable"}


def status_for(exc: E.SandboxdError) -> int:
    for cls, status in STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def error_body(status: int, code: str, message: str, request_id: str, details: dict[str, Any] | None = None) -> dict:
    details = details or {}
    return {
        "error": {"message": message, "code": code, "request_id": request_id, "details": details},
        "code": code,
        "message": message,
        "request_id": request_id,
        "details": details,
    }


def error_response(request: Request | None, status: int, code: str, message: str,
                   details: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    rid = request_id_of(request)
    hdrs = {"X-Request-ID": rid, **(headers or {})}
    if status == 429 or status == 503:
        retry = (details or {}).get("retry_after_seconds")
        if retry:
            hdrs["Retry-After"] = str(retry)
    return JSONResponse(error_body(status, code, message, rid, details), status_code=status, headers=hdrs)


def request_id_of(request: Request | None) -> str:
    if request is None:
        return "req_unknown"
    return getattr(request.state, "request_id", None) or "req_unknown"


async def _domain(request: Request, exc: E.SandboxdError) -> JSONResponse:
    status = status_for(exc)
    if status >= 500 and status != 503:  # 503 is a capacity answer, not a fault
        log.error("%s %s failed: %s", request.method, request.url.path, exc)
    return error_response(request, status, exc.code, exc.message, exc.details)


async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = []
    code, message = "invalid_request", "request validation failed"
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            code, message = "invalid_json", "request body is not valid JSON"
        errors.append({"loc": [str(x) for x in err.get("loc", ())], "msg": str(err.get("msg")), "type": err.get("type")})
    if errors and code == "invalid_request":
        first = errors[0]
        message = f"{'.'.join(first['loc'][1:]) or 'body'}: {first['msg']}"
    return error_response(request, 400, code, message, {"errors": json.loads(json.dumps(errors, default=str))})


async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = HTTP_CODES.get(exc.status_code, "error")
    message = exc.detail if isinstance(exc.detail, str) else code
    if exc.status_code == 404 and message == "Not Found":
        message = f"no route for {request.method} {request.url.path}"
    return error_response(request, exc.status_code, code, message, headers=getattr(exc, "headers", None))


async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(request, 500, "internal_error", "internal server error")


def install(app: FastAPI) -> None:
    # Starlette types a handler's exception as Exception; it calls each with the class it is registered for.
    app.add_exception_handler(E.SandboxdError, _domain)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unhandled)
