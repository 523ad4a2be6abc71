"""MonitorService: the sampler, metric history, lifecycle events API, webhooks and platform metrics.

The control plane's composition root (sandboxd/wiring.py) builds one and starts and stops it with the other
services; the monitoring routes and the SSE metrics hub are handed it from there.
"""
from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine

from sandboxd.config import Settings
from sandboxd.errors import Invalid, NotFound
from sandboxd.core.events import CHECKPOINTED, CREATED, PAUSED, RESUMED, EventBus
from sandboxd.core.models import REASON_OOM
from sandboxd.core.store.db import Store
from sandboxd.core.store.tables import SandboxRow
from sandboxd.monitor import e2b_events
from sandboxd.monitor.delivery import Dispatcher
from sandboxd.monitor.prometheus import PlatformMetrics
from sandboxd.monitor.sampler import Sampler
from sandboxd.monitor.series import Sample, SeriesStore
from sandboxd.monitor.webhooks import WebhookRegistry
from sandboxd.runtime.base import Backend

log = logging.getLogger(__name__)
MAX_METRIC_IDS = 100


class MonitorService:
    def __init__(self, settings: Settings, engine: Engine | Store, backend: Backend | None, bus: EventBus | None,
                 lifecycle: Any = None):
        self.settings = settings
        self.store = engine if isinstance(engine, Store) else Store(engine)
        self.backend = backend
        self.bus = bus
        self.lifecycle = lifecycle
        self.series = SeriesStore(self.store, retention_seconds=settings.metrics_retention_seconds,
                                  downsample_after_seconds=settings.metrics_downsample_after_seconds)
        self.sampler = Sampler(self.store, backend, self.series, interval=settings.sample_interval_seconds,
                               on_oom=self._end_oom) if backend is not None else None
        self.platform = PlatformMetrics(self.store, latest=self.latest_all, lag=self._lag,
                                        per_sandbox=settings.per_sandbox_prometheus)
        self.dispatcher = Dispatcher(self.store, bus, timeout=settings.webhook_timeout_seconds,
                                     max_attempts=settings.webhook_max_attempts, backoff=settings.webhook_backoff_seconds,
                                     allow_private=settings.webhook_allow_private, on_outcome=self.platform.observe_delivery)
        self.webhooks = WebhookRegistry(self.store, allow_private=settings.webhook_allow_private,
                                        on_change=self.dispatcher.wake)
        self._tasks: list[asyncio.Task] = []
        self.loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()  # for callers on other threads (CLI helpers, tests)
        if self.sampler is not None:
            self._tasks.append(asyncio.create_task(self.sampler.run(), name="metrics-sampler"))
        if self.bus is not None:
            self._tasks.append(asyncio.create_task(self._count_events(self.bus.subscribe()), name="monitor-events"))
        await self.dispatcher.start()

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self.sampler is not None:
            await self.sampler.close()
        await self.dispatcher.stop()

    async def _count_events(self, q: asyncio.Queue) -> None:
        try:
            while True:
                e = await q.get()
                if e.type == CREATED:
                    secs = e.data.get("create_seconds")
                    if not isinstance(secs, (int, float)) and e.sandbox_id:
                        secs = await asyncio.to_thread(self._create_seconds, e.sandbox_id)
                    self.platform.observe_created(float(secs) if isinstance(secs, (int, float)) else None)
                elif e.type == PAUSED and isinstance(e.data.get("pause"), dict):
                    self.platform.observe_pause(e.data["pause"])
                elif e.type == CHECKPOINTED and e.data.get("evicted"):
                    self.platform.observe_eviction(e.data)
                elif e.type == RESUMED and isinstance(e.data.get("resume"), dict):
                    self.platform.observe_resume(e.data["resume"])
        finally:
            if self.bus:
                self.bus.unsubscribe(q)

    def _create_seconds(self, sandbox_id: str) -> float | None:
        """Create latency from the row: reserved at created_at, running at started_at."""
        with self.store.tx() as s:
            r = s.get(SandboxRow, sandbox_id)
            if r is None or r.started_at is None or r.created_at is None:
                return None
            return max(0.0, (r.started_at - r.created_at).total_seconds())

    async def _end_oom(self, sandbox_id: str) -> None:
        """The sandbox's init was OOM-killed: have the lifecycle service end it with reason oom."""
        if self.lifecycle is None:
            log.warning("sandbox %s died of OOM but no lifecycle service is attached", sandbox_id)
            return
        try:
            await self.lifecycle.kill(sandbox_id, reason=REASON_OOM)
        except NotFound:
            pass  # already ended: the lifecycle's own watch for dead sandboxes got there first

    def _lag(self) -> tuple[float, float]:
        return (self.sampler.lag_seconds, self.sampler.last_duration) if self.sampler else (0.0, 0.0)

    # --- metrics -----------------------------------------------------------------------------------
    def latest_all(self) -> dict[str, Sample]:
        return dict(self.sampler.latest) if self.sampler else {}

    def latest(self, sandbox_id: str) -> Sample | None:
        """The newest reading (for SSE metric streams); None until the sandbox's first sample."""
        hit = self.sampler.latest.get(sandbox_id) if self.sampler else None
        return hit or self.series.latest([sandbox_id]).get(sandbox_id)

    async def wait_sample(self) -> None:
        if self.sampler is None:
            await asyncio.sleep(self.settings.sample_interval_seconds)
        else:
            await self.sampler.wait_tick()

    def _require_sandbox(self, sandbox_id: str, team: str | None = None) -> None:
        """Ended sandboxes count (their history stays readable); another team's is missing."""
        with self.store.tx() as s:
            row = s.get(SandboxRow, sandbox_id)
            if row is None or team not in (None, row.team_id):
                raise NotFound(f"sandbox {sandbox_id} not found")

    def metrics(self, sandbox_id: str, start: str | None = None, end: str | None = None,
                team: str | None = None) -> list[dict]:
        self._require_sandbox(sandbox_id, team)
        t0, t1 = _unix(start, "start"), _unix(end, "end")
        if t0 is not None and t1 is not None and t0 > t1:
            raise Invalid("start must not be after end")
        return [smp.to_e2b() for smp in self.series.range(sandbox_id, t0, t1)]

    def metrics_many(self, sandbox_ids: str | None, team: str | None = None) -> dict:
        ids = [i.strip() for i in (sandbox_ids or "").split(",") if i.strip()]
        if not ids:
            raise Invalid("sandbox_ids is required (comma-separated)")
        if len(ids) > MAX_METRIC_IDS:
            raise Invalid(f"at most {MAX_METRIC_IDS} sandbox ids")
        if len(set(ids)) != len(ids):
            raise Invalid("sandbox ids must be unique")
        if team is not None:  # another team's ids are left out, like unknown ones
            with self.store.tx() as s:
                ids = list(s.scalars(select(SandboxRow.id).where(SandboxRow.id.in_(ids), SandboxRow.team_id == team)))
        return {"sandboxes": {sid: smp.to_e2b() for sid, smp in self.series.latest(ids).items()}}

    # --- lifecycle events ----------------------------------------------------------------------------
    def events(self, sandbox_id: str | None, offset: str | None, limit: str | None, order_asc: str | None,
               team: str | None = None) -> list[dict]:
        off, lim, asc = e2b_events.parse_page(offset, limit, order_asc)
        return e2b_events.list_events(self.store, sandbox_id=sandbox_id, offset=off, limit=lim, asc=asc, team=team)

    def prometheus(self) -> bytes:
        return self.platform.render()


def _unix(v: str | None, name: str) -> float | None:
    if v is None or v == "":
        return None
    try:
        t = float(v)
    except ValueError:
        raise Invalid(f"{name} must be unix seconds") from None
    if not math.isfinite(t) or t < 0 or t > time.time() + 10 * 365 * 86400:
        raise Invalid(f"{name} is out of range")
    return t
