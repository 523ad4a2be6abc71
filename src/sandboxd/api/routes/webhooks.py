"""E2B webhook management: `POST/GET /events/webhooks`, `GET/PATCH/DELETE /events/webhooks/{id}` and the
delivery log `GET /events/webhooks/{id}/deliveries`. The signature secret is accepted, never returned.

A team admin manages the team's webhooks (another team's answer 404); the operator, every team's."""
from __future__ import annotations

import json

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from sandboxd.api.auth import require_team_admin
from sandboxd.api.deps import monitor
from sandboxd.api.e2b.errors import E2BRoute
from sandboxd.core.apikeys import ApiKey
from sandboxd.errors import Invalid
from sandboxd.monitor.webhooks import WebhookRegistry

# E2B dialect routes: errors in E2B's body ({code: <status>, message, error_code}), like api/e2b.
router = APIRouter(route_class=E2BRoute, tags=["monitoring"])
Admin = Annotated[ApiKey, Depends(require_team_admin)]


def registry(request: Request) -> WebhookRegistry:
    return monitor(request).webhooks


async def _body(request: Request) -> dict:
    try:
        body = json.loads(await request.body() or b"null")
    except ValueError:
        raise Invalid("request body must be JSON") from None
    if not isinstance(body, dict):
        raise Invalid("request body must be a JSON object")
    return body


@router.post("/events/webhooks", status_code=201)
async def create_webhook(request: Request, key: Admin) -> JSONResponse:
    body = await _body(request)
    # The registry resolves the URL's host (blocking DNS): keep it off the event loop.
    return JSONResponse(await run_in_threadpool(registry(request).create, body, key.team_id), status_code=201)


@router.get("/events/webhooks")
def list_webhooks(request: Request, key: Admin) -> list[dict]:
    return registry(request).list(key.scope)


@router.get("/events/webhooks/{webhook_id}")
def get_webhook(request: Request, webhook_id: str, key: Admin) -> dict:
    return registry(request).get(webhook_id, key.scope)


@router.patch("/events/webhooks/{webhook_id}")
async def update_webhook(request: Request, webhook_id: str, key: Admin) -> dict:
    body = await _body(request)
    return await run_in_threadpool(registry(request).update, webhook_id, body, key.scope)


@router.delete("/events/webhooks/{webhook_id}")
def delete_webhook(request: Request, webhook_id: str, key: Admin) -> dict:
    registry(request).delete(webhook_id, key.scope)
    return {}


@router.get("/events/webhooks/{webhook_id}/deliveries")
def webhook_deliveries(request: Request, webhook_id: str, key: Admin, limit: int = 100,
                       deliveryStatus: str | None = None) -> list[dict]:
    if not 1 <= limit <= 1000:
        raise Invalid("limit must be between 1 and 1000")
    return registry(request).deliveries(webhook_id, limit=limit, status=deliveryStatus, team=key.scope)
