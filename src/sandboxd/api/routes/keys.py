"""API keys: POST/GET /v1/api-keys, DELETE /v1/api-keys/{id}; the CLI's `keys` commands use them.

The operator manages every team's keys; a team admin its own team's; a member none (docs/teams.md).
"""
from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from sandboxd.api.auth import require_team_admin
from sandboxd.api.deps import rid, services
from sandboxd.api.routes import teams
from sandboxd.core.apikeys import ApiKey
from sandboxd.core.teams import TeamService
from sandboxd.errors import Forbidden, NotFound

keys_router = APIRouter(prefix="/v1/api-keys", tags=["api-keys"])
TeamAdmin = Annotated[ApiKey, Depends(require_team_admin)]


class KeyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(..., min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")  # printable: shown in tables
    admin: StrictBool = False  # the operator flag
    team: str | None = Field(None, min_length=1, max_length=128)  # id or name; default: the caller's
    role: Literal["admin", "member"] = "member"
    rate_limit_per_minute: StrictInt | None = Field(None, ge=1, le=10_000_000)


@keys_router.post("", status_code=201)
async def create_key(body: KeyBody, request: Request, caller: TeamAdmin) -> dict:
    if body.admin and not caller.is_admin:
        raise Forbidden("only the operator makes operator keys", code="admin_required")
    team_id = caller.team_id
    if body.team is not None:
        team = TeamService(services(request).store).resolve(body.team)
        if not caller.is_admin and team.id != caller.team_id:
            raise NotFound(f"team {body.team} not found", code="team_not_found")
        team_id = team.id
    key, secret = services(request).keys.create(body.name, admin=body.admin, team_id=team_id, role=body.role,
                                                  rate_limit_per_minute=body.rate_limit_per_minute)
    return {**key.to_wire(), "key": secret, "request_id": rid(request)}


@keys_router.get("")
async def list_keys(request: Request, caller: TeamAdmin) -> dict:
    keys = services(request).keys.list(caller.scope)
    return {"object": "list", "data": [k.to_wire() for k in keys], "has_more": False, "next_cursor": None,
            "request_id": rid(request)}


@keys_router.delete("/{key_id}")
async def revoke_key(key_id: str, request: Request, caller: TeamAdmin) -> dict:
    key = services(request).keys.revoke(key_id, caller.scope)
    return {**key.to_wire(), "deleted": True, "request_id": rid(request)}


# app.py mounts this module's `router`; the teams routes ride along with the keys they own.
router = APIRouter()
router.include_router(keys_router)
router.include_router(teams.router)
router.include_router(teams.own_router)
