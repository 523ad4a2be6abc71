"""The API's documentation, with no API key: the OpenAPI documents and the /docs page (docs/api.md).

Tagged `docs` and kept out of spec/controlplane.yaml, which documents the API itself.
"""
from __future__ import annotations

from fastapi import APIRouter, Request, Response

from sandboxd.api import packed, reference

router = APIRouter(tags=["docs"])
JSON = "application/json"
# Assets change only with the package: a day's caching spares a reload the two megabytes of the viewer.
CACHE = "public, max-age=86400"


@router.get("/openapi.json")
def controlplane_spec() -> Response:
    return Response(reference.spec_json("controlplane"), media_type=JSON)


@router.get("/openapi/{name}.json")
def dialect_spec(name: str) -> Response:
    return Response(reference.spec_json(name), media_type=JSON)


@router.get("/docs")
def docs_page() -> Response:
    return Response(reference.page(), media_type="text/html; charset=utf-8")


@router.get("/docs/assets/{name}")
def docs_asset(request: Request, name: str) -> Response:
    raw, gz, media = reference.asset(name)
    return packed.answer(request, raw, gz, media, {"cache-control": CACHE})
