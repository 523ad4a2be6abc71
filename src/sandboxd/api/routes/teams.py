"""Teams: POST/GET /v1/teams, GET/PATCH/DELETE /v1/teams/{id or name} (operator only), and GET /v1/team, the
caller's own team with its quotas and use (docs/teams.md)."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from sandboxd.api.auth import require_admin, require_key, require_team_admin
from sandboxd.api.deps import rid, services
from sandboxd.core.apikeys import ApiKey
from sandboxd.core.quotas import MAX_QUOTA
from sandboxd.core.teams import TeamService

router = APIRouter(prefix="/v1/teams", tags=["teams"])
own_router = APIRouter(prefix="/v1/team", tags=["teams"])
Operator = Annotated[ApiKey, Depends(require_admin)]
Key = Annotated[ApiKey, Depends(require_key)]
TeamAdmin = Annotated[ApiKey, Depends(require_team_admin)]
Quota = Annotated[StrictInt | None, Field(ge=0, le=MAX_QUOTA)]


class TeamBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(..., min_length=1, max_length=64)


class QuotasBody(BaseModel):
    """Only the fields sent change; null clears a quota."""

    model_config = ConfigDict(extra="forbid")
    max_sandboxes: Quota = None
    max_vcpu: Quota = None
    max_memory_mb: Quota = None
    max_disk_mb: Quota = None
    max_templates: Quota = None
    max_creates_per_minute: Quota = None


def _teams(request: Request) -> TeamService:
    return TeamService(services(request).store)


def _shown(request: Request, team: str) -> dict:
    found, use = _teams(request).show(team)
    return {**found.to_wire(), "usage_now": use.to_wire(), "request_id": rid(request)}


@router.post("", status_code=201)
async def create_team(body: TeamBody, request: Request, operator: Operator) -> dict:
    return {**_teams(request).create(body.name).to_wire(), "request_id": rid(request)}


@router.get("")
async def list_teams(request: Request, operator: Operator) -> dict:
    return {"object": "list", "data": [t.to_wire() for t in _teams(request).list()], "has_more": False,
            "next_cursor": None, "request_id": rid(request)}


@router.get("/{team}")
async def get_team(team: str, request: Request, operator: Operator) -> dict:
    return _shown(request, team)


@router.patch("/{team}")
async def set_quotas(team: str, body: QuotasBody, request: Request, operator: Operator) -> dict:
    _teams(request).set_quotas(team, body.model_dump(exclude_unset=True))
    return _shown(request, team)


@router.delete("/{team}")
async def delete_team(team: str, request: Request, operator: Operator) -> dict:
    return {**_teams(request).delete(team).to_wire(), "deleted": True, "request_id": rid(request)}


@own_router.get("")
async def own_team(request: Request, key: Key) -> dict:
    return _shown(request, key.team_id)


@own_router.patch("")
async def set_own_quotas(body: QuotasBody, request: Request, key: TeamAdmin) -> dict:
    """A team admin's own limits for its team, within the operator's quotas (docs/teams.md#quotas)."""
    _teams(request).set_own_quotas(key.team_id, body.model_dump(exclude_unset=True))
    return _shown(request, key.team_id)
