"""E2B lifecycle events API: `GET /events/sandboxes` and `GET /events/sandboxes/{id}` (docs/monitoring.md).

Query values are taken as strings and checked by the service, so out-of-range values are a 400 with
our error body rather than FastAPI's 422.
"""
from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request

from sandboxd.api.auth import require_key
from sandboxd.api.deps import monitor
from sandboxd.api.e2b.errors import E2BRoute

# E2B dialect routes: errors in E2B's body ({code: <status>, message, error_code}), like api/e2b.
router = APIRouter(route_class=E2BRoute, dependencies=[Depends(require_key)], tags=["monitoring"])


@router.get("/events/sandboxes")
def team_events(request: Request, offset: str | None = None, limit: str | None = None,
                order_asc: str | None = Query(None, alias="orderAsc")) -> list[dict]:
    return monitor(request).events(None, offset, limit, order_asc)


@router.get("/events/sandboxes/{sandbox_id}")
def sandbox_events(request: Request, sandbox_id: str, offset: str | None = None, limit: str | None = None,
                   order_asc: str | None = Query(None, alias="orderAsc")) -> list[dict]:
    return monitor(request).events(sandbox_id, offset, limit, order_asc)
