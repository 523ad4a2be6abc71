"""More sandboxes than RAM (docs/snapshots.md): when the host's memory runs short, the least recently used idle
sandboxes are written to disk, and the next request for one through the gateway brings it back.

Off unless the operator sets `SANDBOXD_EVICT_BELOW_FREE_MB` (and the backend can pause to disk). Once a second
the evictor reads the host's MemAvailable; below that line it checkpoints, oldest use first, running sandboxes
that no gateway request reached for `SANDBOXD_EVICT_IDLE_SECONDS`, a few at a time, until the line is crossed
again or none is left. An evicted sandbox is still `running` to every client: its row does not change, only
its route says `evicted`, and a request for it (its token checked first) waits for the restore, as one for an
`auto_resume` sandbox waits for its resume. A pause, stop, kill or snapshot works on it as on any other.
Events: `sandbox.lifecycle.checkpointed` with `eventData.evicted` on eviction, `resumed` with
`eventData.resume.evicted` when traffic brings it back.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from sandboxd.core.models import RUNNING

if TYPE_CHECKING:
    from sandboxd.core.lifecycle import LifecycleService

log = logging.getLogger(__name__)
EVICTED = "evicted"  # a route status only: the sandbox's row stays running
TICK = 1.0
BATCH = 4  # checkpoints at once: each holds a core for a few hundred ms
RETRY_AFTER = 300.0  # a sandbox CRIU could not take is not tried again for this long


def mem_available_mb(meminfo: str = "/proc/meminfo") -> int:
    with open(meminfo) as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024
    return 0


class Evictor:
    def __init__(self, lc: LifecycleService):
        self.lc = lc
        self.settings = lc.settings
        self._refused: dict[str, float] = {}
        self._task: asyncio.Task | None = None

    def enabled(self) -> bool:
        return self.settings.evict_below_free_mb > 0 and self.lc.backend.memory_snapshots()

    def start(self) -> None:
        if self.enabled():
            self._task = asyncio.create_task(self._run(), name="sandbox-eviction")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def candidates(self, now: float) -> list[str]:
        """Running sandboxes idle long enough, least recently used first."""
        idle = self.settings.evict_idle_seconds
        pool = self.lc.pool
        found = []
        for sid in self.lc.routes:
            route = self.lc.routes.get(sid)
            if route is None or route.status != RUNNING or now - route.used < idle or self.lc.busy(sid):
                continue
            if (pool is not None and pool.owns(sid)) or now < self._refused.get(sid, 0.0):
                continue
            found.append((route.used, sid))
        return [sid for _, sid in sorted(found)]

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            try:
                await self.once()
            except Exception:
                log.exception("eviction round failed")

    async def once(self) -> int:
        """One round: evict while memory is short; how many went to disk."""
        evicted = 0
        while await asyncio.to_thread(mem_available_mb) < self.settings.evict_below_free_mb:
            batch = self.candidates(time.monotonic())[:BATCH]
            if not batch:
                break
            results = await asyncio.gather(*(self.lc.evict(sid) for sid in batch), return_exceptions=True)
            for sid, ok in zip(batch, results):
                if ok is True:
                    evicted += 1
                else:
                    self._refused[sid] = time.monotonic() + RETRY_AFTER
                    if isinstance(ok, BaseException):
                        log.warning("sandbox %s could not be evicted: %s", sid, ok)
        return evicted
