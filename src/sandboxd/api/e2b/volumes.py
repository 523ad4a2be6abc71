"""E2B volumes (docs/e2b.md#volumes): /volumes with the team's API key, and the content API
/volumecontent/{volumeID}/... with the volume's own token (`Authorization: Bearer`), which the SDK sends to
E2B_VOLUME_API_URL. File work runs in threads (core/volumefs.py); uploads are capped by max_body_bytes.
"""
from __future__ import annotations

import asyncio
import os
from typing import Annotated, Any, AsyncIterator

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, StrictInt

from sandboxd.api.auth import require_key
from sandboxd.api.deps import services
from sandboxd.core.apikeys import ApiKey
from sandboxd.core.volumefs import VolumeFiles, read_chunk
from sandboxd.core.volumes import Volume
from sandboxd.errors import Unauthorized

from .errors import E2BRoute

router = APIRouter(route_class=E2BRoute, tags=["e2b"])
Key = Annotated[ApiKey, Depends(require_key)]


class NewVolume(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str


class Metadata(BaseModel):
    model_config = ConfigDict(extra="ignore")
    uid: StrictInt | None = None
    gid: StrictInt | None = None
    mode: StrictInt | None = None


def _with_token(request: Request, vol: Volume) -> dict[str, Any]:
    return {"volumeID": vol.id, "name": vol.name, "token": services(request).volumes.token(vol.id)}


@router.post("/volumes")
async def create_volume(body: NewVolume, request: Request, key: Key) -> Response:
    vol = await asyncio.to_thread(services(request).volumes.create, key.team_id, body.name)
    return JSONResponse(_with_token(request, vol), status_code=201)


@router.get("/volumes")
async def list_volumes(request: Request, key: Key) -> Response:
    return JSONResponse([{"volumeID": v.id, "name": v.name} for v in services(request).volumes.list(key.scope)])


@router.get("/volumes/{volume_id}")
async def get_volume(volume_id: str, request: Request, key: Key) -> Response:
    return JSONResponse(_with_token(request, services(request).volumes.get(volume_id, key.scope)))


@router.delete("/volumes/{volume_id}")
async def delete_volume(volume_id: str, request: Request, key: Key) -> Response:
    vols = services(request).volumes
    vol = vols.forget(volume_id, key.scope)  # on the loop: no create can store a sandbox mounting it meanwhile
    await asyncio.to_thread(vols.remove_files, vol.id)
    return Response(status_code=204)


# ---- the content API ---------------------------------------------------------------------------------


def _files(request: Request, volume_id: str) -> VolumeFiles:
    auth = request.headers.get("authorization") or ""
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("send the volume's token as Authorization: Bearer", code="missing_volume_token")
    return services(request).volumes.files(volume_id, token.strip())


@router.get("/volumecontent/{volume_id}/path")
async def stat_path(volume_id: str, path: str, request: Request) -> Response:
    return JSONResponse(await asyncio.to_thread(_files(request, volume_id).stat, path))


@router.get("/volumecontent/{volume_id}/dir")
async def list_dir(volume_id: str, path: str, request: Request, depth: int = 1) -> Response:
    return JSONResponse(await asyncio.to_thread(_files(request, volume_id).list_dir, path, depth))


@router.post("/volumecontent/{volume_id}/dir")
async def make_dir(volume_id: str, path: str, request: Request, uid: int | None = None, gid: int | None = None,
                   mode: int | None = None, force: bool = False) -> Response:
    files = _files(request, volume_id)
    return JSONResponse(await asyncio.to_thread(files.make_dir, path, uid, gid, mode, force), status_code=201)


@router.patch("/volumecontent/{volume_id}/path")
async def update_path(volume_id: str, path: str, body: Metadata, request: Request) -> Response:
    files = _files(request, volume_id)
    return JSONResponse(await asyncio.to_thread(files.update, path, body.uid, body.gid, body.mode))


@router.delete("/volumecontent/{volume_id}/path")
async def remove_path(volume_id: str, path: str, request: Request) -> Response:
    await asyncio.to_thread(_files(request, volume_id).remove, path)
    return Response(status_code=204)


@router.get("/volumecontent/{volume_id}/file")
async def read_file(volume_id: str, path: str, request: Request) -> Response:
    fd, _ = await asyncio.to_thread(_files(request, volume_id).open_file, path)

    async def body() -> AsyncIterator[bytes]:
        try:
            while chunk := await asyncio.to_thread(read_chunk, fd):
                yield chunk
        finally:
            os.close(fd)

    # No Content-Length: a sandbox may change the file while it is sent.
    return StreamingResponse(body(), media_type="application/octet-stream")


@router.put("/volumecontent/{volume_id}/file")
async def write_file(volume_id: str, path: str, request: Request, uid: int | None = None, gid: int | None = None,
                     mode: int | None = None, force: bool | None = None) -> Response:
    files = _files(request, volume_id)
    upload = await asyncio.to_thread(files.begin_write, path, uid, gid, mode, force)
    try:
        async for chunk in request.stream():
            if chunk:
                await asyncio.to_thread(upload.write, chunk)
    except BaseException:
        await asyncio.to_thread(upload.abort)
        raise
    return JSONResponse(await asyncio.to_thread(upload.commit), status_code=201)
