"""Lifecycle events in E2B's shapes: camelCase for the REST events API (Argus spec), and the webhook
payload (the seed's camelCase keys plus the snake_case keys E2B's emitter really sends).

The control plane records events with whatever `data` it knows; this module fills in what E2B
clients expect from the sandbox's row: sandbox_metadata always, the execution block on killed and
paused, kill_reason on killed.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import select

from sandboxd.core.events import KILLED, LIFECYCLE_TYPES, PAUSED, Event
from sandboxd.core.eventlog import to_event
from sandboxd.errors import Invalid, NotFound
from sandboxd.core.store.db import Store
from sandboxd.core.store.tables import DEFAULT_TEAM_ID, EventRow, SandboxRow, TemplateRow

_NS = uuid.UUID("6f0e3c1e-6d1b-4c59-9a43-5b0d7e0c2a11")
MAX_OFFSET = 1_000_000_000
LABELS = {"created": "create", "killed": "kill", "updated": "update", "paused": "pause",
          "resumed": "resume", "checkpointed": "checkpoint"}


def event_uuid(e: Event) -> str:
    """Stable uuid for an event: the REST API and every webhook retry show the same id (receivers dedup on it).
    The timestamp keeps ids distinct if a database is ever recreated and integer ids start over."""
    return str(uuid.uuid5(_NS, f"event:{e.id}:{e.timestamp.timestamp()}"))


def rfc3339(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class SandboxFacts:
    template_id: str | None
    build_id: str | None
    metadata: dict
    started_at: datetime | None
    ended_at: datetime | None
    vcpu: float
    memory_mb: int
    kill_reason: str | None
    team_id: str = DEFAULT_TEAM_ID


def load_facts(store: Store, sandbox_ids: set[str]) -> dict[str, SandboxFacts]:
    ids = [i for i in sandbox_ids if i]
    if not ids:
        return {}
    with store.tx() as s:
        rows = list(s.scalars(select(SandboxRow).where(SandboxRow.id.in_(ids))))
        tmpl_ids = {r.template_id for r in rows if r.template_id}
        builds = dict(s.execute(select(TemplateRow.id, TemplateRow.build_id).where(TemplateRow.id.in_(tmpl_ids))).all()) if tmpl_ids else {}
    return {r.id: SandboxFacts(r.template_id, builds.get(r.template_id) if r.template_id else None, dict(r.metadata_ or {}), r.started_at or r.created_at,
                               r.ended_at, r.vcpu, r.memory_mb, r.kill_reason, r.team_id or DEFAULT_TEAM_ID) for r in rows}


def event_data(e: Event, f: SandboxFacts | None) -> dict[str, Any]:
    data = dict(e.data or {})
    out: dict[str, Any] = {}
    meta = data.pop("sandbox_metadata", None) or data.pop("metadata", None)
    out["sandbox_metadata"] = dict(meta if meta is not None else (f.metadata if f else {}))
    if e.type in (KILLED, PAUSED):
        execution = data.pop("execution", None)
        if execution is None and f is not None and f.started_at is not None:
            end = e.timestamp
            execution = {
                "started_at": rfc3339(f.started_at),
                "vcpu_count": max(1, round(f.vcpu)),
                "memory_mb": f.memory_mb,
                "execution_time": max(0, int((end - f.started_at).total_seconds() * 1000)),
            }
        if execution is not None:
            out["execution"] = execution
    if e.type == KILLED:
        reason = data.pop("kill_reason", None) or data.pop("reason", None) or (f.kill_reason if f else None)
        out["kill_reason"] = reason or "unknown"
    for k, v in data.items():  # e.g. set_timeout on updated
        if k not in ("template_id", "template_name", "build_id", "execution_id", "status"):
            out[k] = v
    return out


def _ids(e: Event, f: SandboxFacts | None) -> dict[str, str]:
    template = e.template_id or (f.template_id if f else None) or e.data.get("template_id") or ""
    build = e.data.get("build_id") or (f.build_id if f else None) or (str(uuid.uuid5(_NS, f"build:{template}")) if template else "")
    started = f.started_at.isoformat() if f and f.started_at else ""
    execution = e.data.get("execution_id") or str(uuid.uuid5(_NS, f"exec:{e.sandbox_id}:{started}"))
    return {"template": template, "build": build, "execution": execution}


def to_rest(e: Event, f: SandboxFacts | None) -> dict[str, Any]:
    ids = _ids(e, f)
    return {
        "version": "v1",
        "id": event_uuid(e),
        "type": e.type,
        "eventCategory": "lifecycle",
        "eventLabel": LABELS.get(e.type.rsplit(".", 1)[-1], e.type),
        "eventData": event_data(e, f),
        "sandboxBuildId": ids["build"],
        "sandboxExecutionId": ids["execution"],
        "sandboxId": e.sandbox_id,
        "sandboxTeamId": f.team_id if f else DEFAULT_TEAM_ID,
        "sandboxTemplateId": ids["template"],
        "timestamp": rfc3339(e.timestamp),
    }


def to_webhook_payload(e: Event, f: SandboxFacts | None) -> dict[str, Any]:
    rest = to_rest(e, f)
    rest["version"] = "v2"
    snake = {
        "event_category": rest["eventCategory"], "event_label": rest["eventLabel"], "event_data": rest["eventData"],
        "sandbox_id": rest["sandboxId"], "sandbox_execution_id": rest["sandboxExecutionId"],
        "sandbox_template_id": rest["sandboxTemplateId"], "sandbox_build_id": rest["sandboxBuildId"],
        "sandbox_team_id": rest["sandboxTeamId"],
    }
    return {**rest, **snake}


def parse_page(offset: str | None, limit: str | None, order_asc: str | None) -> tuple[int, int, bool]:
    """offset >= 0, 1 <= limit <= 100 (default 10), orderAsc bool; anything else is a 400, never a clamp."""
    try:
        off = int(offset) if offset is not None else 0
        lim = int(limit) if limit is not None else 10
    except ValueError:
        raise Invalid("offset and limit must be integers") from None
    if off < 0:
        raise Invalid("offset must be >= 0")
    if off > MAX_OFFSET:  # beyond any history; also keeps the value inside the databases' 64-bit range
        raise Invalid(f"offset must be <= {MAX_OFFSET}")
    if not 1 <= lim <= 100:
        raise Invalid("limit must be between 1 and 100")
    if order_asc is None:
        asc = False
    elif order_asc.lower() in ("true", "1"):
        asc = True
    elif order_asc.lower() in ("false", "0"):
        asc = False
    else:
        raise Invalid("orderAsc must be true or false")
    return off, lim, asc


def list_events(store: Store, *, sandbox_id: str | None, offset: int, limit: int, asc: bool,
                team: str | None = None) -> list[dict[str, Any]]:
    """`team`: only that team's sandboxes' events (None: the operator's view, every team's)."""
    q = select(EventRow).where(EventRow.type.in_(LIFECYCLE_TYPES))
    if sandbox_id is not None:
        q = q.where(EventRow.sandbox_id == sandbox_id)
    if team is not None:
        q = q.where(EventRow.sandbox_id.in_(select(SandboxRow.id).where(SandboxRow.team_id == team)))
    q = q.order_by(EventRow.id.asc() if asc else EventRow.id.desc()).offset(offset).limit(limit)
    with store.tx() as s:
        events = [to_event(r) for r in s.scalars(q)]
        if sandbox_id is not None and not events and offset == 0:
            row = s.get(SandboxRow, sandbox_id)
            if row is None or team not in (None, row.team_id):
                raise NotFound(f"sandbox {sandbox_id} not found")
    facts = load_facts(store, {e.sandbox_id for e in events if e.sandbox_id})
    return [to_rest(e, facts.get(e.sandbox_id or "")) for e in events]
