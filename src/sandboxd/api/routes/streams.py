"""SSE streams: /v1/sandboxes/stream, /v1/sandboxes/{id}/metrics/stream, /v1/templates/stream.

Frames are `id:` + `event:` + `data: {json}`; Last-Event-ID resumes; idle streams get comment heartbeats;
a metrics stream ends with a final `end` event when its sandbox is killed.
"""
from __future__ import annotations

import asyncio
import json
from typing import Annotated, AsyncIterator

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import StreamingResponse

from sandboxd.api.auth import require_key
from sandboxd.api.deps import metrics_hub, services
from sandboxd.core.apikeys import ApiKey
from sandboxd.core.eventlog import event_wire
from sandboxd.core.events import Event

router = APIRouter(tags=["streams"])
Key = Annotated[ApiKey, Depends(require_key)]
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "Connection": "keep-alive"}


def frame(event_id: int | None, event: str, data: dict) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'), default=str)}\n\n".encode()


def last_event_id(request: Request) -> int | None:
    raw = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    try:
        return int(raw) if raw else None
    except ValueError:
        return None


def _stream(gen: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(gen, media_type="text/event-stream", headers=SSE_HEADERS)


def _sandbox_payload(e: Event) -> dict:
    return {**event_wire(e), "status": e.data.get("status")}


def _team_filter(svc, team: str | None):
    """Whether an event is the team's to see; one lookup per sandbox per stream, not per event."""
    if team is None:
        return lambda e: True
    seen: dict[str, str | None] = {}

    def visible(e: Event) -> bool:
        if e.sandbox_id is None:
            return False  # template events: another team's templates are invisible
        if e.sandbox_id not in seen:
            seen[e.sandbox_id] = svc.lifecycle.team_of(e.sandbox_id)
        return seen[e.sandbox_id] == team

    return visible


async def _event_stream(request: Request, prefix: str, shape, team: str | None) -> AsyncIterator[bytes]:
    svc = services(request)
    visible = _team_filter(svc, team)
    beat = svc.settings.sse_heartbeat_seconds
    queue = svc.bus.subscribe()  # before the replay, so nothing falls between the two
    try:
        yield b"retry: 3000\n: connected\n\n"
        sent = last_event_id(request)
        if sent is not None:
            for e in svc.events.since(sent, prefix=prefix):
                if not visible(e):
                    continue
                yield frame(e.id, "message", shape(e))
                sent = e.id
        while True:
            try:
                e = await asyncio.wait_for(queue.get(), beat)
            except asyncio.TimeoutError:
                if await request.is_disconnected():
                    return
                yield b": heartbeat\n\n"
                continue
            if not e.type.startswith(prefix) or (sent is not None and e.id is not None and e.id <= sent) \
                    or not visible(e):
                continue
            yield frame(e.id, "message", shape(e))
            sent = e.id
    finally:
        svc.bus.unsubscribe(queue)


@router.get("/v1/sandboxes/stream")
async def sandboxes_stream(request: Request, key: Key) -> StreamingResponse:
    return _stream(_event_stream(request, "sandbox.", _sandbox_payload, key.scope))


@router.get("/v1/templates/stream")
async def templates_stream(request: Request, key: Key) -> StreamingResponse:
    return _stream(_event_stream(request, "template.", event_wire, key.scope))


@router.get("/v1/sandboxes/{sandbox_id}/metrics/stream")
async def metrics_stream(sandbox_id: str, request: Request, key: Key,
                         interval: float | None = Query(None, ge=0.2, le=60)) -> StreamingResponse:
    svc = services(request)
    svc.lifecycle.get(sandbox_id, key.scope)  # 404 before the stream starts
    every = interval or svc.settings.sample_interval_seconds
    beat = svc.settings.sse_heartbeat_seconds
    h = metrics_hub(request)

    async def gen() -> AsyncIterator[bytes]:
        feed = h.join(sandbox_id, every)
        try:
            yield b"retry: 3000\n: connected\n\n"
            sent = last_event_id(request)
            if sent is None:  # a new client starts with the newest snapshot, not the history
                sent = feed.items[-1][0] - 1 if feed.items else 0
            while True:
                waiter = feed.changed
                for eid, snap in list(feed.items):
                    if eid > sent:
                        yield frame(eid, "message", snap)
                        sent = eid
                if feed.ended is not None:
                    yield frame(sent + 1, "end", feed.ended)
                    return
                try:
                    await asyncio.wait_for(waiter.wait(), beat)
                except asyncio.TimeoutError:
                    if await request.is_disconnected():
                        return
                    yield b": heartbeat\n\n"
        finally:
            h.leave(feed)

    return _stream(gen())
