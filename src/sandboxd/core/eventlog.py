"""Persist events in the store (one envelope, monotonic ids) and publish them on the in-process bus.

Audit (docs/teams.md): a lifecycle event caused by an API call carries who made it, `data.actor =
{"key_id", "team_id"}`. The edge sets the caller once per request (`acting`); the context variable follows
the request into whatever it awaits or hands to a worker thread, so no service passes it along. Events with
no caller (a timeout, a restart) have no actor.
"""
from __future__ import annotations

from contextvars import ContextVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from sandboxd.core.events import Event, EventBus
from sandboxd.core.models import iso
from sandboxd.core.store.db import Store
from sandboxd.core.store.tables import EventRow


ACTOR: ContextVar[dict[str, str] | None] = ContextVar("sandboxd_actor", default=None)
AUDITED = "sandbox.lifecycle."


def acting(key_id: str, team_id: str) -> None:
    """The caller of the request under way (set by the API's authentication)."""
    ACTOR.set({"key_id": key_id, "team_id": team_id})


class EventLog:
    def __init__(self, store: Store, bus: EventBus):
        self.store = store
        self.bus = bus

    def record(self, event: Event) -> Event:
        with self.store.tx() as s:
            self.add(s, event)
        self.bus.publish(event)
        return event

    def add(self, s: Session, event: Event) -> Event:
        """Write the event in the caller's transaction (with the change it reports: both or neither). The
        caller publishes it once that transaction has committed."""
        actor = ACTOR.get()
        if actor is not None and event.type.startswith(AUDITED) and "actor" not in event.data:
            event.data = {**event.data, "actor": actor}
        row = EventRow(type=event.type, sandbox_id=event.sandbox_id, template_id=event.template_id,
                       timestamp=event.timestamp, data=event.data)
        s.add(row)
        s.flush()
        event.id = row.id
        return event

    def since(self, last_id: int, *, prefix: str | None = None, sandbox_id: str | None = None, limit: int = 1000) -> list[Event]:
        """Events after `last_id` (what an SSE client that reconnects with Last-Event-ID missed)."""
        with self.store.tx() as s:
            q = select(EventRow).where(EventRow.id > last_id).order_by(EventRow.id).limit(limit)
            if prefix:
                q = q.where(EventRow.type.startswith(prefix))
            if sandbox_id:
                q = q.where(EventRow.sandbox_id == sandbox_id)
            return [to_event(r) for r in s.scalars(q)]

    def last_id(self) -> int:
        with self.store.tx() as s:
            return s.scalar(select(EventRow.id).order_by(EventRow.id.desc()).limit(1)) or 0


def to_event(r: EventRow) -> Event:
    return Event(type=r.type, sandbox_id=r.sandbox_id, data=dict(r.data or {}), id=r.id, timestamp=r.timestamp, template_id=r.template_id)


def event_wire(e: Event) -> dict:
    return {"id": e.id, "type": e.type, "sandbox_id": e.sandbox_id, "template_id": e.template_id,
            "timestamp": iso(e.timestamp), "data": e.data}
