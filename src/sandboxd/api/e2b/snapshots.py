"""E2B's snapshots: `create_snapshot` (`POST /sandboxes/{id}/snapshots`), `list_snapshots` (`GET /snapshots`,
paged with `X-Next-Token`) and `delete_snapshot`, which E2B's SDK sends as a template delete
(`DELETE /templates/{id}`, served here for any of the caller's templates); and `fork`
(`POST /sandboxes/{id}/fork`), new sandboxes on a copy of one's files. Thin over core/snapshots.py."""
from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from sandboxd.api.auth import require_key
from sandboxd.api.deps import services
from sandboxd.core.apikeys import ApiKey
from sandboxd.core.models import Template
from sandboxd.core.snapshots import MAX_FORKS, snapshot_names
from sandboxd.errors import Invalid, SandboxdError

from . import shapes
from .errors import E2BRoute, e2b_status_for
from .routes import DEFAULT_TIMEOUT, MAX_TIMEOUT

router = APIRouter(route_class=E2BRoute, tags=["e2b"])
Key = Annotated[ApiKey, Depends(require_key)]
MAX_PAGE = 100


class SnapshotRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str | None = Field(None, max_length=128)
    # E2B's `mode`: "full" (true, the default) keeps the processes and memory too, "filesystem" (false) the files.
    memory: bool | None = None


class ForkRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    timeout: StrictInt | None = Field(None, ge=0, le=MAX_TIMEOUT)
    count: StrictInt = Field(1, ge=1, le=MAX_FORKS)


def _info(t: Template) -> dict:
    return {"snapshotID": t.id, "names": snapshot_names(t)}


@router.post("/sandboxes/{sandbox_id}/snapshots", status_code=201)
async def create_snapshot(sandbox_id: str, request: Request, key: Key, body: SnapshotRequest | None = None) -> dict:
    t = await services(request).snapshots.create(sandbox_id, body.name if body else None, team=key.scope,
                                                 memory=body is None or body.memory is not False)
    return _info(t)


@router.get("/snapshots")
async def list_snapshots(request: Request, key: Key, sandboxID: str | None = None, name: str | None = None,
                         limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = MAX_PAGE,
                         nextToken: str | None = None) -> Response:
    found = services(request).snapshots.list(sandbox_id=sandboxID, name=name, team=key.scope)
    try:
        start = int(nextToken) if nextToken else 0
    except ValueError:
        raise Invalid("nextToken is not one this API gave", code="invalid_next_token") from None
    if start < 0:
        raise Invalid("nextToken is not one this API gave", code="invalid_next_token")
    page = found[start:start + limit]
    headers = {"X-Next-Token": str(start + limit)} if start + limit < len(found) else {}
    return Response(json.dumps([_info(t) for t in page]), media_type="application/json", headers=headers)


@router.delete("/templates/{template_id}", status_code=204)
async def delete_template(template_id: str, request: Request, key: Key) -> Response:
    svc = services(request)
    t = svc.catalog.owned(template_id, key.scope, key.team_admin)
    await svc.catalog.remove(t.id, in_use=svc.lifecycle.uses_template(t.id), team=key.scope, manager=key.team_admin)
    return Response(status_code=204)


@router.post("/sandboxes/{sandbox_id}/fork", status_code=201)
async def fork(sandbox_id: str, request: Request, key: Key, body: ForkRequest | None = None) -> list[dict]:
    svc = services(request)
    body = body or ForkRequest()
    made = await svc.snapshots.fork(sandbox_id, body.count, body.timeout or DEFAULT_TIMEOUT, api_key_id=key.id,
                                    team=key.scope, team_id=key.team_id)
    return [{"error": {"code": e2b_status_for(r), "message": r.message}} if isinstance(r, SandboxdError) else
            {"sandbox": shapes.created(r, svc.lifecycle.envd_token(r), svc.settings.public_domain)} for r in made]
