"""Teams (operator only): POST/GET /v1/teams, DELETE /v1/teams/{id or name} (docs/teams.md)."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from sandboxd.api.auth import require_admin
from sandboxd.api.deps import rid, services
from sandboxd.core.apikeys import ApiKey
from sandboxd.core.teams import TeamService

router = APIRouter(prefix="/v1/teams", tags=["api-keys"])  # key management: teams hold the keys
Operator = Annotated[ApiKey, Depends(require_admin)]


class TeamBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(..., min_length=1, max_length=64)


def _teams(request: Request) -> TeamService:
    return TeamService(services(request).store)


@router.post("", status_code=201)
async def create_team(body: TeamBody, request: Request, operator: Operator) -> dict:
    return {**_teams(request).create(body.name).to_wire(), "request_id": rid(request)}


@router.get("")
async def list_teams(request: Request, operator: Operator) -> dict:
    return {"object": "list", "data": [t.to_wire() for t in _teams(request).list()], "has_more": False,
            "next_cursor": None, "request_id": rid(request)}


@router.delete("/{team}")
async def delete_team(team: str, request: Request, operator: Operator) -> dict:
    return {**_teams(request).delete(team).to_wire(), "deleted": True, "request_id": rid(request)}
