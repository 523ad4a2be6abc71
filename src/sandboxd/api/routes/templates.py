"""HopX templates: list (category, language), get by name or id, delete, publish (docs/api.md, docs/teams.md).

A key sees the built-ins, its team's templates and those other teams published; another team's private
template answers 404."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, StrictBool

from sandboxd.api.auth import require_key
from sandboxd.api.deps import rid, services
from sandboxd.core.apikeys import ApiKey

router = APIRouter(prefix="/v1/templates", tags=["templates"])
Key = Annotated[ApiKey, Depends(require_key)]


@router.get("")
async def list_templates(request: Request, key: Key, category: str | None = None, language: str | None = None) -> dict:
    items = services(request).catalog.list(category=category, language=language, team=key.scope)
    return {"object": "list", "data": [t.to_wire() for t in items], "has_more": False, "next_cursor": None,
            "request_id": rid(request)}


@router.get("/{name_or_id}")
async def get_template(name_or_id: str, request: Request, key: Key) -> dict:
    return {**services(request).catalog.get(name_or_id, key.scope).to_wire(), "request_id": rid(request)}


class PublishBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    public: StrictBool


@router.patch("/{name_or_id}")
async def publish_template(name_or_id: str, body: PublishBody, request: Request, key: Key) -> dict:
    """Publish a team's template to every team (public=true), or take it back."""
    t = services(request).catalog.publish(name_or_id, body.public, key.scope, key.team_admin)
    return {**t.to_wire(), "request_id": rid(request)}


@router.delete("/{name_or_id}")
async def delete_template(name_or_id: str, request: Request, key: Key) -> dict:
    svc = services(request)
    t = svc.catalog.owned(name_or_id, key.scope, key.team_admin)
    await svc.catalog.remove(t.id, in_use=svc.lifecycle.uses_template(t.id), team=key.scope, manager=key.team_admin)
    return {"id": t.id, "object": "template", "name": t.name, "deleted": True, "request_id": rid(request)}
