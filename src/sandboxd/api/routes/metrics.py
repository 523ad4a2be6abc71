"""Metrics routes: E2B's sandbox metrics (`/sandboxes/{id}/metrics`, `/sandboxes/metrics`) and the
platform's Prometheus text (`/metrics`). Thin: the MonitorService on app.state does the work.

This router must be included BEFORE any router that has `GET /sandboxes/{id}`, or `/sandboxes/metrics`
would be taken for a sandbox called "metrics".
"""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.routing import APIRoute

from sandboxd.api.auth import require_key
from sandboxd.api.deps import monitor
from sandboxd.core.apikeys import ApiKey
from sandboxd.api.e2b.errors import E2BRoute
from sandboxd.monitor.prometheus import CONTENT_TYPE

# E2B dialect routes: errors in E2B's body ({code: <status>, message, error_code}), like api/e2b.
router = APIRouter(route_class=E2BRoute, dependencies=[Depends(require_key)], tags=["monitoring"])
Key = Annotated[ApiKey, Depends(require_key)]


@router.get("/sandboxes/metrics")
def sandboxes_metrics(request: Request, key: Key, sandbox_ids: str | None = None) -> dict:
    return monitor(request).metrics_many(sandbox_ids, key.scope)


@router.get("/sandboxes/{sandbox_id}/metrics")
def sandbox_metrics(request: Request, key: Key, sandbox_id: str, start: str | None = None,
                    end: str | None = None) -> list[dict]:
    return monitor(request).metrics(sandbox_id, start, end, key.scope)


def prometheus_metrics(request: Request) -> Response:
    pool = request.app.state.services.lifecycle.pool  # warm-pool gauges and counters ride along
    return Response(monitor(request).prometheus() + pool.prometheus().encode(), media_type=CONTENT_TYPE)


# Prometheus is not an E2B route: plain route class, the hybrid error body of the rest of the API.
router.add_api_route("/metrics", prometheus_metrics, methods=["GET"], route_class_override=APIRoute)
