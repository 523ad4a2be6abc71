"""The one event envelope: lifecycle events are stored with a monotonically increasing id, fanned out
to SSE streams (HopX `/v1/.../stream`, resumable with Last-Event-ID), the E2B events API and webhooks.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

# E2B's six lifecycle event types (docs/monitoring.md), used for webhooks and /events; HopX streams use the same
# records with `status` in data.
CREATED = "sandbox.lifecycle.created"
UPDATED = "sandbox.lifecycle.updated"
PAUSED = "sandbox.lifecycle.paused"
RESUMED = "sandbox.lifecycle.resumed"
CHECKPOINTED = "sandbox.lifecycle.checkpointed"
KILLED = "sandbox.lifecycle.killed"
LIFECYCLE_TYPES = (CREATED, UPDATED, PAUSED, RESUMED, CHECKPOINTED, KILLED)


@dataclass
class Event:
    type: str
    sandbox_id: str | None
    data: dict[str, Any] = field(default_factory=dict)
    id: int | None = None  # assigned by the store when persisted
    timestamp: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    template_id: str | None = None


class EventBus:
    """In-process fan-out of persisted events to live subscribers (SSE streams, webhook dispatcher)."""

    def __init__(self) -> None:
        self._subscribers: set[asyncio.Queue[Event]] = set()

    def subscribe(self, maxsize: int = 1000) -> asyncio.Queue[Event]:
        q: asyncio.Queue[Event] = asyncio.Queue(maxsize)
        self._subscribers.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[Event]) -> None:
        self._subscribers.discard(q)

    def publish(self, event: Event) -> None:
        for q in list(self._subscribers):
            try:
                q.put_nowait(event)
            except asyncio.QueueFull:
                # A stalled consumer must not block lifecycle operations; it resumes from the store.
                pass
