"""API-key authentication: X-API-Key, Authorization: Bearer, and ?token= (SSE clients such as EventSource)."""
from __future__ import annotations

from fastapi import Request

from sandboxd.core.apikeys import ApiKey
from sandboxd.core.errors import Forbidden, Unauthorized


def presented_key(request) -> str | None:
    """The credential a request carries, wherever the client put it (works on Request and HTTPConnection)."""
    key = request.headers.get("x-api-key")
    if key:
        return key.strip()
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    token = request.query_params.get("token")
    return token or None


# Dependencies are coroutines: FastAPI runs a plain `def` dependency on its thread pool, a hop out of the event
# loop and back (with a GIL hand-off each way) on every request for what is an attribute read.
async def require_key(request: Request) -> ApiKey:
    # The middleware already looked the key up (it needs it for rate limiting).
    key: ApiKey | None = getattr(request.state, "api_key", None)
    if key is None:
        if getattr(request.state, "presented_key", None):
            raise Unauthorized("invalid API key", code="invalid_api_key")
        raise Unauthorized("missing API key: send X-API-Key or Authorization: Bearer", code="missing_api_key")
    return key


async def require_admin(request: Request) -> ApiKey:
    key = await require_key(request)
    if not key.is_admin:
        raise Forbidden("this operation needs an admin API key", code="admin_required")
    return key
