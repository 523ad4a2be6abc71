"""E2B's error shape on the E2B routes: `{"code": <HTTP status>, "message": ..., "error_code": ...}`.

Statuses come from the one table (api/errors.py) but for the few E2B answers otherwise (`E2B_STATUS`); the body
differs from the HopX dialect. A route class converts instead of an app-wide handler, so the HopX routes keep
their hybrid body.
"""
from __future__ import annotations

import logging
from typing import Callable

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from sandboxd.api.errors import request_id_of, status_for
from sandboxd.errors import QuotaExceeded, SandboxdError

log = logging.getLogger(__name__)

# E2B answers a team over its quota (e.g. its concurrent sandboxes) with 429, as its own API does. Its SDK
# retries a 429 unless told not to: Should-Retry: false, since only the team's use going down helps.
E2B_STATUS: dict[type[SandboxdError], int] = {QuotaExceeded: 429}
NO_RETRY = (QuotaExceeded,)


def e2b_status_for(exc: SandboxdError) -> int:
    for cls, status in E2B_STATUS.items():
        if isinstance(exc, cls):
            return status
    return status_for(exc)


def e2b_error(request: Request, status: int, message: str, error_code: str | None = None,
              headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"code": status, "message": message}
    if error_code:
        body["error_code"] = error_code
    hdrs = {"X-Request-ID": request_id_of(request), **(headers or {})}
    return JSONResponse(body, status_code=status, headers=hdrs)


class E2BRoute(APIRoute):
    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except SandboxdError as exc:
                status = e2b_status_for(exc)
                headers = {}
                retry = exc.details.get("retry_after_seconds") if exc.details else None
                if status in (429, 503) and retry:
                    headers["Retry-After"] = str(retry)
                if isinstance(exc, NO_RETRY):
                    headers["Should-Retry"] = "false"
                if status >= 500 and status != 503:
                    headers["Should-Retry"] = "false"  # a failed create must not be replayed blindly
                    log.error("%s %s failed: %s", request.method, request.url.path, exc)
                return e2b_error(request, status, exc.message, exc.code, headers)
            except RequestValidationError as exc:
                first = exc.errors()[0] if exc.errors() else {}
                where = ".".join(str(x) for x in first.get("loc", ())[1:]) or "body"
                return e2b_error(request, 400, f"{where}: {first.get('msg', 'invalid request')}", "invalid_request")
            except HTTPException as exc:
                return e2b_error(request, exc.status_code, str(exc.detail))

        return route
