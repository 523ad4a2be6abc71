"""E2B lifecycle events API: `GET /events/sandboxes` and `GET /events/sandboxes/{id}` (docs/monitoring.md).

Query values are taken as strings and checked by the service, so out-of-range values are a 400 with
our error body rather than FastAPI's 422.
"""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from sandboxd.api.auth import require_key
from sandboxd.api.deps import monitor
from sandboxd.core.apikeys import ApiKey
from sandboxd.api.e2b.errors import E2BRoute

# E2B dialect routes: errors in E2B's body ({code: <status>, message, error_code}), like api/e2b.
router = APIRouter(route_class=E2BRoute, dependencies=[Depends(require_key)], tags=["monitoring"])
Key = Annotated[ApiKey, Depends(require_key)]


@router.get("/events/sandboxes")
def team_events(request: Request, key: Key, offset: str | None = None, limit: str | None = None,
                order_asc: str | None = Query(None, alias="orderAsc")) -> list[dict]:
    return monitor(request).events(None, offset, limit, order_asc, key.scope)


@router.get("/events/sandboxes/{sandbox_id}")
def sandbox_events(request: Request, key: Key, sandbox_id: str, offset: str | None = None, limit: str | None = None,
                   order_asc: str | None = Query(None, alias="orderAsc")) -> list[dict]:
    return monitor(request).events(sandbox_id, offset, limit, order_asc, key.scope)
