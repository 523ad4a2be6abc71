"""GET /health without auth: the CLI's `hopx system health` needs status == "healthy"."""
from __future__ import annotations

from fastapi import APIRouter, Request

from sandboxd import __version__
from sandboxd.api.deps import rid, services

router = APIRouter(tags=["health"])


@router.get("/health")
async def health(request: Request) -> dict:
    svc = services(request)
    return {"status": "healthy", "message": "sandboxd control plane is up", "version": __version__,
            "backend": svc.backend.capabilities.name, "isolation": svc.backend.capabilities.isolation,
            "request_id": rid(request)}
