"""API-key authentication: X-API-Key or Authorization: Bearer; `?token=` only where a client cannot set
headers.

A browser's EventSource (SSE) and WebSocket cannot send headers, so those requests may carry the key in
`?token=`. Everywhere else a key in the URL is refused (401), not ignored: URLs end up in logs, proxies and
browser history, and a REST client that puts its key there should learn so at once. SSE endpoints are the
GET routes whose path ends in `/stream` (api/routes/streams.py); the API serves no WebSocket.
"""
from __future__ import annotations

from fastapi import Request

from sandboxd.api.deps import services
from sandboxd.core.apikeys import ApiKey
from sandboxd.core.eventlog import acting
from sandboxd.errors import Forbidden, Unauthorized

STREAM_SUFFIX = "/stream"


def query_token_allowed(conn) -> bool:
    """Whether this request may carry its key in `?token=` (works on Request and HTTPConnection)."""
    if conn.scope["type"] == "websocket":
        return True
    return conn.scope.get("method") == "GET" and conn.scope["path"].endswith(STREAM_SUFFIX)


def presented_key(request) -> str | None:
    """The credential a request carries where it may carry one (works on Request and HTTPConnection)."""
    key = request.headers.get("x-api-key")
    if key:
        return key.strip()
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    if query_token_allowed(request):
        return request.query_params.get("token") or None
    return None


# Dependencies are coroutines: FastAPI runs a plain `def` dependency on its thread pool, a hop out of the event
# loop and back (with a GIL hand-off each way) on every request for what is an attribute read.
async def require_key(request: Request) -> ApiKey:
    # The middleware already looked the key up (it needs it for rate limiting).
    key: ApiKey | None = getattr(request.state, "api_key", None)
    if key is None:
        if getattr(request.state, "presented_key", None):
            raise Unauthorized("invalid API key", code="invalid_api_key")
        if "token" in request.query_params:
            raise Unauthorized("?token= is accepted only on event streams (SSE); send the API key in X-API-Key "
                               "or Authorization: Bearer", code="token_in_query_not_allowed")
        raise Unauthorized("missing API key: send X-API-Key or Authorization: Bearer", code="missing_api_key")
    acting(key.id, key.team_id)  # lifecycle events this request causes name it (core/eventlog.py)
    return key


def _allowed(key: ApiKey, ok: bool, who: str) -> ApiKey:
    if not ok:
        raise Forbidden(f"this operation needs {who} API key", code="admin_required")
    return key


async def require_admin(request: Request) -> ApiKey:
    """The operator: every team, teams and warm pools."""
    key = await require_key(request)
    return _allowed(key, key.is_admin, "an admin")


async def require_team_admin(request: Request) -> ApiKey:
    key = await require_key(request)
    return _allowed(key, key.team_admin, "a team admin")


def owned(request: Request, sandbox_id: str, key: ApiKey):
    """The lifecycle service, once the sandbox is the key's team's: another team's answers 404 as if missing."""
    lifecycle = services(request).lifecycle
    lifecycle.get(sandbox_id, key.scope)
    return lifecycle

