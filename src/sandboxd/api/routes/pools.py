"""Warm pools: `GET /v1/pools` (size, hits, misses, refill lag per template) and `PUT /v1/pools/{template}`
(set a template's pool size at run time; persisted in the data dir with the pool)."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from sandboxd.api.auth import require_admin
from sandboxd.api.deps import rid, services
from sandboxd.core.apikeys import ApiKey
from sandboxd.core.pool import MAX_POOL

router = APIRouter(prefix="/v1/pools", tags=["pools"])
Key = Annotated[ApiKey, Depends(require_admin)]


class PoolSize(BaseModel):
    model_config = ConfigDict(extra="forbid")
    size: StrictInt = Field(ge=0, le=MAX_POOL)


def _pool(request: Request):
    return services(request).lifecycle.pool


@router.get("")
async def list_pools(request: Request, key: Key) -> dict:
    return {"object": "list", "data": _pool(request).report(), "request_id": rid(request)}


@router.get("/{template}")
async def get_pool(template: str, request: Request, key: Key) -> dict:
    t = services(request).catalog.get(template)
    row = next((r for r in _pool(request).report() if r["template_id"] == t.id), None)
    return {**(row or _empty(t)), "request_id": rid(request)}


@router.put("/{template}")
async def set_pool(template: str, body: PoolSize, request: Request, key: Key) -> dict:
    t = services(request).catalog.get(template)
    pool = _pool(request)
    pool.set_target(t, body.size)
    row = next(r for r in pool.report() if r["template_id"] == t.id)
    return {**row, "request_id": rid(request)}


def _empty(t) -> dict:
    return {"template_id": t.id, "template_name": t.name, "target": 0, "ready": 0, "filling": 0, "hits": 0,
            "misses": 0, "fill_failures": 0, "last_refill_lag_seconds": None, "max_refill_lag_seconds": 0.0,
            "kernel_warm": 0, "last_error": None}
