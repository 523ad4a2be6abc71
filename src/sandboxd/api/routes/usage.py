"""`GET /v1/usage`: running time per sandbox and team in a window (docs/teams.md "Usage").

A team's key sees its own team; the operator every team, or the one asked for. Query values are taken as
strings and checked by the service, so a bad time is a 400 in our error body rather than FastAPI's 422.
"""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool

from sandboxd.api.auth import require_key
from sandboxd.api.deps import rid, services
from sandboxd.core.apikeys import ApiKey
from sandboxd.core.usage import UsageService, parse_time

router = APIRouter(prefix="/v1/usage", tags=["usage"])
Key = Annotated[ApiKey, Depends(require_key)]


@router.get("")
async def get_usage(request: Request, key: Key, from_: str | None = Query(None, alias="from"),
                    to: str | None = None, team: str | None = None, sandbox_id: str | None = None) -> dict:
    start, end = parse_time(from_, "from"), parse_time(to, "to")
    usage = UsageService(services(request).store)
    # The report reads the store and walks every event of the window: off the event loop.
    report = await run_in_threadpool(usage.report, start, end, team=team, sandbox_id=sandbox_id, scope=key.scope)
    return {**report.to_wire(), "request_id": rid(request)}
