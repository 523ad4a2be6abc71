"""API keys (admin only): POST/GET /v1/api-keys, DELETE /v1/api-keys/{id}; the CLI's `keys` commands use them."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from sandboxd.api.auth import require_admin
from sandboxd.api.deps import rid, services
from sandboxd.core.apikeys import ApiKey

router = APIRouter(prefix="/v1/api-keys", tags=["api-keys"])
Admin = Annotated[ApiKey, Depends(require_admin)]


class KeyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(..., min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")  # printable: shown in tables
    admin: StrictBool = False
    rate_limit_per_minute: StrictInt | None = Field(None, ge=1, le=10_000_000)


@router.post("", status_code=201)
async def create_key(body: KeyBody, request: Request, admin: Admin) -> dict:
    key, secret = services(request).keys.create(body.name, admin=body.admin,
                                                  rate_limit_per_minute=body.rate_limit_per_minute)
    return {**key.to_wire(), "key": secret, "request_id": rid(request)}


@router.get("")
async def list_keys(request: Request, admin: Admin) -> dict:
    keys = services(request).keys.list()
    return {"object": "list", "data": [k.to_wire() for k in keys], "has_more": False, "next_cursor": None,
            "request_id": rid(request)}


@router.delete("/{key_id}")
async def revoke_key(key_id: str, request: Request, admin: Admin) -> dict:
    key = services(request).keys.revoke(key_id)
    return {**key.to_wire(), "deleted": True, "request_id": rid(request)}
