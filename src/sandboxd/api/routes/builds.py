"""Template builds (contract §4). Response keys are exactly what the builder's strict dataclasses accept."""
from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from sandboxd.api.auth import require_key
from sandboxd.api.deps import rid, services
from sandboxd.core.apikeys import ApiKey
from sandboxd.core.builds import BuildRequest

router = APIRouter(prefix="/v1/templates", tags=["builds"])
Key = Annotated[ApiKey, Depends(require_key)]


class UploadLinkBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    files_hash: str = Field(..., min_length=8, max_length=128)
    content_length: StrictInt = Field(..., ge=0)


class BuildBody(BaseModel):
    # camelCase keys as hopx_ai sends them; JS-only extras (agent_version, registry_credentials) accepted.
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    name: str = Field(..., min_length=1, max_length=63)
    from_image: str = Field(..., min_length=1, max_length=256)
    steps: list[dict[str, Any]] = Field(..., min_length=1, max_length=500)
    startCmd: str | None = None
    readyCmd: dict[str, Any] | None = None
    cpu: StrictInt = Field(2, ge=1, le=64)
    memory: StrictInt = Field(2048, ge=128, le=262144)
    diskGB: StrictInt = Field(10, ge=1, le=1024)
    skipCache: StrictBool = False
    update: StrictBool = False
    agent_version: str | None = None
    registry_credentials: dict[str, Any] | None = None


@router.post("/files/upload-link")
async def upload_link(body: UploadLinkBody, request: Request, key: Key) -> dict:
    base = str(request.base_url)
    out = services(request).builds.upload_link(body.files_hash, body.content_length, base, key.team_id)
    return {**out, "request_id": rid(request)}


@router.put("/files/upload/{files_hash}")
async def upload_files(files_hash: str, request: Request, expires: int = Query(...), signature: str = Query(...)) -> dict:
    # No API key here: the signed URL is the credential (the builder sends no auth header).
    size = await services(request).builds.receive_upload(files_hash, expires, signature, request.stream())
    return {"files_hash": files_hash, "size": size, "stored": True, "request_id": rid(request)}


@router.post("/build", status_code=202)
async def trigger_build(body: BuildBody, request: Request, key: Key) -> dict:
    req = BuildRequest(name=body.name, from_image=body.from_image, steps=body.steps, start_cmd=body.startCmd,
                       ready_cmd=body.readyCmd, cpu=body.cpu, memory_mb=body.memory, disk_gb=body.diskGB,
                       skip_cache=body.skipCache, update=body.update)
    out = services(request).builds.trigger(req, team_id=key.team_id, team=key.scope)
    return {**out, "request_id": rid(request)}


@router.get("/build/{build_id}/status")
async def build_status(build_id: str, request: Request, key: Key) -> dict:
    return {**services(request).builds.status(build_id, key.scope), "request_id": rid(request)}


@router.get("/build/{template_id}/logs")
async def build_logs(template_id: str, request: Request, key: Key, offset: int = Query(0, ge=0)) -> dict:
    return {**services(request).builds.logs(template_id, offset, key.scope), "request_id": rid(request)}
