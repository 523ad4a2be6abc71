"""E2B's template build API, as the `e2b` SDK's `Template.build` drives it: announce a build
(`POST /v3/templates`), upload each COPY's files by content hash (`GET /templates/{id}/files/{hash}` gives a
signed upload URL, or says the files are there), start it with its steps (`POST /v2/templates/{id}/builds/
{buildID}`), poll its status and log entries, and check a name (`GET /templates/aliases/{alias}`).

Thin translations onto the build service (core/builds.py), which serves the HopX builder too; recipes.py
maps E2B's instructions onto our steps.
"""
from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from sandboxd.api.auth import require_key
from sandboxd.api.deps import services
from sandboxd.core.apikeys import ApiKey
from sandboxd.core.tags import DEFAULT_TAG, check_tags
from sandboxd.errors import Invalid, NotFound

from . import recipes
from .errors import E2BRoute

router = APIRouter(route_class=E2BRoute, tags=["e2b"])
Key = Annotated[ApiKey, Depends(require_key)]
STATUS = {"waiting": "waiting", "building": "building", "active": "ready", "failed": "error"}
MAX_ENTRIES = 100  # per status answer, as E2B's API pages them


class BuildAnnouncement(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    name: str | None = Field(None, min_length=1, max_length=128)
    alias: str | None = Field(None, min_length=1, max_length=128)  # older SDKs
    tags: list[Annotated[str, Field(min_length=1, max_length=128)]] | None = Field(None, max_length=20)
    cpuCount: StrictInt = Field(2, ge=1, le=256)
    memoryMB: StrictInt = Field(1024, ge=128, le=1024 * 1024)
    minFreeDiskMb: StrictInt | None = Field(None, ge=0, le=64 * 1024 * 1024)  # free space wanted after the steps


class TagAssignment(BaseModel):
    model_config = ConfigDict(extra="ignore")

    target: str = Field(..., min_length=1, max_length=256)  # name:tag (or name: its default tag)
    tags: list[str] = Field(..., min_length=1, max_length=20)


class TagRemoval(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str = Field(..., min_length=1, max_length=256)
    tags: list[str] = Field(..., min_length=1, max_length=20)


class BuildStart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    fromImage: str | None = Field(None, max_length=256)
    fromTemplate: str | None = Field(None, max_length=256)
    fromImageRegistry: dict[str, Any] | None = None
    force: bool = False
    steps: list[dict[str, Any]] = Field(default_factory=list, max_length=500)
    startCmd: str | None = Field(None, max_length=16384)
    readyCmd: str | None = Field(None, max_length=16384)


@router.post("/v3/templates", status_code=202)
async def announce(body: BuildAnnouncement, request: Request, key: Key) -> Response:
    name, tag = recipes.split_name(body.name or body.alias or "")
    if not name:
        raise Invalid("name is required", code="missing_template_name")
    wanted = [*([tag] if tag else []), *(body.tags or [])]
    tags = check_tags(name, wanted) if wanted else []
    t, build_id = services(request).builds.reserve(name, cpu=body.cpuCount, memory_mb=body.memoryMB,
                                                   disk_gb=recipes.disk_gb(body.minFreeDiskMb), tags=tags,
                                                   names=recipes.NAMES, team_id=key.team_id, team=key.scope)
    return JSONResponse({"templateID": t.id, "buildID": build_id, "public": t.is_public or t.published, "names": [t.name],
                         "tags": tags, "aliases": [t.name]}, status_code=202)


@router.get("/templates/{template_id}/files/{files_hash}", status_code=201)
async def upload_link(template_id: str, files_hash: str, request: Request, key: Key) -> Response:
    svc = services(request)
    svc.catalog.owned(template_id, key.scope)
    link = svc.builds.upload_link(files_hash, 0, str(request.base_url), key.team_id)
    out = {"present": link["present"]}
    if not link["present"]:
        out["url"] = link["upload_url"]
    return JSONResponse(out, status_code=201)


@router.post("/v2/templates/{template_id}/builds/{build_id}", status_code=202)
async def start(template_id: str, build_id: str, body: BuildStart, request: Request, key: Key) -> Response:
    svc = services(request)
    t = svc.catalog.owned(template_id, key.scope)
    req = recipes.to_build_request(t.name, body.model_dump(), cpu=t.vcpu, memory_mb=t.memory_mb)
    svc.builds.start_build(t.id, build_id, req, names=recipes.NAMES, team=key.scope, team_id=key.team_id)
    return Response(status_code=202)


@router.get("/templates/{template_id}/builds/{build_id}/status")
async def status(template_id: str, build_id: str, request: Request, key: Key,
                 logsOffset: int = Query(0, ge=0), limit: int = Query(MAX_ENTRIES, ge=0, le=MAX_ENTRIES)) -> Response:
    svc = services(request)
    t = svc.catalog.get(template_id, key.scope)
    doc = svc.builds.entries(build_id, logsOffset, limit, key.scope)
    if doc["template_id"] != t.id:
        raise NotFound(f"build {build_id} of template {template_id} not found", code="build_not_found")
    entries = [{"timestamp": e["t"], "level": e["level"], "message": e["message"]} for e in doc["entries"]]
    out: dict[str, Any] = {"templateID": t.id, "buildID": build_id, "status": STATUS.get(doc["status"], "waiting"),
                           "logs": [e["message"] for e in entries], "logEntries": entries}
    if doc["status"] == "failed":
        out["reason"] = {"message": doc["error"] or "build failed", "step": doc["failed_step"],
                         "logEntries": entries[-20:]}
    return JSONResponse(out)


@router.get("/templates/aliases/{alias}")
async def alias(alias: str, request: Request, key: Key) -> Response:
    t = services(request).catalog.get(recipes.split_name(alias)[0], key.scope)
    return JSONResponse({"templateID": t.id, "public": t.is_public or t.published})


@router.post("/templates/tags", status_code=201)
async def assign_tags(body: TagAssignment, request: Request, key: Key) -> Response:
    svc = services(request)
    name, tag = recipes.split_name(body.target)
    t = svc.catalog.owned(name, key.scope)
    tags = check_tags(t.name, body.tags)
    build_id = svc.builds.tags.build_of(t.id, tag or DEFAULT_TAG)
    svc.builds.tags.assign(t.id, build_id, tags)
    return JSONResponse({"buildID": build_id, "tags": tags}, status_code=201)


@router.delete("/templates/tags", status_code=204)
async def remove_tags(body: TagRemoval, request: Request, key: Key) -> Response:
    svc = services(request)
    t = svc.catalog.owned(recipes.split_name(body.name)[0], key.scope)
    svc.builds.tags.remove(t.id, check_tags(t.name, body.tags))
    return Response(status_code=204)


@router.get("/templates/{template_id}/tags")
async def list_tags(template_id: str, request: Request, key: Key) -> Response:
    svc = services(request)
    t = svc.catalog.get(recipes.split_name(template_id)[0], key.scope)
    return JSONResponse([{"tag": x.tag, "buildID": x.build_id, "createdAt": x.created_at.isoformat()}
                         for x in svc.builds.tags.list(t.id)])


class TemplateUpdate(BaseModel):
    model_config = ConfigDict(extra="ignore")

    public: bool | None = None


def _publish(request: Request, key: ApiKey, template_id: str, body: TemplateUpdate):
    t = services(request).catalog.get(recipes.split_name(template_id)[0], key.scope)
    if body.public is None:
        return services(request).catalog.owned(t.id, key.scope, key.team_admin)
    return services(request).catalog.publish(t.id, body.public, key.scope, key.team_admin)


@router.patch("/templates/{template_id}")
async def update_template(template_id: str, body: TemplateUpdate, request: Request, key: Key) -> Response:
    _publish(request, key, template_id, body)
    return Response(status_code=200)


@router.patch("/v2/templates/{template_id}")
async def update_template_v2(template_id: str, body: TemplateUpdate, request: Request, key: Key) -> Response:
    t = _publish(request, key, template_id, body)
    return JSONResponse({"names": [t.name]})
