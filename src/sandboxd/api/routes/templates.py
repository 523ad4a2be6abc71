"""HopX templates: list (category, language), get by name or id, delete (contract §2.1, §5.2)."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from sandboxd.api.auth import require_key
from sandboxd.api.deps import rid, services
from sandboxd.core.apikeys import ApiKey

router = APIRouter(prefix="/v1/templates", tags=["templates"])
Key = Annotated[ApiKey, Depends(require_key)]


@router.get("")
async def list_templates(request: Request, key: Key, category: str | None = None, language: str | None = None) -> dict:
    items = services(request).catalog.list(category=category, language=language)
    return {"object": "list", "data": [t.to_wire() for t in items], "has_more": False, "next_cursor": None,
            "request_id": rid(request)}


@router.get("/{name_or_id}")
async def get_template(name_or_id: str, request: Request, key: Key) -> dict:
    return {**services(request).catalog.get(name_or_id).to_wire(), "request_id": rid(request)}


@router.delete("/{name_or_id}")
async def delete_template(name_or_id: str, request: Request, key: Key) -> dict:
    svc = services(request)
    t = svc.catalog.get(name_or_id)
    await svc.catalog.remove(t.id, in_use=svc.lifecycle.uses_template(t.id))
    return {"id": t.id, "object": "template", "name": t.name, "deleted": True, "request_id": rid(request)}
